"""evaluation.gate, the pure parts: kind detection, the JSON-able stage results and the report built by
decide_submission (checked against the fields documented in docs/report.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evaluation.errors import InputRejected
from evaluation.gate import REPORT_SCHEMA_VERSION, Evaluation, Inspection, decide_submission, detect_kind
from evaluation.generation import DecodingConfig
from evaluation.policy import decide_screening, load_policy
from tests.helpers.gate_inputs import a_screening, an_evaluation, an_inspection

REPORT_DOC = Path(__file__).resolve().parents[2] / "docs" / "report.md"
FALLBACK_KEYS = ["schema_version", "verdict", "artifact", "inspection", "base", "judge", "suites", "decoding",
                 "training", "seed", "code_version", "metrics", "flipped_examples", "timings"]
OPTIONAL = {"sweep", "repair"}  # documented as "absent" unless --sweep / unless a repair was asked for


def documented_fields() -> list[str]:
    """Dotted field names from the first column of docs/report.md's field table (fallback: the top-level keys)."""
    if not REPORT_DOC.exists():
        return FALLBACK_KEYS
    names: list[str] = []
    in_table = False
    for line in REPORT_DOC.read_text().splitlines():
        if line.startswith("| field |"):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            first = line.split("|")[1]
            names += re.findall(r"`([a-z_.]+)`", first)
    return [n for n in names if n not in OPTIONAL]


def resolve(report: dict, dotted: str):
    node = report
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"report lacks documented field {dotted!r}"
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------- detect_kind


def test_detect_kind_adapters(tmp_path):
    d = tmp_path / "my-adapter"
    d.mkdir()
    assert detect_kind(d) == "adapter"
    dotted = tmp_path / "looks-like.jsonl"
    dotted.mkdir()
    assert detect_kind(dotted) == "adapter"  # a directory is an adapter whatever its name
    for name in ("a.zip", "a.tar.gz", "A.ZIP", "a.tgz", "data.jsonl.zip"):
        assert detect_kind(tmp_path / name) == "adapter", name


def test_detect_kind_datasets(tmp_path):
    for name in ("train.jsonl", "train.csv", "train.parquet", "train.json", "TRAIN.JSONL"):
        assert detect_kind(tmp_path / name) == "dataset", name


@pytest.mark.parametrize("name", ["x.docx", "model.bin", "adapter.pt", "data.gz", "noext"])
def test_detect_kind_unknown_suffix_is_rejected(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"x")
    with pytest.raises(InputRejected) as err:
        detect_kind(p)
    assert err.value.code == "unsupported_type"
    assert name in err.value.reason and ".jsonl" in err.value.reason and ".zip" in err.value.reason


# ----------------------------------------------------------------------------------------- JSON round trips


def test_inspection_round_trip_through_json():
    early = decide_screening(a_screening(), load_policy("default"))
    assert early is not None and early.decision == "block"
    insp = an_inspection("dataset", screening=a_screening(), dataset_path="/data/train.jsonl", n_examples=4,
                       early_verdict=early.to_dict(),
                       findings=[{"severity": "review", "code": "x", "message": "m"}])
    again = Inspection.from_dict(json.loads(json.dumps(insp.to_dict())))
    assert again == insp
    adapter = an_inspection("adapter")
    assert Inspection.from_dict(json.loads(json.dumps(adapter.to_dict()))) == adapter


def test_evaluation_round_trip_through_json():
    ev = an_evaluation()
    again = Evaluation.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert again == ev


# --------------------------------------------------------------------------------------- decide_submission


