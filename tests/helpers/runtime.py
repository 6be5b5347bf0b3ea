"""Tests that need the process runtime of the evaluation core (evaluation/runtime.py) set for a while."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from evaluation.runtime import Runtime, use_runtime


@contextmanager
def installed_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """``runtime`` is the process's inside the block; the one before it is put back after, however it ends."""
    previous = use_runtime(runtime)
    try:
        yield runtime
    finally:
        use_runtime(previous)
