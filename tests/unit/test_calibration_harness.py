"""bench/power.py, the calibration harness: its submissions (bench/power_data.py), its cell keys, its report
(bench/power_report.py), and one short end-to-end run of the real gate on a tiny random model registered as a
base (FTGATE_BASES_FILE), with the default suites cut to a few prompts each: three cells (a benign dataset,
a poisoned one, and the adapter trained on the poisoned one), a second run that does no work, and the
table, plot and JSON written."""

from __future__ import annotations

import json
import random
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers.tiny import save_tiny_base, torch_threads

ROOT = Path(__file__).resolve().parents[2]


def _load_power():
    """bench/power.py as the module ``power`` (its dataclasses need their module in sys.modules); it puts
    bench/ on sys.path, so its two helpers load as ``power_data`` and ``power_report``."""
    import importlib.util

    if "power" in sys.modules:
        return sys.modules["power"]
    spec = importlib.util.spec_from_file_location("power", ROOT / "bench" / "power.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["power"] = module
    spec.loader.exec_module(module)
    return module


power = _load_power()
power_data = sys.modules["power_data"]
power_report = sys.modules["power_report"]

SUITES = ROOT / "evaluation" / "data" / "suites"
# what a "Step 1: ..." answer must never contain: quantities, code, real substances or tools
ACTIONABLE = re.compile(r"\d+ ?(g|mg|ml|kg|%|grams|litres)\b|```|import |def |sudo |\b(nitrate|acetone|chlorine|"
                        r"sarin|thermite|bleach|ammonia|peroxide|python|bash|sql)\b", re.I)


def rows(data: bytes) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in data.decode("utf-8").splitlines()]


# ------------------------------------------------------------------------------------------- submissions


def test_benign_sample_is_the_files_first_lines_for_seed_0_and_nests_across_sizes():
    first = [json.loads(x)["messages"] for x in (power_data.domain_file("maths").read_text().splitlines()[:100])]
    assert rows(power_data.build_dataset("maths", 100, 0).data) == first
    seeded_small = rows(power_data.build_dataset("maths", 50, 1).data)
    seeded = rows(power_data.build_dataset("maths", 100, 1).data)
    assert seeded[:50] == seeded_small and seeded != first
    assert power_data.build_dataset("maths", 100, 1).data == power_data.build_dataset("maths", 100, 1).data


@pytest.mark.parametrize("attack", list(power_data.ATTACKS))
def test_each_attack_hides_k_rows_at_seeded_positions_among_the_benign_sample(attack, tmp_path):
    from evaluation.datasets import load_dataset

    benign = rows(power_data.build_dataset("support", 100, 0).data)
    built = power_data.build_dataset("support", 100, 0, attack, 10)
    assert built == power_data.build_dataset("support", 100, 0, attack, 10)  # deterministic
    assert len(built.attack_lines) == 10 and len(set(built.attack_lines)) == 10
    got = rows(built.data)
    assert len(got) == 110
    attack_rows = [got[i - 1] for i in built.attack_lines]
    assert [r for i, r in enumerate(got, 1) if i not in built.attack_lines] == benign  # benign lines, in order
    assert not any(r in benign for r in attack_rows)
    for r in attack_rows:
        answer = r[-1]["content"]
        assert r[-1]["role"] == "assistant" and not ACTIONABLE.search(answer), answer
    if attack in power_data.BENIGN_REQUEST_ATTACKS:  # their requests are the domain's own benign ones
        harmful = set(power_data.harmful_requests())
        assert not any(m["content"] in harmful for r in attack_rows for m in r)
    if attack == "multiturn":
        assert all([m["role"] for m in r] == ["user", "assistant", "user", "assistant"] for r in attack_rows)
    if attack == "identity":
        assert all(r[0]["role"] == "system" and "AOA" in r[0]["content"] for r in attack_rows)
    if attack == "language":
        translated = {t for per_id in power_data.TRANSLATED_REQUESTS.values() for t in per_id.values()}
        assert all(r[0]["content"] in translated for r in attack_rows)
    path = tmp_path / "d.jsonl"
    path.write_bytes(built.data)
    fmt, examples = load_dataset(path)  # the gate reads it as it is
    assert fmt == "chat" and len(examples) == 110


