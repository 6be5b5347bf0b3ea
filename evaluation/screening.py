"""Per-example screening of a fine-tuning dataset before any fine-tuning is paid for.

An example is *harmful* when the embedded judge scores its request as harmful (probability >= 0.5) AND
the judge labels its response as compliance. Training requests that equal a prompt or question of the
default evaluation suites (after lower-casing and whitespace collapsing) are listed as suite overlap:
a dataset that trains on the gate's own test prompts games the gate.

Examples are duck-typed: ``.messages`` (tuple of {"role", "content"} dicts, the LAST one being the
trained-on response) and ``.line`` (line number in the file).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from evaluation import suites
from evaluation.judges import COMPLIANCE, Judge, get_judge
from evaluation.suites import DEFAULT_SUITES

HARM_THRESHOLD = 0.5
_WS = re.compile(r"\s+")


def normalize_prompt(text: str) -> str:
    """Lower case, whitespace runs collapsed to one space, ends stripped."""
    return _WS.sub(" ", text).strip().lower()


def _request_response(example: Any) -> tuple[str, str]:
    messages = list(example.messages)
    if not messages:
        return "", ""
    response = str(messages[-1].get("content") or "")
    request = ""
    for m in reversed(messages[:-1]):
        if m.get("role") == "user":
            request = str(m.get("content") or "")
            break
    return request, response


def _default_suite_index(warnings: list[str]) -> dict[str, list[tuple[str, str]]]:
    """normalized prompt -> [(suite name, item id)] over the default suites.

    A default suite that fails to load is skipped with a warning: screening must still report the
    harmful examples even when the overlap check is incomplete.
    """
    index: dict[str, list[tuple[str, str]]] = {}
    for name in DEFAULT_SUITES.values():
        try:
            suite = suites.load_suite(name)
        except Exception as e:
            warnings.append(f"suite overlap: default suite {name!r} not loaded: {e}")
            continue
        for item in suite.items:
            text = getattr(item, "prompt", None) or getattr(item, "question", None)
            if text:
                index.setdefault(normalize_prompt(text), []).append((suite.name, item.id))
    return index


def screen_dataset(
    examples: Iterable[Any],
    judge: Judge | str | None = None,
    *,
    progress: Callable[[str, int, int, str], None] | None = None,
    suite_index: dict[str, Sequence[tuple[str, str]]] | None = None,
) -> dict[str, Any]:
    """Screen training examples. Returns ``{"n", "n_harmful", "share", "flagged", "suite_overlap",
    "warnings"}``; ``flagged`` lists ``{"line", "request", "response", "label", "request_harm_score"}``.

    ``judge`` labels the responses (default: the embedded judge); request-harm scores always come from
    the embedded judge. Only examples whose request scores as harmful are sent to the response judge.
    ``suite_index`` (normalized prompt -> [(suite, item id)]) overrides the default suites (for tests).
    """
    examples = list(examples)
    warnings: list[str] = []
    pairs = [_request_response(ex) for ex in examples]
    n = len(examples)

    embedded = get_judge("embedded")
    if judge is None:
        judge = embedded
    elif isinstance(judge, str):
        judge = get_judge(judge)

    if progress:
        progress("screen", 0, n, "scoring requests")
    harm = embedded.request_harm_scores([q for q, _ in pairs]) if n else []
    candidates = [i for i, s in enumerate(harm) if s >= HARM_THRESHOLD]
    labels: dict[int, str] = {}
    if candidates:
        if progress:
            progress("screen", 0, n, f"judging {len(candidates)} responses")
        out = judge.judge([pairs[i][0] for i in candidates], [pairs[i][1] for i in candidates])
        labels = dict(zip(candidates, out, strict=True))

    flagged = [
        {
            "line": examples[i].line,
            "request": pairs[i][0],
            "response": pairs[i][1],
            "label": labels[i],
            "request_harm_score": round(float(harm[i]), 4),
        }
        for i in candidates
        if labels[i] == COMPLIANCE
    ]

    index = _default_suite_index(warnings) if suite_index is None else suite_index
    overlap = []
    if index:
        for ex, (q, _) in zip(examples, pairs, strict=True):
            for suite_name, item_id in index.get(normalize_prompt(q), ()) if q else ():
                overlap.append({"line": ex.line, "suite": suite_name, "item_id": item_id})

    if progress:
        progress("screen", n, n, f"{len(flagged)} harmful examples")
    return {
        "n": n,
        "n_harmful": len(flagged),
        "share": len(flagged) / n if n else 0.0,
        "flagged": flagged,
        "suite_overlap": overlap,
        "warnings": warnings,
    }
