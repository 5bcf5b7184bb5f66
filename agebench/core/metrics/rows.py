"""Reading prediction rows for the metrics: a row's label and prediction, whether it is
scored, its (true, pred) pairs, how unscored rows failed, and rows by fold.

Everything here treats a NaN or infinite number as absent, so no metric ever sees one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Row = Mapping[str, Any]
#: an age band ``low <= true < high``; ``high`` None means open-ended
Band = tuple[float, float | None]
#: an inclusive age group ``(low, high)``, Adience style
Group = tuple[float, float]

FAILURE_STATUSES = ("no_face", "failed", "missing")
#: the status key used for an "ok" row that nevertheless carries no usable prediction
NO_PREDICTION = "no_prediction"


def finite(value: Any) -> float | None:
    """A finite float, or None: a NaN or infinite number is treated as absent."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def json_float(value: Any) -> float | None:
    """A plain Python float (JSON-serialisable), or None for None, NaN and infinities."""
    if value is None:
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def fraction(count: int, total: int) -> float | None:
    """count / total; None when there is nothing to divide by."""
    return count / total if total else None


def true_value(row: Row, target: str = "age") -> float | None:
    """The label of ``row`` for ``target``: ``row["age"]`` for "age", else ``row["targets"]``."""
    if target == "age":
        return finite(row.get("age"))
    return finite((row.get("targets") or {}).get(target))


def is_scored(row: Row, target: str = "age") -> bool:
    """A row is scored when its status is "ok" and both its label and prediction exist."""
    return (
        row.get("status") == "ok"
        and true_value(row, target) is not None
        and finite(row.get("pred_age")) is not None
    )


def scored_pairs(rows: Iterable[Row], target: str) -> tuple[np.ndarray, np.ndarray]:
    """(true, pred) arrays over the scored rows, in row order."""
    scored = [r for r in rows if is_scored(r, target)]
    true = np.array([true_value(r, target) for r in scored], dtype=float)
    pred = np.array([float(r["pred_age"]) for r in scored], dtype=float)
    return true, pred


def count_failures(unscored: Iterable[Row]) -> dict[str, int]:
    """Unscored label rows by status (every failure status listed, 0 when absent); an "ok"
    row without a usable prediction is counted as ``no_prediction``."""
    counts = dict.fromkeys(FAILURE_STATUSES, 0)
    for row in unscored:
        key = NO_PREDICTION if row.get("status") == "ok" else str(row.get("status"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def natural_key(value: Any) -> list[Any]:
    """Sort "2" before "10": digit runs compare as numbers."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", str(value))
        if part
    ]


def rows_by_fold(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows grouped by fold name (naturally sorted); rows without a fold are left out."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        if row.get("fold") is not None:
            groups.setdefault(str(row["fold"]), []).append(row)
    return {fold: groups[fold] for fold in sorted(groups, key=natural_key)}
