"""The Jinja filters of the pages (api.pages.filters): rates, changes of rates, sizes and durations as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.pages.filters import FILTERS, fmt_ago, fmt_bytes, fmt_seconds, fmt_time, iso_time, pct, pts


def test_rates_are_percentages_and_changes_signed_points():
    assert (pct(0.6333), pct(0.6333, 0), pct(1), pct("0.5"), pct(None)) == ("63.3%", "63%", "100.0%", "50.0%", "—")
    assert (pts(0.593), pts(-0.05), pts(0), pts(None)) == ("+59.3 pts", "-5.0 pts", "+0.0 pts", "—")
    # an interval's bounds: the value beside them names the unit
    assert (pts(0.593, False), pts(-0.05, False), pts(None, False)) == ("+59.3", "-5.0", "—")


def test_the_pages_write_rates_as_the_cli_does():
    """One helper (evaluation.formatting) for every percentage and change the pages show."""
    from evaluation.formatting import percent, points

    for v in (0.0, 0.005, 0.25, 0.6333, 1.0):
        assert pct(v) == percent(v) and pct(v, 0) == percent(v, digits=0)
        assert pts(v - 0.5) == f"{points(v - 0.5)} pts"
    assert percent(0.25, digits=0) == "25%" and percent(0.6333, digits=2) == "63.33%"


def test_sizes_and_durations():
    assert [fmt_bytes(n) for n in (None, 512, 2048, 5 * 1024**2, 3 * 1024**3, 4096 * 1024**3)] == [
        "—", "512 B", "2.0 KiB", "5.0 MiB", "3.0 GiB", "4096.0 GiB"]
    assert [fmt_seconds(v) for v in (None, 12.34, 125, 7260)] == ["—", "12.3 s", "2 min 5 s", "2 h 1 min"]


def test_times_take_datetimes_or_iso_strings_naive_ones_as_utc():
    t = datetime(2026, 3, 4, 5, 6, 7)
    assert fmt_time(t) == fmt_time("2026-03-04T05:06:07Z") == "2026-03-04 05:06 UTC"
    assert iso_time(t) == "2026-03-04T05:06:07Z"
    assert (fmt_time(None), fmt_time("not a time"), iso_time("")) == ("—", "—", "")
    assert fmt_ago(datetime.now(UTC) - timedelta(minutes=5, seconds=3)) == "5 min ago"
    assert fmt_ago(datetime.now(UTC) - timedelta(days=2, hours=1)) == "2 d ago"


def test_the_templates_see_every_filter():
    assert set(FILTERS) == {"when", "iso", "ago", "pct", "pts", "bytes", "seconds"}
