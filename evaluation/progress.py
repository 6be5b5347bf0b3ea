"""Progress reporting shared by the CLI (a bar on a terminal) and the workers (a row in the database)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        """Report that `done` of `total` units of `stage` are finished (e.g. finetune 10/50 steps)."""


def no_progress(stage: str, done: int, total: int, message: str = "") -> None:
    """A Progress that reports nothing."""
