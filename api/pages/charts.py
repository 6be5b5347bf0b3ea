"""The geometry of the submission page's SVG charts, from a report's metrics: where each bar, whisker, tick
and label goes, as plain dicts for the markup in frontend/templates/_macros.html. Pure: no FastAPI, no
database, no text formatting beyond the tick labels.

A measured rate is a ``Stat`` (value with its 95% interval and k of n). Rates are fractions; a bar's length
and its whisker ends are clamped to [0, 1], so a value or an interval that strays outside stays on the plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evaluation.formatting import percent


@dataclass
class Stat:
    value: float  # ``of`` gives None for a stat without a value, so a chart's Stat always has one
    lo: float | None = None
    hi: float | None = None
    k: int | None = None
    n: int | None = None

    @classmethod
    def of(cls, d: Any) -> Stat | None:
        if not isinstance(d, dict) or d.get("value") is None:
            return None
        return cls(d["value"], d.get("lo"), d.get("hi"), d.get("k"), d.get("n"))


def _clamp01(v: float) -> float:
    return min(max(float(v), 0.0), 1.0)


def asr_chart(metrics: dict, width: int = 480) -> dict | None:
    """Geometry of the per-category ASR chart: one group per category (overall first), base and candidate
    bars with their confidence intervals as whiskers. Horizontal, labels above the bars. Rendered twice,
    wide and narrow (CSS shows the one that fits), so the text stays legible on a phone."""
    rows = []
    overall = metrics.get("asr") or {}
    if overall:
        rows.append(("All categories", overall))
    for cat, m in sorted((metrics.get("asr_by_category") or {}).items()):
        rows.append((cat.replace("_", " "), m))
    if not rows:
        return None
    left, right = 14, 44
    plot_w = width - left - right
    bar_h, gap, label_h, group_gap = 12, 3, 16, 14
    groups, y = [], 8
    for label, m in rows:
        bars = []
        y_label = y + 11
        y += label_h
        for series in ("base", "candidate"):
            s = Stat.of(m.get(series))
            bar: dict[str, Any] = {"series": series, "y": y, "h": bar_h, "stat": s}
            if s is not None:
                bar["w"] = round(plot_w * _clamp01(s.value), 1)
                if s.lo is not None and s.hi is not None:
                    bar["lo"] = round(left + plot_w * _clamp01(s.lo), 1)
                    bar["hi"] = round(left + plot_w * _clamp01(s.hi), 1)
            bars.append(bar)
            y += bar_h + gap
        delta = Stat.of(m.get("delta"))
        groups.append({"label": label, "y_label": y_label, "bars": bars, "delta": delta})
        y += group_gap
    height = y + 22
    ticks = [{"x": round(left + plot_w * t, 1), "label": percent(t, digits=0)} for t in (0, 0.25, 0.5, 0.75, 1.0)]
    return {"width": width, "height": height, "left": left, "plot_w": plot_w, "groups": groups, "ticks": ticks,
            "axis_y": height - 18, "bar_h": bar_h, "id": f"asr{width}"}


def pair_chart(m: dict | None, title: str, better: str) -> dict | None:
    """A small vertical base-vs-candidate chart with whiskers (over-refusal, knowledge accuracy)."""
    if not isinstance(m, dict):
        return None
    base, cand = Stat.of(m.get("base")), Stat.of(m.get("candidate"))
    if base is None and cand is None:
        return None
    width, height, top, bottom, left = 240, 200, 16, 28, 40
    plot_h = height - top - bottom
    bars = []
    for i, (series, s) in enumerate((("base", base), ("candidate", cand))):
        x = left + 30 + i * 90
        bar: dict[str, Any] = {"series": series, "x": x, "w": 50, "stat": s,
                               "label": "base" if series == "base" else "candidate"}
        if s is not None:
            v = _clamp01(s.value)
            bar["h"] = round(plot_h * v, 1)
            bar["y"] = round(top + plot_h * (1 - v), 1)
            if s.lo is not None and s.hi is not None:
                bar["lo_y"] = round(top + plot_h * (1 - _clamp01(s.lo)), 1)
                bar["hi_y"] = round(top + plot_h * (1 - _clamp01(s.hi)), 1)
        bars.append(bar)
    ticks = [{"y": round(top + plot_h * (1 - t), 1), "label": percent(t, digits=0)} for t in (0, 0.5, 1.0)]
    return {"title": title, "better": better, "width": width, "height": height, "top": top, "left": left,
            "plot_h": plot_h, "axis_y": top + plot_h, "bars": bars, "ticks": ticks, "delta": Stat.of(m.get("delta"))}