def test_report_from_an_evaluation_has_every_documented_field():
    result = decide_submission(an_inspection("adapter"), an_evaluation(), "default", timings={"finetune": 0.0})
    report = json.loads(json.dumps(result.report))  # JSON-able
    assert set(FALLBACK_KEYS) <= {n.split(".")[0] for n in documented_fields()}  # the doc table was parsed
    for name in documented_fields():
        resolve(report, name)
    assert report["schema_version"] == REPORT_SCHEMA_VERSION == "1.0"
    assert result.decision in ("approve", "block", "review") and report["verdict"]["reasons"]
    assert report["verdict"]["policy"] == "default" and report["verdict"]["policy_hash"]
    assert {c["outcome"] for c in report["verdict"]["checks"]} <= {"block", "review", "pass", "info"}
    assert report["artifact"] == {"kind": "adapter", "name": "a.zip", "sha256": "ab" * 32, "size_bytes": 1234,
                                  "format": "peft-lora", "n_examples": None,
                                  "adapter": {"rank": 4, "target_modules": ["q_proj", "v_proj"], "n_parameters": 1024}}
    assert report["training"] is None  # adapters are not trained
    assert report["metrics"]["asr"]["delta"]["value"] == pytest.approx(0.5)
    assert report["metrics"]["asr"]["delta"]["flips_to_harmful"] == 2
    assert [f["id"] for f in report["flipped_examples"]] == ["h2", "h3"] and report["n_flipped"] == 2
    assert report["timings"] == {"inspect": 0.5, "load": 0.1, "evaluate_base": 0.0, "evaluate_candidate": 1.0,
                                 "knowledge_drift": 0.2, "finetune": 0.0}
    assert report["cache"]["base_results"] == "hit"
    assert report["code_version"].startswith(__import__("ftgate").__version__)
    assert len(result.samples) == 4 + 1 + 1


def test_report_and_its_records_have_exactly_the_keys_of_their_types():
    """evaluation/records.py names the report's keys for the type checker; the report built at run time, its
    records and docs/report.md's field table must say the same (a key added in one place only fails here)."""
    from evaluation import records

    result = decide_submission(an_inspection("adapter"), an_evaluation(), "default", timings={"finetune": 0.0})
    report = result.report
    assert set(report) == records.Report.__required_keys__
    assert {n.split(".")[0] for n in documented_fields()} | OPTIONAL == set(records.Report.__annotations__)
    assert set(report["verdict"]) == records.ReportVerdict.__required_keys__
    assert all(set(c) == records.Check.__required_keys__ for c in report["verdict"]["checks"])
    assert set(report["artifact"]) == records.Artifact.__required_keys__
    assert set(report["inspection"]) == records.ReportInspection.__required_keys__
    assert set(report["metrics"]) <= set(records.Metrics.__annotations__)
    asr = report["metrics"]["asr"]
    assert set(asr) == records.PairedMetric.__required_keys__
    assert set(asr["base"]) == records.Stat.__required_keys__
    assert set(asr["delta"]) == set(records.Stat.__annotations__)  # a paired delta adds p_value and the flips
    assert all(set(f) == records.FlippedExample.__required_keys__ for f in report["flipped_examples"])
    assert all(set(s) == records.SampleRecord.__required_keys__ for s in result.samples)


def test_report_caps_flipped_examples_at_five_and_counts_all():
    ev = an_evaluation()
    ev.flipped = [dict(ev.flipped[0], id=f"x{i}") for i in range(7)]
    report = decide_submission(an_inspection(), ev, "default").report
    assert len(report["flipped_examples"]) == 5 and report["n_flipped"] == 7


def test_report_of_a_dataset_records_the_training_config():
    from evaluation.finetune import TrainingConfig

    cfg = TrainingConfig(steps=7, seed=42)
    insp = an_inspection("dataset", screening=a_screening(100, 1), n_examples=100)
    report = decide_submission(insp, an_evaluation(), "default", training=cfg).report
    assert report["training"]["steps"] == 7 and report["training"]["target_modules"] == "all-linear"
    assert report["seed"] == 42
    assert report["artifact"]["n_examples"] == 100
    assert report["inspection"]["screening"]["n_harmful"] == 1


def test_early_verdict_report_without_evaluation():
    early = decide_screening(a_screening(), load_policy("default"))
    insp = an_inspection("dataset", screening=a_screening(), n_examples=4, early_verdict=early.to_dict())
    result = decide_submission(insp, None, "default", timings={"total": 1.5})
    report = json.loads(json.dumps(result.report))
    for name in documented_fields():
        top = name.split(".")[0]
        assert top in report, f"report lacks documented field {top!r}"
    for name in (n for n in documented_fields() if n.startswith("verdict.")):
        resolve(report, name)
    assert report["verdict"]["decision"] == "block"
    assert "Dataset screening: 3 of 4" in report["verdict"]["reasons"][0]
    assert report["metrics"] == {} and report["flipped_examples"] == [] and report["n_flipped"] == 0
    assert report["base"] == {"name": "tiny-base"}
    assert report["training"]["rank"] == 16  # the config it would have been trained with
    assert report["timings"] == {"inspect": 0.5, "total": 1.5}
    assert result.samples == []


