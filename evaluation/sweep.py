"""The worst case over training recipes: a policy's ``sweep`` (evaluation/policy.py) fine-tunes a dataset once per
entry; every run is evaluated and decided on its own, and the worst run's report becomes the submission's, with
every run listed in ``report["sweep"]`` (docs/report.md). ``ftgate check`` (evaluation.gate.run_check) and the
workers (tasks/pipeline.py) both go through here, so the progress labels, the choice of the worst run and the
listing are made one way.

The worst run (docs/policy.md, "Worst case over training recipes"): the most severe decision (block > review >
approve); among runs with that decision, the one whose ASR change has the largest lower bound (the strongest
evidence of harm); then the largest ASR change; then the earliest run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from evaluation.finetune import TrainingConfig
from evaluation.policy import Decision, SweepRun
from evaluation.progress import Progress

_SEVERITY = {Decision.APPROVE: 0, Decision.REVIEW: 1, Decision.BLOCK: 2}
# What each run of report["sweep"] carries of its metrics (docs/report.md): safety, usefulness, knowledge drift.
RUN_METRICS = ("asr", "overrefusal", "knowledge_accuracy", "perplexity", "kl")


class Decided(Protocol):
    """A decided run: evaluation.gate.GateResult (or a stand-in with its ``report`` and ``samples``)."""

    report: dict[str, Any]
    samples: list[dict]


def run_label(verb: str, i: int, n: int, training: TrainingConfig) -> str:
    """'fine-tune 2 of 3: lr 5e-4, 100 steps'."""
    return f"{verb} {i} of {n}: {SweepRun(training.lr, training.steps).label()}"


def labelled(progress: Progress, verb: str, i: int, n: int, training: TrainingConfig) -> Progress:
    """``progress`` for run ``i`` of ``n``: every message names the run, and the counts are spread over the n runs
    (run 2 of 3 reports 50 of 100 steps as 150 of 300), so a stage's bar moves forward once across all runs."""
    label = run_label(verb, i, n, training)

    def report(stage: str, done: int, total: int, message: str = "") -> None:
        progress(stage, (i - 1) * total + done, n * total, f"{label} - {message}" if message else label)

    return report


def _asr_delta(report: dict[str, Any], part: str) -> float:
    value = (((report.get("metrics") or {}).get("asr") or {}).get("delta") or {}).get(part)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else -math.inf


def worst_index(reports: Sequence[dict[str, Any]]) -> int:
    """The index of the worst report (see the module's docstring for the rule)."""
    def rank(i: int) -> tuple[int, float, float, int]:
        r = reports[i]
        return (_SEVERITY[Decision(r["verdict"]["decision"])], _asr_delta(r, "lo"), _asr_delta(r, "value"), -i)

    return max(range(len(reports)), key=rank)


def keep_worst(results: Sequence[Decided], trainings: Sequence[TrainingConfig],
               fingerprints: Sequence[str | None]) -> Decided:
    """The worst of the runs' results, its report listing every run in ``sweep``: training config, decision,
    ``worst``, the adapter's fingerprint, its ASR change (``asr_delta``, the value as reports before carried it)
    and ``metrics`` (RUN_METRICS, each as in the report's own ``metrics``), and the run's timings."""
    if not results or not len(results) == len(trainings) == len(fingerprints):
        raise ValueError("a sweep needs one training config and one adapter fingerprint per decided run")
    reports = [r.report for r in results]
    worst = worst_index(reports)
    runs = []
    for i, (report, training, fingerprint) in enumerate(zip(reports, trainings, fingerprints, strict=True)):
        metrics = report.get("metrics") or {}
        delta = _asr_delta(report, "value")
        runs.append({
            "run": i + 1, "training": training.to_dict(), "adapter_fingerprint": fingerprint,
            "decision": report["verdict"]["decision"], "worst": i == worst,
            "asr_delta": None if delta == -math.inf else delta,
            "metrics": {k: metrics[k] for k in RUN_METRICS if k in metrics},
            "timings": report.get("timings") or {},
        })
    chosen = results[worst]
    chosen.report["sweep"] = runs
    return chosen


def note_not_applied(report: dict[str, Any], n_runs: int) -> None:
    """Say in an adapter's report that the policy's sweep was not run (an info check, no decision): its training
    is already done, so there is no recipe to vary."""
    message = (f"The policy's sweep ({n_runs} training recipe{'s' * (n_runs != 1)}) does not apply to an uploaded "
               "adapter: it is already trained, so it was evaluated once")
    verdict = report["verdict"]
    verdict["reasons"] = [*verdict.get("reasons", []), message]
    verdict["checks"] = [*verdict.get("checks", []), {"rule": "sweep", "outcome": "info", "message": message}]
