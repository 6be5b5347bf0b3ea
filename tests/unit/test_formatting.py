"""evaluation/formatting.py: rates as percentages, changes of rates as percentage points."""

from __future__ import annotations

import pytest

from evaluation.formatting import percent, points


@pytest.mark.parametrize("fraction, text", [(0.6333, "63.3%"), (0.04, "4.0%"), (0.0, "0.0%"), (1, "100.0%"),
                                            (0.00049, "0.0%"), (0.9996, "100.0%")])
def test_percent_has_one_decimal(fraction, text):
    assert percent(fraction) == text


@pytest.mark.parametrize("change, text", [(0.593, "+59.3"), (-0.05, "-5.0"), (0.0, "+0.0"), (0.10, "+10.0")])
def test_points_are_signed_with_one_decimal_and_no_unit(change, text):
    assert points(change) == text


def test_a_missing_value_prints_as_the_placeholder():
    assert percent(None) == "-" and points(None) == "-"
    assert percent(None, missing="n/a") == "n/a" and points(None, missing="—") == "—"
