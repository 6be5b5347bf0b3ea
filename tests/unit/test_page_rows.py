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
