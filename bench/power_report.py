"""The calibration harness's summary: verdict rates by attack and k, the benign false-hold rate and the ASR
change per point, as a Markdown section (calibration.md), an SVG plot (calibration.svg, written by hand: no
plotting library) and a machine-readable JSON (calibration.json).

A *point* is (mode, attack, k) over all its finished cells (domains, sizes, seeds); the benign cells are the
point (mode, benign, 0). *Held* = review or block: for benign cells that is the false-hold rate, for
poisoned ones the detection rate. Rates carry a Wilson 95% interval. The ASR change of a point is the mean
of its cells' changes (candidate minus base, points), with the cell's own paired (Newcombe) 95% interval
when the point has one cell, and a t interval of the mean across cells when it has more (the spread between
domains, sizes and seeds, which is what calibration is after). Cells stopped at screening have no ASR.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

BEGIN = "<!-- BEGIN calibration results: written by bench/power.py, do not edit by hand -->"
END = "<!-- END calibration results -->"
DECISIONS = ("approve", "review", "block")
MODES = ("dataset", "adapter")
COLOURS = {"approve": "#4c9a52", "review": "#e8a33d", "block": "#c8453b"}
# two-sided 95% quantiles of Student's t by degrees of freedom (a smaller df's value is used between rows)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 60: 2.000, 120: 1.980}


def duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def pts(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:+.1f}"


def pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def wilson(k: int, n: int) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    from evaluation.metrics import wilson_interval

    return wilson_interval(k, n)


def t95(df: int) -> float:
    return T95[max(d for d in T95 if d <= df)] if df >= 1 else math.nan


def mean_interval(stats: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The mean change of the cells, with the one cell's interval or a t interval across cells."""
    values = [s["value"] for s in stats if s and s.get("value") is not None]
    if not values:
        return None
    mean = sum(values) / len(values)
    if len(values) == 1:
        only = next(s for s in stats if s and s.get("value") is not None)
        return {"value": mean, "lo": only.get("lo"), "hi": only.get("hi"), "n": 1, "interval": "newcombe"}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = t95(len(values) - 1) * sd / math.sqrt(len(values))
    return {"value": mean, "lo": mean - half, "hi": mean + half, "n": len(values), "interval": "t-across-cells"}


def _point_order(attack: str, k: int, attacks: list[str]) -> tuple[int, int]:
    return (attacks.index(attack) if attack in attacks else len(attacks), k)


def summarize(pairs: list[tuple[Any, dict[str, Any] | None]]) -> dict[str, Any]:
    """Points and benign breakdown from (cell, result) pairs; cells without a finished result count as pending."""
    import power_data

    attacks = [power_data.BENIGN, *power_data.ATTACKS]
    groups: dict[tuple, list] = defaultdict(list)
    benign: dict[tuple, list] = defaultdict(list)
    for cell, result in pairs:
        groups[(cell.mode, cell.attack, cell.k)].append(result)
        if cell.attack == power_data.BENIGN:
            benign[(cell.mode, cell.domain, cell.size)].append(result)

    def point(results: list[dict | None]) -> dict[str, Any]:
        done = [r for r in results if r and r.get("status") == "done"]
        counts = {d: sum(r["summary"]["decision"] == d for r in done) for d in DECISIONS}
        held = counts["review"] + counts["block"]
        lo, hi = wilson(held, len(done))
        held_by: dict[str, int] = defaultdict(int)
        for r in done:
            for rule in dict.fromkeys(r["summary"].get("held_by", [])):
                held_by[rule] += 1
        return {
            "cells": len(results), "finished": len(done),
            "rejected": sum(1 for r in results if r and r.get("status") == "rejected"),
            "errors": sum(1 for r in results if r and r.get("status") == "error"),
            "pending": sum(1 for r in results if not r or r.get("status") == "error"),
            **counts, "rates": {d: (counts[d] / len(done) if done else None) for d in DECISIONS},
            "held": held, "held_rate": {"value": held / len(done) if done else None, "lo": lo, "hi": hi},
            "held_by": dict(sorted(held_by.items(), key=lambda kv: -kv[1])),
            "stopped_at_screening": sum(1 for r in done if r["summary"].get("screening_only")),
            "asr_delta": mean_interval([r["summary"].get("asr_delta") for r in done]),
            "asr_vs_control": mean_interval([r["summary"].get("asr_vs_control") for r in done]),
        }

    def mode_rank(mode: str) -> int:
        return MODES.index(mode) if mode in MODES else len(MODES)

    points = [{"mode": m, "attack": a, "k": k, **point(rs)}
              for (m, a, k), rs in sorted(groups.items(),
                                          key=lambda kv: (mode_rank(kv[0][0]), *_point_order(kv[0][1], kv[0][2], attacks)))]
    by_domain = [{"mode": m, "domain": d, "size": n, **point(rs)}
                 for (m, d, n), rs in sorted(benign.items(), key=lambda kv: (mode_rank(kv[0][0]), *kv[0][1:]))]
    return {"points": points, "benign_by_domain_size": by_domain,
            "false_hold": {p["mode"]: {k: p[k] for k in ("finished", "held", "held_rate")}
                           for p in points if p["attack"] == power_data.BENIGN}}


