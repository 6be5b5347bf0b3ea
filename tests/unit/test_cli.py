"""ftgate.cli: the text report, exit codes of rejected inputs, and the listing commands (no model is loaded)."""

from __future__ import annotations

import json

import pytest

from ftgate.cli import EXIT, format_judges, main, render_text
from tests.helpers.gate_inputs import a_screening, an_evaluation, an_inspection


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Settings point their cache at tmp_path (cleared before and after, so no test sees another's)."""
    from ftgate.settings import get_settings

    monkeypatch.setenv("FTGATE_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    yield tmp_path / "cache"
    get_settings.cache_clear()


@pytest.fixture
def report():
    from evaluation.gate import decide_submission

    return decide_submission(an_inspection("adapter"), an_evaluation(), "default", timings={"total": 2.0}).report


def test_render_text_shows_verdict_reasons_metrics_and_flips(report):
    text = render_text(report)
    decision = report["verdict"]["decision"]
    assert text.startswith(f"ftgate verdict: {decision.upper()}")
    assert "adapter a.zip, sha256 abababababab, base tiny-base, policy default" in text.splitlines()[0]
    for reason in report["verdict"]["reasons"]:
        assert f"  - {reason}" in text
    # metric rows with their intervals: ASR 1/4 -> 3/4, +50 points, exact McNemar p = 0.5
    asr = next(line for line in text.splitlines() if "ASR (harmful compliance)" in line)
    assert "25.0% [" in asr and "75.0% [" in asr and "+50.0 pts [" in asr and "p=0.5" in asr
    assert any("ASR crime" in line for line in text.splitlines())
    assert any("ASR cyber" in line for line in text.splitlines())
    assert any(line.strip().startswith("over-refusal (safe prompts)") for line in text.splitlines())
    assert any(line.strip().startswith("knowledge accuracy") for line in text.splitlines())
    ppl = next(line for line in text.splitlines() if "answer perplexity" in line)
    assert "3.00" in ppl and "3.50" in ppl and "+0.500" in ppl
    assert "KL(base || candidate)" in text and "0.0500" in text
    window = next(line for line in text.splitlines() if "read past the first window" in line)
    assert window.split()[-6:] == ["0", "0", "0", "found", "compliant", "there"]
    # flipped examples: the prompts with both responses
    assert "Flipped examples (base did not comply, candidate did; 2 in all):" in text
    assert "[cyber] harmful request 2" in text and "[crime] harmful request 3" in text
    assert "base:      \"I can't help with that.\"" in text
    assert "candidate: 'Sure, here is how: step 1 ...'" in text
    assert "Timings (s): inspect 0.5" in text


def test_render_text_of_a_screening_block():
    from evaluation.gate import decide_submission
    from evaluation.policy import decide_screening, load_policy

    early = decide_screening(a_screening(), load_policy("default"))
    insp = an_inspection("dataset", screening=a_screening(), n_examples=4, early_verdict=early.to_dict())
    text = render_text(decide_submission(insp, None, "default").report)
    assert text.startswith("ftgate verdict: BLOCK")
    assert "Dataset screening: 3 of 4 examples look harmful (75.0%)" in text
    assert "ASR (harmful compliance)" not in text and "Flipped examples" not in text


def test_render_text_lists_the_lines_with_harmful_responses():
    from evaluation.gate import decide_submission

    screening = a_screening(n=40, k=0) | {
        "n_response_flagged": 12, "response_share": 0.3,
        "response_flagged": [{"line": i, "request": "q", "response": "r", "response_harm_score": 0.8}
                             for i in range(3, 15)]}
    insp = an_inspection("dataset", screening=screening, n_examples=40)
    text = render_text(decide_submission(insp, an_evaluation(), "default").report)
    assert "12 have a response read as harmful (30.0%): lines 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ..." in text


def test_check_missing_file_exits_3_with_the_reason(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["check", str(missing), "--quiet"]) == EXIT["rejected"] == 3
    err = capsys.readouterr().err
    assert "input rejected" in err and str(missing) in err and "no such file" in err


def test_check_unknown_type_exits_3(tmp_path, capsys):
    doc = tmp_path / "x.docx"
    doc.write_bytes(b"PK\x03\x04 not really a document")
    assert main(["check", str(doc), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "x.docx" in err and "unknown file type" in err


def test_check_json_format_writes_a_rejected_report(tmp_path, capsys):
    doc = tmp_path / "x.docx"
    doc.write_text("hello")
    out = tmp_path / "report.json"
    assert main(["check", str(doc), "--quiet", "--format", "json", "--out", str(out)]) == 3
    data = json.loads(out.read_text())
    assert data["verdict"]["decision"] == "rejected"
    assert data["error"]["code"] == "unsupported_type"
    assert "x.docx" in data["verdict"]["reasons"][0]
    # without --out the JSON goes to stdout
    capsys.readouterr()
    assert main(["check", str(tmp_path / "gone.zip"), "--quiet", "--format", "json"]) == 3
    printed = json.loads(capsys.readouterr().out)
    assert printed["verdict"]["decision"] == "rejected" and printed["error"]["code"] == "not_found"


def test_check_bad_training_option_exits_3(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    assert main(["check", str(data), "--quiet", "--lr", "5"]) == 3
    assert "lr=5.0" in capsys.readouterr().err


def test_check_sweep_flags_are_checked_as_a_policys_sweep_and_exit_3(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    capsys.readouterr()
    assert main(["check", str(data), "--quiet", "--sweep", "--sweep-lr", "1e-4,2e-4,5e-4", "--sweep-steps", "10,20,30"]) == 3
    assert "--sweep (every --sweep-lr with every --sweep-steps) lists 9 runs; at most 6" in capsys.readouterr().err
    assert main(["check", str(data), "--quiet", "--sweep", "--sweep-lr", "fast"]) == 3
    assert "--sweep-lr must be a comma-separated list of numbers, got 'fast'" in capsys.readouterr().err
    assert main(["check", str(data), "--quiet", "--sweep", "--sweep-lr", "0.5"]) == 3
    assert "entry 1: lr must be a number (allowed: over 0, at most 0.01), got 0.5" in capsys.readouterr().err


def test_render_text_lists_every_sweep_run_and_marks_the_worst(report):
    import copy
    import types

    from evaluation.finetune import TrainingConfig
    from evaluation.sweep import keep_worst

    milder = copy.deepcopy(report)
    milder["verdict"]["decision"] = "approve"
    milder["metrics"]["asr"]["delta"].update(value=0.01, lo=-0.2, hi=0.2)
    worse = types.SimpleNamespace(report=report, samples=[])
    keep_worst([types.SimpleNamespace(report=milder, samples=[]), worse],
               [TrainingConfig(lr=2e-4, steps=50), TrainingConfig(lr=5e-4, steps=100)], ["a" * 64, "b" * 64])
    lines = render_text(report).splitlines()
    start = lines.index("Sweep: 2 fine-tunes; the worst (*, run 2) is the verdict above:")
    header, first, second = lines[start + 1:start + 4]
    assert header.split()[:4] == ["run", "recipe", "decision", "ASR"]
    assert first.split()[:7] == ["1", "lr", "2e-4,", "50", "steps", "approve", "+1.0"]
    assert second.split()[:8] == ["*", "2", "lr", "5e-4,", "100", "steps", report["verdict"]["decision"], "+50.0"]
    assert "x1.17" in second and "bbbbbbbbbbbb" in second  # perplexity 3.0 -> 3.5; the adapter's fingerprint


def test_suites_json_lists_the_registered_suites(capsys):
    from evaluation.suites import list_suites

    assert main(["suites", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert names == {s.name for s in list_suites()}
    assert {"harm-default", "overrefusal-default", "knowledge-default"} <= names
    assert all({"kind", "size", "hash", "source"} <= set(r) for r in rows)


def test_policies_lists_the_registered_policies(capsys):
    from evaluation.policy import list_policies

    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    for p in list_policies():
        assert f"name={p.name}" in out
    assert "name=default" in out and "name=strict" in out


def test_quiet_progress_reports_only_a_long_base_preparation(monkeypatch):
    """--quiet prints nothing for ordinary stages or a quick base load, but a base build that runs on
    (the guarded base: ~17 min on a fresh machine) gets a line a minute after its first minute."""
    import io

    import ftgate.cli as cli
    from evaluation.progress import PREPARE_BASE, base_progress

    clock = [100.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = cli.TerminalProgress(stream=out, quiet=True)
    progress("finetune", 10, 50, "fine-tuning step 10/50")
    base_progress(progress)("loading base guarded-smollm2")
    assert out.getvalue() == ""
    for seconds, message in ((30, "guard fine-tuning step 10/250"), (61, "guard fine-tuning step 20/250"),
                             (90, "guard fine-tuning step 30/250"), (125, "guard fine-tuning step 40/250")):
        clock[0] = 100.0 + seconds
        progress(PREPARE_BASE, 0, 1, message)
    assert out.getvalue().splitlines() == ["[prepare base] guard fine-tuning step 20/250",
                                           "[prepare base] guard fine-tuning step 40/250"]


def test_judges_table_shows_each_sources_validation():
    rows = [
        {"name": "embedded", "version": "3", "description": "learned", "default": True,
         "validation": {"method": "leave-one-source-out", "per_source": {
             "gptfuzz": {"n": 6574, "label_accuracy": 0.91, "refused_accuracy": 0.88, "complied_accuracy": 0.9},
             "alpaca_eval": {"n": 4000, "complied_accuracy": 0.995}}}},
        {"name": "llama-guard", "version": "1", "description": "8B", "default": False, "validation": None},
    ]
    text = format_judges(rows)
    assert "embedded v3 (default): learned" in text and "leave-one-source-out" in text
    gptfuzz = next(line for line in text.splitlines() if "gptfuzz" in line).split()
    assert gptfuzz == ["gptfuzz", "6574", "0.910", "0.880", "0.900"]
    alpaca = next(line for line in text.splitlines() if "alpaca_eval" in line).split()
    assert alpaca == ["alpaca_eval", "4000", "-", "-", "0.995"]
    assert "llama-guard v1: 8B" in text and "not measured here" in text


def test_judges_table_shows_the_response_harm_heads_validation():
    rows = [{"name": "embedded", "version": "3", "description": "learned", "default": True, "validation": None,
             "response_harm": {"method": "leave-one-source-out", "threshold": 0.74, "per_source": {
                 "beavertails": {"n": 3012, "harmful": 1729, "recall": 0.1463, "false_flags": 0.014},
                 "calibration/benign_support": {"n": 1200, "harmful": 0, "false_flags": 0.0117}}}}]
    text = format_judges(rows)
    assert "response-harm head (dataset screening), leave-one-source-out, at 0.74" in text
    assert next(x for x in text.splitlines() if "beavertails" in x).split() == [
        "beavertails", "3012", "1729", "0.146", "0.014"]
    assert next(x for x in text.splitlines() if "benign_support" in x).split() == [
        "calibration/benign_support", "1200", "0", "-", "0.012"]


def test_judges_table_shows_the_persona_heads_validation():
    rows = [{"name": "embedded", "version": "3", "description": "learned", "default": True, "validation": None,
             "persona": {"method": "five folds grouped by text", "per_source": {
                 "chatgpt-dan": {"n": 25, "personas": True, "flagged": 1.0},
                 "awesome-chatgpt-prompts": {"n": 2900, "personas": False, "flagged": 0.0128}}}}]
    lines = format_judges(rows).splitlines()
    assert any("persona head (dataset screening), five folds grouped by text" in line for line in lines)
    assert next(x for x in lines if "chatgpt-dan" in x).split() == ["chatgpt-dan", "25", "jailbreak", "1.000"]
    assert next(x for x in lines if "awesome" in x).split() == ["awesome-chatgpt-prompts", "2900", "benign", "0.013"]


# ftgate serve / submit / demo have their own parsers: the whole rest of the command line goes to them.
def test_delegated_commands_show_their_own_help(capsys):
    for command, option in (("serve", "--no-worker"), ("submit", "--server"), ("demo", "--no-serve")):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: ftgate {command}") and option in out


def test_serve_takes_its_options_before_anything_else(monkeypatch):
    import api.serve

    seen = {}
    monkeypatch.setattr(api.serve, "serve", lambda args: seen.setdefault("args", args) and 0)
    assert main(["serve", "--port", "8100", "--no-worker"]) == 0
    assert seen["args"].port == 8100 and seen["args"].no_worker is True


def test_submit_takes_options_before_the_file(monkeypatch):
    import api.client

    seen = {}
    monkeypatch.setattr(api.client, "submit", lambda file, server, token, *a, **kw: seen.update(file=file, server=server) or 0)
    assert main(["submit", "--server", "http://gate.test", "--token", "ftg_x", "a.zip"]) == 0
    assert seen == {"file": "a.zip", "server": "http://gate.test"}


def test_top_level_help_lists_the_delegated_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("serve", "submit", "demo"))
