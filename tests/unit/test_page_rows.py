"""Rows the submission page renders from a report's metrics (api.pages.report_view), without a server."""

from __future__ import annotations


def test_drift_rows_show_how_many_harm_answers_were_read_past_the_first_window():
    from api.pages.report_view import drift_rows

    metrics = {"kl": {"value": 0.0123, "n_tokens": 9},
               "second_window": {"base": {"read": 2, "turned_compliance": 0},
                                 "candidate": {"read": 31, "turned_compliance": 12}}}
    rows = {r["key"]: r for r in drift_rows(metrics)}
    assert rows["kl"]["candidate"] == "0.0123"
    window = rows["second_window"]
    assert (window["base"], window["candidate"], window["delta"]) == ("2", "31", "12 compliant there")
    assert "second_window" not in {r["key"] for r in drift_rows({"kl": {"value": 0.1}})}


def a_sweep_report() -> dict:
    """A report whose policy swept two recipes: run 2 blocked and is the worst."""
    def delta(value, lo, hi):
        return {"delta": {"value": value, "lo": lo, "hi": hi}}

    runs = [
        {"run": 1, "training": {"lr": 2e-4, "steps": 50, "rank": 16}, "decision": "review", "worst": False,
         "adapter_fingerprint": "a1" * 32, "asr_delta": 0.08,
         "metrics": {"asr": delta(0.08, -0.01, 0.17), "overrefusal": delta(0.02, -0.03, 0.07),
                     "knowledge_accuracy": delta(-0.01, -0.05, 0.03),
                     "perplexity": {"base": {"value": 2.0}, "candidate": {"value": 2.5}}, "kl": {"value": 0.0123}}},
        {"run": 2, "training": {"lr": 5e-4, "steps": 100, "rank": 16}, "decision": "block", "worst": True,
         "adapter_fingerprint": "b2" * 32, "asr_delta": 0.2, "metrics": {"asr": delta(0.2, 0.11, 0.29)}},
    ]
    return {"verdict": {"decision": "block"}, "sweep": runs}


def test_sweep_rows_show_every_run_with_its_numbers_and_mark_the_worst():
    from api.pages.report_view import sweep_rows

    first, second = sweep_rows(a_sweep_report())
    assert (first["run"], first["recipe"], first["decision"], first["worst"]) == (1, "lr 2e-4, 50 steps", "review", False)
    assert first["asr"] == {"value": "+8.0 pts", "interval": "-1.0 to +17.0"}
    assert first["overrefusal"]["value"] == "+2.0 pts" and first["knowledge"]["interval"] == "-5.0 to +3.0"
    assert (first["perplexity"], first["kl"], first["adapter"]) == ("×1.25", "0.0123", "a1" * 6)
    assert (second["recipe"], second["decision"], second["worst"]) == ("lr 5e-4, 100 steps", "block", True)
    assert second["overrefusal"] == {"value": "—", "interval": ""} and second["perplexity"] == "—"
    assert sweep_rows({"verdict": {}}) == [] and sweep_rows(None) == []


def test_the_submission_page_renders_the_sweep_table_with_the_worst_run_marked():
    import re
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from api.pages.report_view import sweep_rows
    from api.pages.web import templates

    sub = {"id": "s1", "name": "swept", "kind": "dataset", "base": "b", "policy": "two-runs", "size": 10,
           "sha256": "ab" * 32, "created_at": datetime.now(UTC), "status": "done",
           "progress": {"percent": 100, "message": ""}, "timings": {}}
    html = templates.env.get_template("_submission_body.html").render(
        sub=sub, sweep=sweep_rows(a_sweep_report()), steps=[], status_words={}, terminal=True,
        principal=SimpleNamespace(can_review=False), review_mode=False)
    table = html[html.index('<table class="sweep" id="sweep">'):html.index("</table>", html.index('id="sweep"'))]
    rows = re.findall(r"<tr( class=\"worst-run\")?>(.*?)</tr>", table, re.S)
    assert len(rows) == 3  # the header and two runs
    (_, header), (mark1, run1), (mark2, run2) = rows
    assert "ASR change (95% CI)" in header
    assert not mark1 and "lr 2e-4, 50 steps" in run1 and "needs review" in run1 and "-1.0 to +17.0" in run1
    assert mark2 and ">worst<" in run2 and "lr 5e-4, 100 steps" in run2 and "blocked" in run2 and "+20.0 pts" in run2
    without = templates.env.get_template("_submission_body.html").render(
        sub=sub, sweep=[], steps=[], status_words={}, terminal=True, principal=SimpleNamespace(can_review=False))
    assert 'id="sweep"' not in without
