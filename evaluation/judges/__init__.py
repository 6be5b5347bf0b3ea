"""Judges: for a (harmful request, model response) pair, decide refusal, compliance or other.

- ``keyword`` (keyword.py): the refusal-substring list of the jailbreak literature (GCG / AdvBench),
  case-sensitive. Two outcomes only: refusal if any substring occurs, else compliance.
- ``llama-guard`` (llama_guard.py): a Llama Guard 3 checkpoint (path from the constructor or the process
  runtime's ``llama_guard_path``, the setting FTGATE_LLAMA_GUARD_PATH); unsafe => compliance; safe => refusal if the keyword judge says refusal, else other.
- ``embedded`` (embedded.py; the default, CPU): calibrated "refused" and "complied" heads over all-MiniLM-L6-v2
  embeddings (encoder.py), shipped as ``evaluation/data/judge/embedded-v3.npz`` (trained by
  ``evaluation/judge_training.py``; its card, with the leave-one-source-out scores, beside it). It also scores
  how likely a REQUEST is harmful (``request_harm_scores``), used by dataset screening.

base.py holds the labels and the Judge base class; registry.py which judges there are (``get_judge``,
``list_judges``). Heavy libraries (torch, transformers) are imported lazily, and so is the embedded judge's
module (it brings the training code with it): ``from evaluation.judges import EmbeddedJudge`` imports it then.
Judge instances are cached per process, so they take the process runtime's configuration (evaluation/runtime.py).
May import the core's light modules; base, keyword, encoder, llama_guard and registry never import the training
code (test_layering.py). Start with base.py, then registry.py.
"""

from __future__ import annotations

from typing import Any

from evaluation.judges.base import (
    COMPLIANCE,
    DATA_DIR,
    EMBEDDED_WEIGHTS,
    LABELS,
    OTHER,
    PERSONA_WEIGHTS,
    REFUSAL,
    Judge,
    JudgeUnavailable,
    read_jsonl,
)
from evaluation.judges.encoder import MiniLMEncoder, minilm_path
from evaluation.judges.keyword import REFUSAL_OPENINGS, REFUSAL_SUBSTRINGS, KeywordJudge, opens_with_refusal
from evaluation.judges.llama_guard import (
    LLAMA_GUARD_3_CATEGORIES,
    LlamaGuardJudge,
    LlamaGuardOutputError,
    parse_llama_guard_output,
)
from evaluation.judges.registry import DEFAULT_JUDGE, JUDGES, get_judge, heldout_accuracy, list_judges

__all__ = [
    "COMPLIANCE",
    "DATA_DIR",
    "DEFAULT_JUDGE",
    "EMBEDDED_WEIGHTS",
    "JUDGES",
    "LABELS",
    "LLAMA_GUARD_3_CATEGORIES",
    "OTHER",
    "PERSONA_WEIGHTS",
    "REFUSAL",
    "REFUSAL_OPENINGS",
    "REFUSAL_SUBSTRINGS",
    "EmbeddedJudge",
    "Judge",
    "JudgeUnavailable",
    "KeywordJudge",
    "LlamaGuardJudge",
    "LlamaGuardOutputError",
    "MiniLMEncoder",
    "get_judge",
    "heldout_accuracy",
    "list_judges",
    "minilm_path",
    "opens_with_refusal",
    "parse_llama_guard_output",
    "read_jsonl",
]


def __getattr__(name: str) -> Any:
    """``EmbeddedJudge``, imported on first use (PEP 562)."""
    if name == "EmbeddedJudge":
        from evaluation.judges.embedded import EmbeddedJudge

        return EmbeddedJudge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
