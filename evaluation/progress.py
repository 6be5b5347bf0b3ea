"""Progress reporting shared by the CLI (a bar on a terminal) and the workers (a row in the database)."""

from __future__ import annotations

from typing import Protocol

# The stage of once-per-machine work on a base (GGUF conversion, the guarded base's build) and its loading.
PREPARE_BASE = "prepare base"


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        """Report that `done` of `total` units of `stage` are finished (e.g. finetune 10/50 steps)."""


def no_progress(stage: str, done: int, total: int, message: str = "") -> None:
    """A Progress that reports nothing."""


def base_progress(progress: Progress):
    """The one-argument callback that base loading and building take, reporting as the PREPARE_BASE stage."""
    return lambda message: progress(PREPARE_BASE, 0, 1, message)
