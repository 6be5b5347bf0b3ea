"""JSON from uploads, decoded with a bound on nesting depth.

The standard decoder recurses once per level: 100k nested brackets raised RecursionError, which the
pipeline treated as an internal failure instead of a bad input. Decoding stops at Python's recursion
limit (bounded work), and the result must then be at most MAX_JSON_DEPTH levels deep; the depth check is
iterative, so nothing downstream recurses on a deep upload either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from evaluation.errors import InputRejected

# A chat record is 3 levels deep ({"messages": [{"role", "content"}]}); metadata may add a few.
MAX_JSON_DEPTH = 32


def depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether objects / arrays in `value` nest deeper than `limit` levels (a scalar is 0, `{}` is 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def too_deep(where: str) -> InputRejected:
    return InputRejected(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels", "too_deep")


def check_depth(value: Any, where: str) -> Any:
    if depth_exceeds(value):
        raise too_deep(where)
    return value


def loads_limited(text: str, where: str) -> Any:
    """json.loads, refusing (InputRejected, code too_deep) what nests deeper than MAX_JSON_DEPTH.

    json.JSONDecodeError passes through for the caller to word with its own line numbers.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep(where) from None
    return check_depth(value, where)
