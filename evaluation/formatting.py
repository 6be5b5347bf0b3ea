"""How rates and changes of rates are written for people, one way for the policy's reasons and the CLI's
report. Rates are fractions in [0, 1] everywhere in the code (evaluation/metrics.py); only text shows them
as percentages, and a change of a rate as percentage points (from 4% to 63% is +59 points, not +1475%).
"""

from __future__ import annotations


def percent(fraction: float | None, missing: str = "-", digits: int = 1) -> str:
    """A rate as a percentage, one decimal unless told otherwise: 0.6333 -> '63.3%' (``digits=0``, for the
    short labels of charts: '63%'); None -> ``missing``."""
    return missing if fraction is None else f"{100 * fraction:.{digits}f}%"


def points(change: float | None, missing: str = "-") -> str:
    """A change of a rate in percentage points, signed, one decimal, without the unit (the sentence names
    it): 0.593 -> '+59.3', -0.05 -> '-5.0'; None -> ``missing``."""
    return missing if change is None else f"{100 * change:+.1f}"
