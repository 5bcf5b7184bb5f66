"""Breakdowns of one target's errors: by band of the true value, by attribute value, by
fold, and the under-age check as a binary test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agebench.core.metrics.rows import (
    Band,
    Row,
    fraction,
    natural_key,
    rows_by_fold,
    scored_pairs,
)
from agebench.core.metrics.scalars import mean_absolute_error, mean_bias

DEFAULT_BANDS: tuple[Band, ...] = (*((lo, lo + 10) for lo in range(0, 80, 10)), (80, None))


def _error_summary(err: np.ndarray) -> dict[str, Any]:
    return {"n": int(err.size), "mae": mean_absolute_error(err), "bias": mean_bias(err)}


def band_label(band: Band) -> str:
    """ "0-9" for [0, 10), "80+" for [80, inf); non-integer bands read "12.5-<20"."""
    low, high = band
    if high is None:
        return f"{low:g}+"
    if float(low).is_integer() and float(high).is_integer():
        return f"{low:g}-{high - 1:g}"
    return f"{low:g}-<{high:g}"


def band_table(true: np.ndarray, pred: np.ndarray, bands: Sequence[Band]) -> list[dict[str, Any]]:
    """MAE and bias by band of the *true* value (``low <= true < high``), every band listed."""
    table = []
    for low, high in bands:
        inside = true >= low if high is None else (true >= low) & (true < high)
        row = {"band": band_label((low, high)), "low": low, "high": high}
        table.append(row | _error_summary(pred[inside] - true[inside]))
    return table


def attribute_table(rows: Sequence[Row], target: str) -> dict[str, list[dict[str, Any]]]:
    """MAE and bias per value of each attribute (gender, race...) over scored rows.

    Values come from all label rows, so a value whose every image failed still appears (n 0).
    Rows lacking an attribute are left out of that attribute's table.
    """
    values: dict[str, set[str]] = {}
    for row in rows:
        for key, value in (row.get("attributes") or {}).items():
            values.setdefault(str(key), set()).add(str(value))
    tables: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(values):
        entries = []
        for value in sorted(values[key], key=natural_key):
            subset = [r for r in rows if str((r.get("attributes") or {}).get(key)) == value]
            true, pred = scored_pairs(subset, target)
            entries.append({"value": value} | _error_summary(pred - true))
        tables[key] = entries
    return tables


def fold_table(rows: Sequence[Row], target: str) -> list[dict[str, Any]]:
    """MAE per fold over its scored rows (n = scored rows of the fold)."""
    table = []
    for fold, subset in rows_by_fold(rows).items():
        true, pred = scored_pairs(subset, target)
        table.append({"fold": fold, "n": int(true.size), "mae": mean_absolute_error(pred - true)})
    return table


def under_age_rates(true: np.ndarray, pred: np.ndarray, threshold: float) -> dict[str, Any]:
    """The under-age check as a binary test: positive = minor (true < threshold), predicted
    positive = pred < threshold.

    ``precision`` = minors predicted minor / all predicted minor; ``recall`` = minors predicted
    minor / minors; ``false_accept_rate`` = minors predicted adult / minors (the error an age
    gate must avoid); ``false_reject_rate`` = adults predicted minor / adults. A rate whose
    denominator is empty is None.
    """
    minor, said_minor = true < threshold, pred < threshold
    tp = int(np.sum(minor & said_minor))
    fn = int(np.sum(minor & ~said_minor))
    fp = int(np.sum(~minor & said_minor))
    tn = int(np.sum(~minor & ~said_minor))
    return {
        "threshold": threshold,
        "n_minors": tp + fn,
        "n_adults": fp + tn,
        "minor_as_minor": tp,
        "minor_as_adult": fn,
        "adult_as_minor": fp,
        "adult_as_adult": tn,
        "precision": fraction(tp, tp + fp),
        "recall": fraction(tp, tp + fn),
        "false_accept_rate": fraction(fn, tp + fn),
        "false_reject_rate": fraction(fp, fp + tn),
    }
