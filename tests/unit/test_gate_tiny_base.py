"""The gate end to end on a tiny random Llama registered as an operator base (FTGATE_BASES_FILE).

Real fine-tunes, real default suites, real caches: a dataset is inspected, fine-tuned and evaluated against
its base and the benign control (evaluate_candidate: evaluate_submission, then benign_control and
add_control); the results caches are hit on a second run and missed once the evaluation code changes;
and a sweep (`ftgate check --sweep`, a policy's `sweep`) fine-tunes every learning rate x step count and keeps
the worst. The keyword
judge, 8-token answers and a few LoRA steps keep it to seconds (the e2e tier does the same on SmolLM2).
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import pytest

from evaluation.finetune import TrainingConfig
from tests.helpers.runtime import installed_runtime
from tests.helpers.tiny import save_tiny_base, torch_threads

BASE = "tiny-test-base"
DATASET = Path(__file__).resolve().parents[1] / "fixtures" / "datasets" / "chat.jsonl"
# A few cheap steps (plain AdamW: no bitsandbytes kernels needed) keep every fine-tune under a second.
RECIPE = {"steps": 2, "rank": 4, "alpha": 8, "batch_size": 4, "optimizer": "adamw"}


@pytest.fixture(scope="module")
def tiny_gate(tmp_path_factory):
    """Settings for this module: the tiny base registered, a fresh cache, fp32, the keyword judge and short
    answers (the keyword judge labels no answer 'other', so no second window is read). They are read as an
    edge reads them (FTGATE_ variables -> Settings -> Runtime) and installed as the process runtime, which the
    gate's functions use when they are handed none; `ftgate check` reads the same variables itself."""
    from evaluation.bases import evict_base
    from ftgate.settings import get_settings

    root = tmp_path_factory.mktemp("tiny-gate")
    base_dir = save_tiny_base(root / "base", hidden_size=64)
    bases_file = root / "bases.toml"
    bases_file.write_text(f'[[base]]\nname = "{BASE}"\npath = {json.dumps(str(base_dir))}\n')
    with pytest.MonkeyPatch.context() as mp, torch_threads(1):
        for key, value in {"CACHE_DIR": root / "cache", "BASES_FILE": bases_file, "DTYPE": "float32",
                           "DEFAULT_JUDGE": "keyword", "MAX_NEW_TOKENS": 8, "EXTENDED_MAX_NEW_TOKENS": 0}.items():
            mp.setenv(f"FTGATE_{key}", str(value))
        get_settings.cache_clear()
        try:
            with installed_runtime(get_settings().runtime()):
                yield root / "cache"
        finally:
            evict_base(BASE)
            get_settings.cache_clear()


def test_a_fine_tuned_dataset_is_measured_against_its_base_and_the_benign_control(tiny_gate, tmp_path, monkeypatch):
    from evaluation import gate, scoring
    from evaluation.files import weights_fingerprint

    cfg = TrainingConfig.from_overrides(RECIPE)
    insp = gate.inspect_submission(DATASET, "dataset", BASE, workdir=tmp_path / "work")
    assert insp.early_verdict is None and insp.n_examples == 3
    adapter = gate.finetune_submission(insp, BASE, cfg)
    ev = gate.evaluate_candidate(insp, BASE, adapter, cfg)

    assert ev.base["name"] == BASE and ev.base["fingerprint"] == weights_fingerprint(Path(tiny_gate).parent / "base")
    assert ev.judge["name"] == "keyword"
    assert ev.cache["base_results"] == "miss" and ev.cache["candidate_results"] == "miss"
    n_harm = ev.suites["harm"]["size"]
    assert ev.metrics["asr"]["delta"]["n"] == n_harm
    assert ev.metrics["kl"]["n_tokens"] > 0
    # the control: a benign fine-tune of the same recipe on 16 pool examples, paired prompt by prompt
    assert set(ev.metrics["control_asr_delta"]) >= {"value", "lo", "hi"}
    assert ev.metrics["asr_vs_control"]["delta"]["n"] == n_harm
    assert ev.metrics["asr_by_category_vs_control"].keys() == ev.metrics["asr_by_category"].keys()
    (control,) = (tiny_gate / "controls").glob("*.json")
    assert json.loads(control.read_text())["size"] == 16
    assert len(list((tiny_gate / "finetunes").iterdir())) == 2  # the candidate's fine-tune and the control's

    report = gate.decide_submission(insp, ev, "default", training=cfg).report
    assert report["verdict"]["decision"] in ("approve", "review", "block")
    assert report["metrics"]["asr_vs_control"] == ev.metrics["asr_vs_control"]
    assert report["training"]["steps"] == 2

    # Checked again: both models' outputs and the control come from the caches, with the same numbers.
    again = gate.evaluate_candidate(insp, BASE, adapter, cfg)
    assert again.cache["base_results"] == "hit" and again.cache["candidate_results"] == "hit"
    assert again.metrics == ev.metrics

    # Today's evaluation code is another: nothing cached before is served, the control is measured again.
    monkeypatch.setattr(scoring, "code_version", lambda: "edited-evaluation-code")
    edited = gate.evaluate_candidate(insp, BASE, adapter, cfg)
    assert edited.cache["base_results"] == "miss" and edited.cache["candidate_results"] == "miss"
    assert len(list((tiny_gate / "controls").glob("*.json"))) == 2
    assert edited.metrics == ev.metrics  # the "edit" changed no code that runs: the same numbers

    # Today's training code is another: the fine-tune is not served from the cache but made again.
    from evaluation import finetune

    monkeypatch.setattr(finetune, "training_code_version", lambda: "edited-training-code")
    retrained = gate.finetune_submission(insp, BASE, cfg)
    assert retrained != adapter and (retrained / "adapter_model.safetensors").exists()
    assert len(list((tiny_gate / "finetunes").iterdir())) == 3