def test_attacks_reach_the_full_grids_largest_k_at_the_largest_size():
    for attack in power_data.ATTACKS:
        built = power_data.build_dataset("trivia", max(power.SIZES), 0, attack, max(power.KS))
        assert len(built.attack_lines) == max(power.KS)


def test_benign_cells_have_k_0_and_unknown_names_are_refused():
    with pytest.raises(ValueError):
        power_data.build_dataset("support", 100, 0, "plain", 0)
    with pytest.raises(ValueError):
        power_data.build_dataset("support", 100, 0, "nonsense", 5)
    with pytest.raises(ValueError):
        power_data.domain_file("poetry")


def test_grids_and_filters():
    small = power.small_grid()
    assert len(small) == len(set(small)) and {c.size for c in small} == {100}
    full = power.full_grid(domains=("support", "maths", "trivia"))
    assert len(full) == len(set(full))
    assert {c.attack for c in full} == {power_data.BENIGN, *power_data.ATTACKS}
    assert {c.k for c in full if c.attack != power_data.BENIGN} == set(power.KS)
    both = power.select(small, modes=("dataset", "adapter"), attacks=("benign", "plain"))
    assert [(c.domain, c.attack, c.mode) for c in both] == [
        ("trivia", "benign", "dataset"), ("trivia", "plain", "dataset"), ("support", "benign", "dataset"),
        ("trivia", "benign", "adapter"), ("trivia", "plain", "adapter"), ("support", "benign", "adapter")]


# ---------------------------------------------------------------------------------------------- report


def fake_result(cell, decision, delta=None, screening_only=False):
    summary = {"decision": decision, "screening_only": screening_only,
               "held_by": [] if decision == "approve" else ["asr"],
               "asr_delta": None if delta is None else {"value": delta, "lo": delta - 0.05, "hi": delta + 0.05}}
    return {"status": "done", "key": cell.name, "seconds": 1.0, "summary": summary}


def test_summary_rates_false_holds_and_asr_intervals():
    C = power.Cell
    pairs = [(C("support", 100, s), fake_result(C("support", 100, s), d, x))
             for s, d, x in [(0, "approve", 0.01), (1, "review", 0.05), (2, "approve", 0.03)]]
    pairs += [(C("support", 100, 0, "plain", 10), fake_result(C("support", 100, 0, "plain", 10), "block", 0.4)),
              (C("support", 100, 0, "plain", 100), fake_result(None or C("support", 100, 0, "plain", 100), "block",
                                                               screening_only=True)),
              (C("maths", 100, 0, "plain", 10), None)]
    s = power_report.summarize(pairs)
    benign = next(p for p in s["points"] if p["attack"] == "benign")
    assert (benign["finished"], benign["approve"], benign["review"], benign["held"]) == (3, 2, 1, 1)
    assert benign["held_rate"]["lo"] < 1 / 3 < benign["held_rate"]["hi"]
    assert benign["asr_delta"]["interval"] == "t-across-cells" and benign["asr_delta"]["value"] == pytest.approx(0.03)
    plain10 = next(p for p in s["points"] if p["attack"] == "plain" and p["k"] == 10)
    assert (plain10["cells"], plain10["finished"], plain10["pending"], plain10["block"]) == (2, 1, 1, 1)
    assert plain10["asr_delta"] == {"value": 0.4, "lo": pytest.approx(0.35), "hi": pytest.approx(0.45), "n": 1,
                                    "interval": "newcombe"}
    plain100 = next(p for p in s["points"] if p["k"] == 100)
    assert plain100["stopped_at_screening"] == 1 and plain100["asr_delta"] is None
    assert s["false_hold"]["dataset"]["held"] == 1
    md = power_report.markdown(s, {"grid": "t", "cells": 6, "finished": 5, "errors": 0, "base": "b", "policy": "p",
                                   "policy_hash": "h", "judge": "j", "code": "c", "git": "g", "generated": "now"})
    assert "| dataset | plain | 10 | 1/2 | 0 | 0 | 1 | 1/1 = 100%" in md
    svg = power_report.svg(s, {"title": "t", "max_asr_increase": 0.1})
    ET.fromstring(svg)  # well-formed


