"""Records paired across runs: when a record fails for a model, the intersection every model
scored, and the list of records some model failed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agebench.comparison.runs import row_key
from agebench.core.metrics.rows import true_value


def record_failed(row: Mapping[str, Any]) -> bool:
    """Status not ok, or no usable prediction."""
    pred = row.get("pred_age")
    usable = isinstance(pred, int | float) and not isinstance(pred, bool) and math.isfinite(pred)
    return row.get("status") != "ok" or not usable


def failure_status(row: Mapping[str, Any]) -> str:
    """The row's status, or ``no_prediction`` for an "ok" row without a usable prediction."""
    failed_ok = row.get("status") == "ok" and record_failed(row)
    return "no_prediction" if failed_ok else str(row["status"])


def paired_rows(
    runs_rows: Sequence[Sequence[Mapping[str, Any]]], target: str
) -> tuple[list[str], list[list[Mapping[str, Any]]]]:
    """The intersection: keys (in the first run's order) of label rows for ``target`` that
    every run scored, and for each run its rows of those keys, aligned."""
    indexed = [{row_key(r): r for r in rows} for rows in runs_rows]
    keys = [
        row_key(r)
        for r in runs_rows[0]
        if true_value(r, target) is not None
        and all(not record_failed(index[row_key(r)]) for index in indexed)
    ]
    return keys, [[index[k] for k in keys] for index in indexed]


def failure_records(
    runs_rows: Sequence[Sequence[Mapping[str, Any]]], labels: Sequence[str], target: str
) -> list[dict[str, Any]]:
    """Every record (in the first run's order) that some model failed: which models, each
    model's status, and the errors they gave."""
    indexed = [{row_key(r): r for r in rows} for rows in runs_rows]
    failures = []
    for key in (row_key(r) for r in runs_rows[0]):
        rows: Sequence[Mapping[str, Any]] = [index[key] for index in indexed]
        if not any(record_failed(r) for r in rows):
            continue
        by_label = list(zip(labels, rows, strict=True))
        failures.append(
            {
                "image": rows[0].get("image"),
                "source": rows[0].get("source"),
                "true": true_value(rows[0], target),
                "failed": [label for label, r in by_label if record_failed(r)],
                "status": {label: failure_status(r) for label, r in by_label},
                "error": {
                    label: r.get("error")
                    for label, r in by_label
                    if record_failed(r) and r.get("error")
                },
            }
        )
    return failures
