"""Age-group metrics, for benchmarks labelled with groups rather than ages (Adience):
accuracy, one-off accuracy, per-fold spread, confusion and the MAE to the group midpoint."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from agebench.core.metrics.rows import (
    Group,
    Row,
    count_failures,
    finite,
    fraction,
    json_float,
    rows_by_fold,
)
from agebench.core.metrics.scalars import bootstrap_mean_ci, mean_absolute_error, sample_std


def _as_group(value: Any) -> Group:
    low, high = value
    return (float(low), float(high))


def group_of_age(age: float, groups: Sequence[Group]) -> int:
    """Index of the group whose inclusive range holds ``age``; in a gap between groups (or
    outside them all) the nearest group by distance to its range, the younger on a tie."""
    distances = [max(low - age, 0.0, age - high) for low, high in groups]
    return distances.index(min(distances))


def predicted_group(row: Row, groups: Sequence[Group]) -> int | None:
    """The group a row's prediction falls in: its ``pred_group`` when that is one of
    ``groups`` (a group-output model), else the group of ``pred_age`` (or, for a pred_group
    foreign to this benchmark, of that group's midpoint); None without a prediction."""
    if row.get("pred_group") is not None:
        group = _as_group(row["pred_group"])
        if group in groups:
            return groups.index(group)
        return group_of_age((group[0] + group[1]) / 2.0, groups)
    age = finite(row.get("pred_age"))
    return None if age is None else group_of_age(age, groups)


def _true_group(row: Row, groups: Sequence[Group]) -> int:
    group = _as_group(row["age_group"])
    if group not in groups:
        known = ", ".join(f"{lo:g}-{hi:g}" for lo, hi in groups)
        raise ValueError(f"{row.get('image')}: age group {group} is not one of {known}")
    return groups.index(group)


def _is_group_scored(row: Row, groups: Sequence[Group]) -> bool:
    return row.get("status") == "ok" and predicted_group(row, groups) is not None


def _group_scores(rows: Sequence[Row], groups: Sequence[Group]) -> tuple[np.ndarray, np.ndarray]:
    """(true index, predicted index) over the rows scored for group accuracy."""
    scored = [r for r in rows if _is_group_scored(r, groups)]
    true = np.array([_true_group(r, groups) for r in scored], dtype=int)
    pred = np.array([predicted_group(r, groups) for r in scored], dtype=int)
    return true, pred


def _accuracy(true: np.ndarray, pred: np.ndarray, off: int) -> float | None:
    """Fraction with |pred index - true index| <= off (0: exact accuracy, 1: one-off)."""
    return json_float(np.mean(np.abs(pred - true) <= off)) if true.size else None


def _group_folds(rows: Sequence[Row], groups: Sequence[Group]) -> dict[str, Any]:
    """Accuracy and one-off per fold, and their mean and sample std over folds."""
    folds: list[dict[str, Any]] = []
    for fold, subset in rows_by_fold(rows).items():
        true, pred = _group_scores(subset, groups)
        folds.append(
            {
                "fold": fold,
                "n": int(true.size),
                "accuracy": _accuracy(true, pred, 0),
                "one_off": _accuracy(true, pred, 1),
            }
        )
    result: dict[str, Any] = {"by_fold": folds}
    for name in ("accuracy", "one_off"):
        values = [f[name] for f in folds if f[name] is not None]
        result[f"{name}_fold_mean"] = json_float(statistics.fmean(values)) if values else None
        result[f"{name}_fold_std"] = sample_std(values)
    return result


def _midpoint_errors(rows: Sequence[Row], groups: Sequence[Group]) -> np.ndarray:
    """pred_age - midpoint of the true group, over scored rows that have a pred_age."""
    return np.array(
        [
            float(r["pred_age"]) - sum(groups[_true_group(r, groups)]) / 2.0
            for r in rows
            if _is_group_scored(r, groups) and finite(r.get("pred_age")) is not None
        ],
        dtype=float,
    )


def compute_group_metrics(
    rows: Iterable[Row],
    groups: Sequence[Sequence[float]],
    *,
    seed: int = 0,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Age-group metrics for benchmarks labelled with groups (Adience: ``age_group`` set).

    A label row has ``age_group`` (which must be one of ``groups``); it is scored when its
    status is "ok" and it has a ``pred_group`` or ``pred_age`` (mapped by ``predicted_group``).

    - ``n_rows``, ``n_scored``, ``n_failed`` (by status), ``coverage`` = n_scored / n_rows.
    - ``accuracy``: fraction of scored rows whose predicted group is the true group, with
      ``accuracy_ci`` (percentile bootstrap, ``bootstrap_mean_ci``); ``one_off``: fraction
      with |pred index - true index| <= 1 (adjacent groups count).
    - ``by_fold``: [{fold, n, accuracy, one_off}]; ``accuracy_fold_mean``/``_std`` and
      ``one_off_fold_mean``/``_std`` (ddof=1) over folds with scored rows (Adience's
      five-fold protocol reports mean +- std).
    - ``confusion``: counts[true index][pred index]; ``groups`` echoes the groups.
    - ``mae_midpoint``: MAE of ``pred_age`` against the true group's midpoint, over scored
      rows that have a ``pred_age`` (``n_midpoint`` of them).
    """
    bounds = [_as_group(g) for g in groups]
    label_rows = [r for r in rows if r.get("age_group") is not None]
    true, pred = _group_scores(label_rows, bounds)
    confusion = np.zeros((len(bounds), len(bounds)), dtype=int)
    np.add.at(confusion, (true, pred), 1)
    mid_err = _midpoint_errors(label_rows, bounds)
    correct = (true == pred).astype(float)
    return {
        "groups": [list(g) for g in bounds],
        "n_rows": len(label_rows),
        "n_scored": int(true.size),
        "n_failed": count_failures(r for r in label_rows if not _is_group_scored(r, bounds)),
        "coverage": fraction(int(true.size), len(label_rows)),
        "accuracy": _accuracy(true, pred, 0),
        "accuracy_ci": bootstrap_mean_ci(correct, n_boot=n_boot, seed=seed, confidence=confidence),
        "confidence": confidence,
        "one_off": _accuracy(true, pred, 1),
        **_group_folds(label_rows, bounds),
        "confusion": confusion.tolist(),
        "mae_midpoint": mean_absolute_error(mid_err),
        "n_midpoint": int(mid_err.size),
    }