# ---------------------------------------------------------------------------------------------- Markdown


def _interval(stat: dict | None) -> str:
    if not stat:
        return "-"
    if stat.get("lo") is None:
        return pts(stat["value"])
    return f"{pts(stat['value'])} ({pts(stat['lo'])} to {pts(stat['hi'])})"


def _held(p: dict) -> str:
    if not p["finished"]:
        return "-"
    hr = p["held_rate"]
    return f"{p['held']}/{p['finished']} = {pct(hr['value'])} ({pct(hr['lo'])}-{pct(hr['hi'])})"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [BEGIN, ""]
    lines.append(f"Grid `{meta['grid']}`: {meta['finished']} of {meta['cells']} cells finished"
                 f"{', ' + str(meta['errors']) + ' failed (retried on the next run)' if meta['errors'] else ''}. "
                 f"Base `{meta['base']}`, policy `{meta['policy']}` (hash `{meta['policy_hash']}`), judge "
                 f"`{meta['judge']}`, code revision `{meta['code']}` (git `{meta['git'] or '?'}`), "
                 f"written {meta['generated']}.")
    lines.append("")
    for mode, fh in summary["false_hold"].items():
        lines.append(f"**Benign false-hold rate ({mode}s)**: {_held(fh)} of benign cells held (review or block; "
                     "Wilson 95% CI)." if fh["finished"] else f"**Benign false-hold rate ({mode}s)**: no benign "
                     "cell finished yet.")
    lines += ["", "| mode | attack | k | cells | approve | review | block | held (95% CI) | stopped at screening "
              "| ASR change, points (95% interval) | ASR vs control, points | held by |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in summary["points"]:
        cells = f"{p['finished']}/{p['cells']}"
        held_by = ", ".join(f"{rule} {n}" for rule, n in p["held_by"].items()) or "-"
        lines.append(f"| {p['mode']} | {p['attack']} | {p['k']} | {cells} | {p['approve']} | {p['review']} | "
                     f"{p['block']} | {_held(p)} | {p['stopped_at_screening']} | {_interval(p['asr_delta'])} | "
                     f"{_interval(p['asr_vs_control'])} | {held_by} |")
    if summary["benign_by_domain_size"]:
        lines += ["", "Benign cells by domain and size:", "",
                  "| mode | domain | size | cells | held (95% CI) | ASR change, points (95% interval) | held by |",
                  "|---|---|---|---|---|---|---|"]
        for p in summary["benign_by_domain_size"]:
            held_by = ", ".join(f"{rule} {n}" for rule, n in p["held_by"].items()) or "-"
            lines.append(f"| {p['mode']} | {p['domain']} | {p['size']} | {p['finished']}/{p['cells']} | {_held(p)} "
                         f"| {_interval(p['asr_delta'])} | {held_by} |")
    lines += ["", "ASR change: mean over the point's cells; the interval is the cell's paired (Newcombe) 95% "
              "interval for one cell, a t interval of the mean across cells for more.", "",
              "![verdict rates and ASR change by attack and k](calibration.svg)", "", END]
    return "\n".join(lines) + "\n"


def splice(existing: str | None, section: str) -> str:
    """The document with its result section replaced (or appended, or a new document)."""
    if not existing:
        return "# Calibration\n\n" + section
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + section.rstrip("\n") + tail
    return existing.rstrip("\n") + "\n\n" + section


# --------------------------------------------------------------------------------------------------- SVG


def _ticks(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """A rounded axis range around [lo, hi] and at most about six ticks on it."""
    step = next(st for st in (0.05, 0.1, 0.2, 0.25, 0.5, 1.0) if (hi - lo) / st <= 6)
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    return lo, hi, [round(lo + i * step, 6) for i in range(round((hi - lo) / step) + 1)]


def svg(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """Per mode: stacked verdict-rate bars by attack and k (the benign false-hold rate in the panel's title),
    and below them each point's ASR change with its interval against the policy's limit."""
    bar, gap, group_gap, left, right = 18, 4, 22, 64, 70
    rate_h, asr_h, top_pad, label_h, foot_h = 150, 130, 48, 40, 34
    limit = meta.get("max_asr_increase")
    panels = []
    width = 560
    for mode in dict.fromkeys(p["mode"] for p in summary["points"]):
        pts_ = [p for p in summary["points"] if p["mode"] == mode]
        groups = list(dict.fromkeys(p["attack"] for p in pts_))
        width = max(width, left + right + len(pts_) * (bar + gap) + group_gap * max(0, len(groups) - 1))
        panels.append((mode, pts_, groups))
    block_h = top_pad + rate_h + label_h + asr_h + foot_h
    height = 44 + block_h * max(1, len(panels))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(meta["title"])}</text>']
    lx = left
    for d in DECISIONS:
        out.append(f'<rect x="{lx}" y="28" width="10" height="10" fill="{COLOURS[d]}"/>'
                   f'<text x="{lx + 14}" y="37">{d}</text>')
        lx += 70
    out.append(f'<text x="{lx}" y="37">dot and bar: ASR change (points) and its 95% interval; red dashes: the '
               'policy limit</text>')
    if not panels:
        out.append(f'<text x="{left}" y="80">no cells yet</text>')
    for index, (mode, pts_, groups) in enumerate(panels):
        y0 = 44 + index * block_h + top_pad
        fh = summary["false_hold"].get(mode)
        held = (f"benign false-hold rate {fh['held']}/{fh['finished']} = {pct(fh['held_rate']['value'])} (95% CI "
                f"{pct(fh['held_rate']['lo'])}-{pct(fh['held_rate']['hi'])})" if fh and fh["finished"] else
                "no benign cell finished yet")
        out.append(f'<text x="{left}" y="{y0 - 14}" font-size="12" font-weight="bold">{escape(mode)}s: verdict '
                   f'rates by attack and k; {escape(held)}</text>')
        for frac in (0, 0.5, 1):  # rate axis
            y = y0 + rate_h * (1 - frac)
            out.append(f'<line x1="{left - 4}" x2="{width - right}" y1="{y}" y2="{y}" stroke="#ddd"/>'
                       f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{frac * 100:.0f}%</text>')
        asr_top = y0 + rate_h + label_h
        asr_vals = [v for p in pts_ for v in ((p["asr_delta"] or {}).get("lo"), (p["asr_delta"] or {}).get("hi"),
                                               (p["asr_delta"] or {}).get("value")) if v is not None]
        lo_ax, hi_ax, ticks = _ticks(max(-1.0, min([-0.05, *asr_vals])),
                                     min(1.0, max([0.2, *asr_vals, (limit or 0) + 0.05])))

        def ay(v: float, top=asr_top, lo=lo_ax, hi=hi_ax) -> float:
            return top + asr_h * (hi - v) / (hi - lo)

        for v in ticks:
            out.append(f'<line x1="{left - 4}" x2="{width - right}" y1="{ay(v):.1f}" y2="{ay(v):.1f}" '
                       f'stroke="{"#999" if v == 0 else "#ddd"}"/>'
                       f'<text x="{left - 8}" y="{ay(v) + 4:.1f}" text-anchor="end">{v * 100:+.0f}</text>')
        if limit is not None:
            out.append(f'<line x1="{left - 4}" x2="{width - right}" y1="{ay(limit):.1f}" y2="{ay(limit):.1f}" '
                       f'stroke="#c8453b" stroke-dasharray="4 3"/><text x="{width - right + 4}" '
                       f'y="{ay(limit) + 4:.1f}" fill="#c8453b">limit {pts(limit)}</text>')
        out.append(f'<text x="14" y="{asr_top + asr_h / 2}" transform="rotate(-90 14 {asr_top + asr_h / 2})" '
                   'text-anchor="middle">ASR change, points</text>')
        x = left
        for g_index, group in enumerate(groups):
            gx = x
            for p in (p for p in pts_ if p["attack"] == group):
                base_y = y0 + rate_h
                if p["finished"]:
                    for d in DECISIONS:
                        h = rate_h * (p["rates"][d] or 0)
                        if h > 0:
                            base_y -= h
                            out.append(f'<rect x="{x}" y="{base_y:.1f}" width="{bar}" height="{h:.1f}" '
                                       f'fill="{COLOURS[d]}"><title>{escape(group)} k={p["k"]}: {d} '
                                       f'{p[d]}/{p["finished"]}</title></rect>')
                else:
                    out.append(f'<rect x="{x}" y="{y0}" width="{bar}" height="{rate_h}" fill="none" '
                               'stroke="#bbb" stroke-dasharray="2 2"/>')
                out.append(f'<text x="{x + bar / 2}" y="{y0 - 2}" text-anchor="middle" font-size="9" '
                           f'fill="#555">{p["finished"]}</text>')
                out.append(f'<text x="{x + bar / 2}" y="{y0 + rate_h + 13}" text-anchor="middle">{p["k"]}</text>')
                d = p["asr_delta"]
                if d and d.get("value") is not None:
                    cx = x + bar / 2
                    if d.get("lo") is not None and d.get("hi") is not None:
                        out.append(f'<line x1="{cx}" x2="{cx}" y1="{ay(max(lo_ax, d["lo"])):.1f}" '
                                   f'y2="{ay(min(hi_ax, d["hi"])):.1f}" stroke="#333"/>')
                    out.append(f'<circle cx="{cx}" cy="{ay(d["value"]):.1f}" r="3" fill="#333"><title>'
                               f'{escape(group)} k={p["k"]}: {_interval(d)} points</title></circle>')
                x += bar + gap
            out.append(f'<text x="{(gx + x - gap) / 2}" y="{y0 + rate_h + 27}" text-anchor="middle" '
                       f'font-weight="bold">{escape(group)}</text>')
            if g_index < len(groups) - 1:
                x += group_gap
        out.append(f'<text x="{left}" y="{asr_top + asr_h + 20}" fill="#555">k = attack examples hidden in the '
                   'benign sample; the small number over a bar = its finished cells (dashed outline: none yet)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------- writing


def write_report(pairs: list, report_dir: Path, *, grid: str, context: dict[str, Any],
                 policy: str | None = None, git: str = "") -> dict[str, Any]:
    """Write calibration.md (its result section), calibration.svg and calibration.json; return the JSON."""
    from evaluation.files import atomic_write_text
    from evaluation.policy import load_policy

    report_dir = Path(report_dir)
    the_policy = load_policy(policy)
    summary = summarize(pairs)
    meta = {
        "grid": grid, "cells": len(pairs),
        "finished": sum(1 for _, r in pairs if r and r.get("status") in ("done", "rejected")),
        "errors": sum(1 for _, r in pairs if r and r.get("status") == "error"),
        "base": context["base"]["name"], "policy": context["policy"]["name"], "policy_hash": context["policy"]["hash"],
        "judge": context["judge"], "code": context["code"], "git": git,
        "generated": time.strftime("%Y-%m-%d %H:%M"), "max_asr_increase": the_policy.max_asr_increase,
        "title": f"ftgate calibration: grid {grid}, base {context['base']['name']}, policy {context['policy']['name']}",
    }
    cells = [{"name": c.name, **c.to_dict(), "key": (r or {}).get("key"), "status": (r or {}).get("status", "pending"),
              "seconds": (r or {}).get("seconds"), "summary": (r or {}).get("summary")} for c, r in pairs]
    data = {"meta": meta, "context": context, **summary, "cells": cells}
    md_path = report_dir / "calibration.md"
    atomic_write_text(md_path, splice(md_path.read_text() if md_path.exists() else None, markdown(summary, meta)))
    atomic_write_text(report_dir / "calibration.svg", svg(summary, meta))
    atomic_write_text(report_dir / "calibration.json", json.dumps(data, indent=1, default=str) + "\n")
    return data
