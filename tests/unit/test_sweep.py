"""evaluation/sweep.py: which run of a sweep is the worst, what report["sweep"] lists, and the progress labels
(no model is loaded; tests/unit/test_gate_tiny_base.py runs real sweeps on a tiny base)."""

from __future__ import annotations

import types

import pytest

from evaluation.finetune import TrainingConfig
from evaluation.sweep import keep_worst, labelled, note_not_applied, worst_index


def a_report(decision: str, value: float | None, lo: float | None) -> dict:
    delta = {"value": value, "lo": lo, "hi": None if value is None else value + 0.1}
    return {"verdict": {"decision": decision, "reasons": ["r"], "checks": []},
            "metrics": {"asr": {"delta": delta}, "kl": {"value": 0.01}, "asr_by_category": {"x": {}}},
            "timings": {"finetune": 1.5}}


@pytest.mark.parametrize(("runs", "worst"), [
    # the decision first: a block with a small change is worse than a review with a large one
    ([("review", 0.30, 0.02), ("block", 0.12, 0.11), ("approve", 0.0, -0.05)], 1),
    # the same decision: the largest lower bound (the strongest evidence of harm), not the largest change
    ([("review", 0.20, 0.01), ("review", 0.15, 0.04)], 1),
    # the same lower bound: the largest change; then the earliest run
    ([("approve", 0.01, -0.02), ("approve", 0.03, -0.02)], 1),
    ([("review", 0.05, 0.0), ("review", 0.05, 0.0)], 0),
    # a run without an ASR interval ranks below any with one, within its decision
    ([("review", None, None), ("review", -0.2, -0.3)], 1),
])
def test_the_worst_run_is_the_most_severe_then_the_largest_asr_lower_bound(runs, worst):
    assert worst_index([a_report(*run) for run in runs]) == worst


def test_keep_worst_returns_the_worst_result_with_every_run_listed():
    results = [types.SimpleNamespace(report=a_report(*run), samples=[i]) for i, run in
               enumerate([("review", 0.20, 0.01), ("block", 0.12, 0.11)])]
    trainings = [TrainingConfig(lr=2e-4, steps=50), TrainingConfig(lr=5e-4, steps=100)]
    chosen = keep_worst(results, trainings, ["fp-a", "fp-b"])
    assert chosen is results[1] and chosen.samples == [1]
    runs = chosen.report["sweep"]
    assert [(r["run"], r["decision"], r["worst"], r["adapter_fingerprint"]) for r in runs] == [
        (1, "review", False, "fp-a"), (2, "block", True, "fp-b")]
    assert runs[0]["training"] == trainings[0].to_dict() and runs[1]["training"]["lr"] == 5e-4
    assert runs[1]["asr_delta"] == 0.12 and runs[1]["metrics"]["asr"]["delta"]["lo"] == 0.11
    assert set(runs[0]["metrics"]) == {"asr", "kl"}  # per-category results stay in the worst run's report only
    assert runs[0]["timings"] == {"finetune": 1.5}
    with pytest.raises(ValueError, match="one training config and one adapter fingerprint per decided run"):
        keep_worst(results, trainings[:1], ["fp-a"])


def test_each_run_names_itself_in_the_progress_and_the_counts_run_on_across_runs():
    seen = []
    cfg = TrainingConfig(lr=5e-4, steps=100)
    report = labelled(lambda *a: seen.append(a), "fine-tune", 2, 3, cfg)
    report("finetune", 10, 100, "loss 1.2")
    report("finetune", 100, 100)
    assert seen == [("finetune", 110, 300, "fine-tune 2 of 3: lr 5e-4, 100 steps - loss 1.2"),
                    ("finetune", 200, 300, "fine-tune 2 of 3: lr 5e-4, 100 steps")]


def test_an_adapters_report_says_the_sweep_did_not_apply_without_changing_the_decision():
    report = a_report("approve", 0.0, -0.05)
    note_not_applied(report, 2)
    assert report["verdict"]["decision"] == "approve"
    assert report["verdict"]["reasons"][-1].startswith("The policy's sweep (2 training recipes) does not apply")
    assert report["verdict"]["checks"][-1]["rule"] == "sweep" and report["verdict"]["checks"][-1]["outcome"] == "info"


def test_the_listed_runs_are_what_the_json_apis_report_schema_describes():
    from api.schemas import Report

    results = [types.SimpleNamespace(report=a_report("approve", 0.0, -0.05), samples=[]),
               types.SimpleNamespace(report=a_report("review", None, None), samples=[])]
    chosen = keep_worst(results, [TrainingConfig(lr=2e-4), TrainingConfig(lr=5e-4)], ["fp", None])
    report = Report.model_validate({"schema_version": "1.0", **chosen.report,
                                    "verdict": {**chosen.report["verdict"], "policy": "p", "policy_hash": "h"}})
    assert [(run.run, run.decision, run.worst, run.asr_delta) for run in report.sweep] == [
        (1, "approve", False, 0.0), (2, "review", True, None)]