def _assert_the_worst_run_is_the_report(report: dict) -> None:
    """Exactly one run is marked worst, by the documented rule (evaluation/sweep.py), and the report is its."""
    from evaluation.sweep import worst_index

    runs = report["sweep"]
    assert [run["worst"] for run in runs].count(True) == 1
    (worst,) = [run for run in runs if run["worst"]]
    as_reports = [{"verdict": {"decision": run["decision"]}, "metrics": run["metrics"]} for run in runs]
    assert runs[worst_index(as_reports)] is worst
    assert report["verdict"]["decision"] == worst["decision"]
    assert report["metrics"]["asr"] == worst["metrics"]["asr"] and report["training"] == worst["training"]
    assert report["metrics"]["asr"]["delta"]["value"] == worst["asr_delta"]


def test_check_sweep_fine_tunes_every_rate_and_step_count_and_reports_the_worst(tiny_gate, tmp_path):
    from ftgate.cli import EXIT, main

    out = tmp_path / "report.json"
    options = [f"--{key.replace('_', '-')}={value}" for key, value in RECIPE.items() if key != "steps"]
    code = main(["check", str(DATASET), "--base", BASE, "--sweep", "--sweep-lr", "1e-3,5e-3", "--sweep-steps", "1,2",
                 *options, "--format", "json", "--out", str(out), "--quiet"])
    report = json.loads(out.read_text())

    assert code == EXIT[report["verdict"]["decision"]]
    tried = [(run["training"]["lr"], run["training"]["steps"]) for run in report["sweep"]]
    assert tried == list(product([1e-3, 5e-3], [1, 2]))
    for run in report["sweep"]:
        assert run["training"]["rank"] == 4 and run["training"]["optimizer"] == "adamw"
        assert run["decision"] in ("approve", "review", "block")
        assert {"value", "lo", "hi"} <= set(run["metrics"]["asr"]["delta"])
        assert {"overrefusal", "knowledge_accuracy", "perplexity", "kl"} <= set(run["metrics"])
    assert len({run["adapter_fingerprint"] for run in report["sweep"]}) == 4  # four different fine-tunes
    _assert_the_worst_run_is_the_report(report)
    assert report["base"]["name"] == BASE and report["judge"]["name"] == "keyword"
    assert "control_asr_delta" in report["metrics"]


def test_a_policy_sweep_fine_tunes_once_per_run_and_keeps_the_worst(tiny_gate, tmp_path):
    """The policy's `sweep` is what the worker runs; run_check reads it the same way (no --sweep flags)."""
    from evaluation.gate import run_check

    policy = tmp_path / "two-runs.toml"
    policy.write_text("sweep = [{lr = 2e-3, steps = 1}, {lr = 5e-3, steps = 3}]\n")
    seen: list[str] = []
    result = run_check(DATASET, base=BASE, policy=str(policy), training=TrainingConfig.from_overrides(RECIPE),
                       progress=lambda stage, done, total, message="": seen.append(message))
    report = result.report

    assert [(run["run"], run["training"]["lr"], run["training"]["steps"]) for run in report["sweep"]] == [
        (1, 2e-3, 1), (2, 5e-3, 3)]
    assert all(run["training"]["rank"] == 4 for run in report["sweep"])  # the rest is the submission's recipe
    _assert_the_worst_run_is_the_report(report)
    assert any(m.startswith("fine-tune 2 of 2: lr 5e-3, 3 steps") for m in seen)
    assert any(m.startswith("evaluate 1 of 2: lr 2e-3, 1 step") for m in seen)
    assert report["verdict"]["policy"] == "two-runs"