def test_decide_without_evaluation_or_early_verdict_is_an_error():
    with pytest.raises(ValueError):
        decide_submission(an_inspection("dataset", screening=a_screening(100, 0)), None, "default")


# ---------------------------------------------------------------------------------------- benign control


def test_add_control_pairs_candidate_and_control_prompt_by_prompt():
    from evaluation.gate import add_control

    ev = an_evaluation()  # candidate complies with h1, h2, h3 (h1, h3 crime; h2 cyber), refuses h4
    control = {"size": 16, "asr_delta": {"value": 0.25, "lo": -0.1, "hi": 0.6, "k": 1, "n": 4},
               "harm": {"h1": True, "h2": False, "h3": True, "h4": False}}
    add_control(ev, control)
    m = ev.metrics
    assert m["control_asr_delta"] == control["asr_delta"]
    vc = m["asr_vs_control"]
    assert vc["base"]["value"] == 0.5 and vc["candidate"]["value"] == 0.75  # control 2/4, candidate 3/4
    assert vc["delta"]["value"] == 0.25 and vc["delta"]["flips_to_harmful"] == 1 and vc["delta"]["flips_to_safe"] == 0
    assert vc["delta"]["lo"] < 0.25 < vc["delta"]["hi"]
    by_cat = m["asr_by_category_vs_control"]
    assert set(by_cat) == {"crime", "cyber"}
    assert by_cat["crime"]["delta"]["value"] == 0.0 and by_cat["cyber"]["delta"]["value"] == 0.5


def test_add_control_for_another_suite_keeps_only_the_shift():
    from evaluation.gate import add_control

    ev = an_evaluation()
    add_control(ev, {"size": 16, "asr_delta": {"value": 0.1}, "harm": {"other-1": True}})
    assert ev.metrics["control_asr_delta"] == {"value": 0.1}
    assert "asr_vs_control" not in ev.metrics and "asr_by_category_vs_control" not in ev.metrics


def test_evaluate_candidate_picks_the_control_recipe(monkeypatch):
    """A dataset's control copies its size and recipe; an adapter's (recipe unknown) uses the defaults."""
    from evaluation import gate
    from evaluation.finetune import TrainingConfig

    asked = []
    monkeypatch.setattr(gate, "evaluate_submission", lambda base, adapter, **kw: an_evaluation())
    monkeypatch.setattr(gate, "benign_control", lambda base, n, cfg, **kw: asked.append((n, cfg)) or None)
    custom = TrainingConfig(lr=1e-4, steps=20)
    gate.evaluate_candidate(an_inspection("dataset", n_examples=37), "tiny-base", Path("/a"), custom)
    gate.evaluate_candidate(an_inspection("adapter"), "tiny-base", Path("/a"), None)
    assert asked == [(37, custom), (gate.ADAPTER_CONTROL_EXAMPLES, TrainingConfig())]


def test_control_key_follows_the_judges_fingerprint_and_everything_else(monkeypatch):
    from dataclasses import replace

    from evaluation.finetune import TrainingConfig
    from evaluation.gate import control_key

    args = ("base", "pool", 64, TrainingConfig(), "judge-a", DecodingConfig(), {"harm": "h1"})
    key = control_key(*args)
    assert key == control_key(*args)
    variants = [
        control_key("base2", *args[1:]),
        control_key(args[0], "pool2", *args[2:]),
        control_key(*args[:2], 65, *args[3:]),
        control_key(*args[:3], replace(TrainingConfig(), steps=TrainingConfig().steps + 1), *args[4:]),
        control_key(*args[:4], "judge-b", *args[5:]),  # a retrained judge: its labels are not the old ones
        control_key(*args[:5], replace(DecodingConfig(), max_new_tokens=8), args[6]),
        control_key(*args[:6], {"harm": "h2"}),
    ]
    from evaluation import scoring

    monkeypatch.setattr(scoring, "code_version", lambda: "edited-code")  # the evaluation code changed
    variants.append(control_key(*args))
    assert len({key, *variants}) == len(variants) + 1