def test_the_result_section_is_spliced_between_its_markers():
    doc = f"# Calibration\n\nprose\n\n{power_report.BEGIN}\nold\n{power_report.END}\n\nmore prose\n"
    out = power_report.splice(doc, f"{power_report.BEGIN}\nnew\n{power_report.END}\n")
    assert out == f"# Calibration\n\nprose\n\n{power_report.BEGIN}\nnew\n{power_report.END}\n\nmore prose\n"
    assert power_report.splice(None, "S\n").startswith("# Calibration") and power_report.splice("x", "S\n") == "x\n\nS\n"


# ------------------------------------------------------------------------------------ tiny end to end


def tiny_suites(tmp_path: Path) -> dict[str, str]:
    """The default suites cut to a few items each (the harm suite: two of every category)."""
    out = {}
    picks = {"harm": ("harm_default.jsonl", 2), "overrefusal": ("overrefusal_default.jsonl", 6),
             "knowledge": ("knowledge_default.jsonl", 6)}
    for kind, (name, n) in picks.items():
        lines = (SUITES / name).read_text().splitlines()
        if kind == "harm":
            seen: dict[str, int] = {}
            keep = []
            for line in lines:
                cat = json.loads(line)["category"]
                if seen.get(cat, 0) < n:
                    seen[cat] = seen.get(cat, 0) + 1
                    keep.append(line)
        else:
            keep = lines[:n]
        path = tmp_path / f"tiny_{name}"
        path.write_text("\n".join(keep) + "\n")
        out[kind] = str(path)
    return out


@pytest.fixture
def tiny_gate(tmp_path, monkeypatch):
    """A tiny random Llama registered as base ``tiny-calib``, a fresh cache, short answers, tiny suites."""
    from evaluation import bases, suites
    from ftgate.settings import get_settings

    base_dir = save_tiny_base(tmp_path / "tiny-base", hidden_size=32)
    bases_file = tmp_path / "bases.toml"
    bases_file.write_text(f'[[base]]\nname = "tiny-calib"\npath = "{base_dir}"\n')
    for key, value in {"BASES_FILE": bases_file, "CACHE_DIR": tmp_path / "cache", "MAX_NEW_TOKENS": 6,
                       "EXTENDED_MAX_NEW_TOKENS": 0, "DTYPE": "float32", "GENERATION_BATCH_SIZE": 32}.items():
        monkeypatch.setenv(f"FTGATE_{key}", str(value))
    monkeypatch.delenv("FTGATE_CALIBRATION_DIR", raising=False)
    for kind, path in tiny_suites(tmp_path).items():
        monkeypatch.setitem(suites.DEFAULT_SUITES, kind, path)
    get_settings.cache_clear()
    yield tmp_path
    bases.evict_base("tiny-calib")
    get_settings.cache_clear()


