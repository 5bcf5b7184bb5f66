"""How a value of a summary or a comparison is written in a report's table cell or sentence.

Shared by the eval and the comparison documents so that the same number reads the same in
both (two decimals, a percentage with one, ``n/a`` for what is missing or not finite).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: what a missing value reads as, everywhere in a report
DASH = "n/a"


def num(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; DASH for None, NaN and infinities."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return f"{value:.{digits}f}"


def pct(value: Any) -> str:
    """A share (0..1) as a percentage with one decimal."""
    return DASH if value is None else f"{100.0 * value:.1f}%"


def text(value: Any) -> str:
    """Any summary value as one line of text (dicts and lists as compact JSON)."""
    if value is None:
        return DASH
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def with_ci(value: Any, ci: Any, *, signed: bool = False) -> str:
    """``value [low, high]`` with two decimals (a sign on each with ``signed``, for a
    difference); the value alone when there is no interval."""
    fmt = (lambda v: DASH if v is None else f"{v:+.2f}") if signed else num
    shown = fmt(value)
    return f"{shown} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else shown


def ci_label(confidence: float | None) -> str:
    """The column label of an interval: ``95% CI``, or plain ``CI`` when the level is not
    known (or not one level for the whole column)."""
    return f"{100 * confidence:g}% CI" if confidence else "CI"
