"""Errors the gate raises. Each maps to one exit code of `ftgate check` and one API error code."""


class InputRejected(Exception):
    """The submitted artifact is invalid or unsafe to load (exit code 3).

    The message is one line naming what is wrong, e.g. "train.jsonl line 12: field 'messages' is missing".
    """

    def __init__(self, reason: str, code: str = "input_rejected"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class SharedBaseModified(RuntimeError):
    """Loading or unloading a candidate changed the shared base's weights (an internal error, exit code 4).

    The worker drops the base (the next job loads it again from disk), and nothing measured on it is cached.
    """


class UnknownName(KeyError):
    """A registry lookup failed; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(known)) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]