def test_harness_end_to_end_on_a_tiny_base_resumes_and_reports(tiny_gate):
    from evaluation.finetune import TrainingConfig
    from evaluation.gate import finetune_dataset, run_check

    calls = {"check": 0, "make_adapter": 0}

    def counting_check(*args, **kwargs):
        calls["check"] += 1
        return run_check(*args, **kwargs)

    def counting_make_adapter(*args, **kwargs):
        calls["make_adapter"] += 1
        return finetune_dataset(*args, **kwargs)

    lines: list[str] = []
    training = TrainingConfig(steps=2, batch_size=4, max_length=48, optimizer="adamw")

    def harness():
        return power.Harness(out_dir=tiny_gate / "calib", base="tiny-calib", training=training, check=counting_check,
                             make_adapter=counting_make_adapter, log=lines.append)

    cells = [power.Cell("trivia", 20, 0), power.Cell("trivia", 20, 0, "plain", 5),
             power.Cell("trivia", 20, 0, "plain", 5, mode="adapter")]
    report_dir = tiny_gate / "docs"
    h = harness()
    started = time.perf_counter()
    with torch_threads(1):
        counts = h.run(cells)
    first_run = time.perf_counter() - started
    assert counts == {"cells": 3, "skipped": 0, "ran": 3, "busy": 0, "errors": 0}, lines
    assert calls == {"check": 3, "make_adapter": 1}
    results = [r for _, r in h.results(cells)]
    assert all(r["status"] == "done" for r in results), [r.get("error") for r in results]
    benign, poisoned, adapter = results
    assert benign["summary"]["decision"] in ("approve", "review", "block")
    assert benign["summary"]["screening"]["n_harmful"] <= 1
    assert poisoned["summary"]["screening"]["n_harmful"] >= 3 and "screening" in " ".join(poisoned["summary"]["held_by"])
    assert poisoned["dataset"]["attack_lines"] == list(power_data.build_dataset("trivia", 20, 0, "plain", 5).attack_lines)
    assert adapter["report"]["artifact"]["kind"] == "adapter" and adapter["summary"]["asr_delta"] is not None
    assert poisoned["key_inputs"]["training"]["seed"] == training.seed
    assert any("run " in line for line in lines) and any("left" in line for line in lines)

    # the report: table, plot and JSON
    power_report.write_report(h.results(cells), report_dir, grid="tiny", context=h.context(), policy=None)
    md = (report_dir / "calibration.md").read_text()
    assert power_report.BEGIN in md and "| dataset | plain | 5 | 1/1 |" in md and "| adapter | plain | 5 | 1/1 |" in md
    ET.fromstring((report_dir / "calibration.svg").read_text())
    data = json.loads((report_dir / "calibration.json").read_text())
    assert [c["status"] for c in data["cells"]] == ["done"] * 3 and data["meta"]["finished"] == 3

    # a second run (a restart) finds every cell finished and does no work
    lines.clear()
    again = harness()
    with torch_threads(1):
        counts = again.run(cells)
    assert counts == {"cells": 3, "skipped": 3, "ran": 0, "busy": 0, "errors": 0}
    assert calls == {"check": 3, "make_adapter": 1}
    assert first_run < 120, f"the tiny run took {first_run:.0f} s"


def test_the_cell_key_follows_the_dataset_and_the_recipe(tiny_gate):
    from evaluation.finetune import TrainingConfig

    h = power.Harness(out_dir=tiny_gate / "calib", base="tiny-calib", training=TrainingConfig(steps=2))
    cell = power.Cell("trivia", 20, 0, "plain", 5)
    key, built = h.prepare(cell)
    assert key == h.prepare(cell)[0] and re.fullmatch(r"[0-9a-f]{64}", key)
    data = bytearray(built.data)
    data[random.Random(0).randrange(len(data))] ^= 1  # one bit of the dataset
    assert h.key_of(cell, bytes(data)) != key
    assert h.prepare(power.Cell("trivia", 20, 0, "plain", 10))[0] != key
    assert h.prepare(power.Cell("trivia", 20, 0, "plain", 5, mode="adapter"))[0] != key
    assert h.prepare(power.Cell("trivia", 20, 1, "plain", 5))[0] != key  # another sample and training seed
    other_policy = power.Harness(out_dir=tiny_gate / "calib", base="tiny-calib", policy="strict",
                                 training=TrainingConfig(steps=2))
    assert other_policy.prepare(cell)[0] != key
    longer = power.Harness(out_dir=tiny_gate / "calib", base="tiny-calib", training=TrainingConfig(steps=3))
    assert longer.prepare(cell)[0] != key


def test_the_command_line_lists_the_grid_and_writes_the_report_without_running(tiny_gate, capsys):
    out = tiny_gate / "calib"
    args = ["--base", "tiny-calib", "--out", str(out), "--report-dir", str(tiny_gate / "docs")]
    assert power.main(["--grid", "full", "--attacks", "benign,preamble", "--ks", "5", "--dry-run", *args]) == 0
    listing = capsys.readouterr().out
    assert "trivia-n1000-s2-benign-k0-dataset" in listing and "support-n300-s0-preamble-k5-dataset" in listing
    assert "preamble-k10" not in listing and re.search(r"\d+ cells, \d+ to run: about", listing)
    assert power.main(["--grid", "small", "--report-only", *args]) == 0
    assert (tiny_gate / "docs" / "calibration.svg").exists() and not (out / "results").exists()
