"""Errors the gate raises. Each maps to one exit code of `ftgate check` and one API error code."""

import difflib


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
    """A registry lookup failed; the message lists the known names and the closest ones to the name asked for:
    "unknown judge 'embeded'; known: embedded, keyword, llama-guard; did you mean 'embedded'?"."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        self.suggestions = difflib.get_close_matches(str(name), [str(k) for k in known], n=3, cutoff=0.6)
        message = f"unknown {kind} {name!r}; known: {', '.join(sorted(known)) or '(none)'}"
        if self.suggestions:
            message += f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]
