"""The Jinja filters of the page templates: times (``when``, ``iso``, ``ago``), rates (``pct``, ``pts``),
sizes (``bytes``) and durations (``seconds``). Each takes what a template has (a datetime, an ISO string, a
number or None) and returns text; a missing value is "—". ``FILTERS`` is what the templates see."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from evaluation.formatting import percent, points

MISSING = "—"  # what every filter shows for a missing value


def _parse_time(v: Any) -> datetime | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    try:
        dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def fmt_time(v: Any) -> str:
    dt = _parse_time(v)
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else MISSING


def iso_time(v: Any) -> str:
    dt = _parse_time(v)
    return dt.isoformat().replace("+00:00", "Z") if dt else ""


def fmt_ago(v: Any) -> str:
    dt = _parse_time(v)
    if dt is None:
        return MISSING
    s = (datetime.now(UTC) - dt).total_seconds()
    if s < 60:
        return f"{max(int(s), 0)} s ago"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86400)} d ago"


def pct(v: Any, digits: int = 1) -> str:
    """A rate as a percentage, as the CLI and the policy's reasons write it (evaluation.formatting.percent):
    0.633 -> '63.3%'. ``digits=0`` for the short labels of charts and queue rows: '63%'."""
    return MISSING if v is None else percent(float(v), digits=digits)


def pts(v: Any, unit: bool = True) -> str:
    """A change of a rate, in percentage points with a sign (evaluation.formatting.points): '+59.3 pts';
    ``unit=False`` for the bounds of an interval whose value already names it: '+59.3'."""
    return MISSING if v is None else points(float(v)) + (" pts" if unit else "")


def fmt_bytes(n: Any) -> str:
    if n is None:
        return MISSING
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_seconds(v: Any) -> str:
    if v is None:
        return MISSING
    v = float(v)
    if v < 60:
        return f"{v:.1f} s"
    if v < 3600:
        return f"{int(v // 60)} min {int(v % 60)} s"
    return f"{int(v // 3600)} h {int(v % 3600 // 60)} min"


FILTERS = {"when": fmt_time, "iso": iso_time, "ago": fmt_ago, "pct": pct, "pts": pts, "bytes": fmt_bytes,
           "seconds": fmt_seconds}
