"""The geometry of the submission page's charts (api.pages.charts): bar lengths, interval whiskers, clamping
to the plot, ticks and layout, from a report's metrics. Pure functions: no server, no database."""

from __future__ import annotations

import pytest

from api.pages.charts import Stat, asr_chart, pair_chart


def rate(value, lo=None, hi=None, k=None, n=None) -> dict:
    return {"value": value, "lo": lo, "hi": hi, "k": k, "n": n}


def test_a_stat_needs_a_value():
    assert Stat.of(rate(0.2, 0.1, 0.3, 2, 10)) == Stat(0.2, 0.1, 0.3, 2, 10)
    assert Stat.of({"value": None}) is None
    assert Stat.of(None) is None
    assert Stat.of(0.2) is None


# ----------------------------------------------------------------------------------------------------------
# the ASR chart: horizontal bars, base and candidate per category
def test_asr_bars_are_as_long_as_their_rate_with_whiskers_at_the_interval_ends():
    c = asr_chart({"asr": {"base": rate(0.1, 0.05, 0.2, 1, 10), "candidate": rate(0.5, 0.25, 0.75, 5, 10),
                           "delta": rate(0.4, 0.1, 0.6)}}, width=480)
    left, plot_w = c["left"], c["plot_w"]
    assert (left, plot_w) == (14, 480 - 14 - 44)
    (group,) = c["groups"]
    base, cand = group["bars"]
    assert (base["series"], cand["series"]) == ("base", "candidate")
    assert base["w"] == pytest.approx(0.1 * plot_w, abs=0.05)
    assert cand["w"] == pytest.approx(0.5 * plot_w, abs=0.05) == 211.0
    # whiskers are x positions on the plot, so they start at its left edge
    assert (cand["lo"], cand["hi"]) == (pytest.approx(left + 0.25 * plot_w), pytest.approx(left + 0.75 * plot_w))
    assert (base["lo"], base["hi"]) == (round(left + 0.05 * plot_w, 1), round(left + 0.2 * plot_w, 1))
    assert cand["stat"] == Stat(0.5, 0.25, 0.75, 5, 10)
    assert group["delta"].value == 0.4


def test_asr_bars_and_whiskers_stay_on_the_plot():
    c = asr_chart({"asr": {"base": rate(-0.2, -0.5, 0.1), "candidate": rate(1.4, 0.9, 1.7)}})
    left, plot_w = c["left"], c["plot_w"]
    base, cand = c["groups"][0]["bars"]
    assert base["w"] == 0 and base["lo"] == left and base["hi"] == pytest.approx(left + 0.1 * plot_w)
    assert cand["w"] == plot_w and cand["hi"] == left + plot_w and cand["lo"] == pytest.approx(left + 0.9 * plot_w)


def test_an_asr_bar_without_an_interval_or_a_value_has_no_whisker_or_length():
    c = asr_chart({"asr": {"base": rate(0.3), "candidate": {"value": None}}})
    base, cand = c["groups"][0]["bars"]
    assert "w" in base and "lo" not in base and "hi" not in base
    assert cand["stat"] is None and "w" not in cand


def test_asr_ticks_split_the_plot_in_quarters():
    c = asr_chart({"asr": {"base": rate(0.1)}}, width=330)
    left, plot_w = c["left"], c["plot_w"]
    assert [t["label"] for t in c["ticks"]] == ["0%", "25%", "50%", "75%", "100%"]
    assert [t["x"] for t in c["ticks"]] == [round(left + plot_w * f, 1) for f in (0, 0.25, 0.5, 0.75, 1)]
    assert c["ticks"][0]["x"] == left and c["ticks"][-1]["x"] == left + plot_w
    assert c["id"] == "asr330"


def test_asr_groups_are_overall_first_then_categories_in_order_each_below_the_last():
    c = asr_chart({"asr": {"base": rate(0.1)},
                   "asr_by_category": {"weapons": {"base": rate(0.2)}, "cyber_crime": {"base": rate(0.3)}}})
    assert [g["label"] for g in c["groups"]] == ["All categories", "cyber crime", "weapons"]
    ys = [b["y"] for g in c["groups"] for b in g["bars"]]
    assert ys == sorted(ys) and len(set(ys)) == len(ys)  # no two bars overlap
    for g in c["groups"]:
        base, cand = g["bars"]
        assert g["y_label"] < base["y"]  # the label is above its bars
        assert cand["y"] == base["y"] + base["h"] + 3
    last = c["groups"][-1]["bars"][-1]
    assert last["y"] + last["h"] < c["axis_y"] < c["height"]


def test_no_asr_metrics_no_chart():
    assert asr_chart({}) is None
    assert asr_chart({"asr": {}, "asr_by_category": {}}) is None


# ----------------------------------------------------------------------------------------------------------
# the pair chart: vertical base vs candidate bars
def test_pair_bars_rise_from_the_axis_to_their_rate_with_whiskers_at_the_interval_ends():
    c = pair_chart({"base": rate(0.5, 0.25, 0.75), "candidate": rate(0.2), "delta": rate(-0.3)},
                   "Over-refusal", "lower is better")
    top, plot_h, axis = c["top"], c["plot_h"], c["axis_y"]
    assert (top, plot_h, axis) == (16, 200 - 16 - 28, 16 + 156)
    base, cand = c["bars"]
    assert base["h"] == 0.5 * plot_h and base["y"] + base["h"] == axis
    assert cand["h"] == pytest.approx(0.2 * plot_h, abs=0.05) and cand["y"] + cand["h"] == pytest.approx(axis)
    # y grows downwards: the upper end of the interval is the smaller y
    assert (base["hi_y"], base["lo_y"]) == (top + 0.25 * plot_h, top + 0.75 * plot_h)
    assert "lo_y" not in cand and "hi_y" not in cand
    assert cand["x"] > base["x"] + base["w"]  # side by side, not overlapping
    assert (c["title"], c["better"], c["delta"].value) == ("Over-refusal", "lower is better", -0.3)


def test_pair_bars_and_whiskers_stay_on_the_plot():
    c = pair_chart({"base": rate(1.3, 0.8, 1.6), "candidate": rate(-0.1, -0.4, 0.05)}, "t", "b")
    top, plot_h, axis = c["top"], c["plot_h"], c["axis_y"]
    base, cand = c["bars"]
    assert (base["h"], base["y"], base["hi_y"]) == (plot_h, top, top)
    assert (cand["h"], cand["y"], cand["lo_y"]) == (0, axis, axis)


def test_pair_ticks_at_zero_half_and_full():
    c = pair_chart({"base": rate(0.1)}, "t", "b")
    assert [(t["y"], t["label"]) for t in c["ticks"]] == [(c["axis_y"], "0%"), (c["top"] + c["plot_h"] / 2, "50%"),
                                                          (c["top"], "100%")]


def test_a_pair_chart_needs_one_measured_series():
    assert pair_chart(None, "t", "b") is None
    assert pair_chart({"base": {"value": None}, "candidate": None}, "t", "b") is None
    c = pair_chart({"candidate": rate(0.4)}, "t", "b")
    base, cand = c["bars"]
    assert base["stat"] is None and "h" not in base and cand["h"] > 0
