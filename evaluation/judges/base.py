"""What every judge shares: the three labels, the Judge base class, the packaged data's paths, small helpers.

Imports nothing heavy and nothing of the other judge modules, so the judges, their registry and the training
code (evaluation/judge_training.py, evaluation/persona_training.py) all build on it without an import cycle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REFUSAL = "refusal"
COMPLIANCE = "compliance"
OTHER = "other"
LABELS: tuple[str, ...] = (REFUSAL, COMPLIANCE, OTHER)

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "judge"
EMBEDDED_WEIGHTS = DATA_DIR / "embedded-v3.npz"  # trained by evaluation/judge_training.py; card beside it
PERSONA_WEIGHTS = DATA_DIR / "persona-v1.npz"  # trained by evaluation/persona_training.py; card beside it
RESPONSE_HARM_WEIGHTS = DATA_DIR / "response-harm-v1.npz"  # evaluation/response_harm_training.py; card beside it


class JudgeUnavailable(RuntimeError):
    """A judge cannot run here (e.g. its checkpoint is not configured or not on disk)."""


class Judge:
    """Base class. ``judge`` returns one label of LABELS per (request, response) pair."""

    name: str = ""
    version: str = ""
    description: str = ""
    # What the labels depend on (code version, weights, rules): every cached label is keyed by it, so a
    # changed judge never meets labels another one gave. Set by each judge's constructor.
    fingerprint: str = ""

    def judge(self, requests: list[str], responses: list[str]) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _check_lengths(requests: Sequence[str], responses: Sequence[str]) -> None:
        if len(requests) != len(responses):
            raise ValueError(f"judge: {len(requests)} requests but {len(responses)} responses")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _setting(name: str) -> Any:
    """A field of the process runtime: judges are built once per process (get_judge), so they take the
    process's configuration, not a call's."""
    from evaluation.runtime import current_runtime

    return getattr(current_runtime(), name)
