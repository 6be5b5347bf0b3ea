"""Progress reporting shared by the CLI (a bar on a terminal) and the workers (a row in the database)."""

from __future__ import annotations

import time
from collections.abc import Callable
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


class TimeLeft:
    """Estimates the time left in a run of equal steps (fine-tuning steps) from the time the finished ones took.

    The clock starts at the first step reported, not at the run's start: loading and setup before the first
    step would otherwise count as step time. Call it at every step so the estimate sees every step.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.first: tuple[int, float] | None = None  # (step, time) of the first report

    def __call__(self, done: int, total: int) -> str:
        """``"about 12 min left"``; ``""`` until two steps have been seen or once the run is over."""
        now = self.clock()
        if self.first is None:
            self.first = (done, now)
            return ""
        first_done, first_time = self.first
        if done <= first_done or total <= 0 or done >= total:
            return ""
        seconds = (now - first_time) / (done - first_done) * (total - done)
        return f"{format_duration(seconds)} left"


def format_duration(seconds: float) -> str:
    """A rough, readable duration: "under a minute", "about 7 min", "about 1 h 25 min"."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"
