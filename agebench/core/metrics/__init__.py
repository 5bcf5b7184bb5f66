"""Evaluation metrics over prediction rows: every number agebench reports is defined here, once.

A *row* is one line of an eval's ``predictions.jsonl``: one label row of the benchmark, with
what the model said about its image (see ``compute_metrics`` for the fields used). The functions
are pure (no I/O, no globals) and return plain JSON-serialisable values: ``int``, ``float``,
``str``, ``list``, ``dict`` and ``None`` where a number is undefined (never NaN).

Conventions, chosen once so that every table agrees with every other:

- The denominator of ``coverage`` (and of the epsilon-error) is the *label rows*, not the images
  found: a label whose image is missing, or where no face was found, still counts. Error
  statistics (MAE, RMSE, CS...) are over the *scored* rows, shown beside the coverage, so a
  model cannot improve its MAE by failing on hard images without the coverage saying so.
- Errors are ``pred - true`` in years; "true" is the target being estimated (real age for
  ``target="age"``, the mean apparent age for ``target="apparent_age"``), never rounded.
- Threshold comparisons on absolute errors (CS, CE) allow ``BOUNDARY_TOLERANCE`` years, so
  that decimal labels behave as on paper (``25.3 - 20.3`` is not quite 5 in binary floating
  point, but an error of 5 years must count in CS@5).
- Headline MAE is pooled over all scored images (the leave-one-person-out convention for
  FG-NET); the per-fold mean and sample standard deviation are reported beside it.

The package: ``rows`` (reading rows), ``scalars`` (error statistics), ``breakdowns`` (by band,
attribute, fold; under-age), ``epsilon``, ``memorisation``, ``groups`` (Adience age groups);
``compute_metrics`` here gathers them into an eval's metrics of one target.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from agebench.core.metrics.breakdowns import (
    DEFAULT_BANDS,
    attribute_table,
    band_table,
    fold_table,
    under_age_rates,
)
from agebench.core.metrics.epsilon import epsilon_over_labels
from agebench.core.metrics.memorisation import memorisation_signal
from agebench.core.metrics.rows import (
    Band,
    Row,
    count_failures,
    fraction,
    is_scored,
    json_float,
    scored_pairs,
    true_value,
)
from agebench.core.metrics.scalars import (
    GROSS_ERROR_YEARS,
    bootstrap_mean_ci,
    cumulative_score,
    gross_error_rate,
    mean_absolute_error,
    mean_bias,
    median_absolute_error,
    root_mean_squared_error,
    sample_std,
)

CS_LEVELS: tuple[int, ...] = tuple(range(11))
CS_CURVE_MAX = 20


def compute_metrics(
    rows: Iterable[Row],
    *,
    target: str = "age",
    under_age: float = 18.0,
    bands: Sequence[Band] = DEFAULT_BANDS,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Every metric of one target over the prediction rows of an eval.

    Rows use ``status`` ("ok" | "no_face" | "failed" | "missing"), ``age`` or
    ``targets[target]`` (the label), ``pred_age``, ``age_std`` (apparent-age label std),
    ``fold`` and ``attributes``. Rows without a label for ``target`` are ignored; a label row
    is *scored* when its status is "ok" and it has a prediction. err = pred - true.

    - ``n_rows``: label rows; ``n_scored``; ``n_failed``: unscored label rows by status;
      ``coverage`` = n_scored / n_rows.
    - ``mae`` = mean |err|; ``mae_ci``: percentile bootstrap (``bootstrap_mean_ci``);
      ``rmse`` = sqrt(mean err^2); ``bias`` = mean err; ``median_ae`` = median |err|.
    - ``cs``: {"L": fraction with |err| <= L} for L = 0..10 (string keys, as JSON keeps them);
      ``cs_curve``: the same for L = 0..20 as a list indexed by L; ``cs5`` = CS@5.
    - ``ce20``: fraction with |err| > 20 years (gross errors), = 1 - CS@20.
    - ``memorisation``: the error density at zero against beside it, with its counts, lower
      confidence bound and whether it is over the threshold (``memorisation_signal``).
    - ``epsilon_error`` (apparent-age targets only, over label rows that carry ``age_std``,
      unscored rows scoring 1) and ``n_epsilon``.
    - ``by_band`` (by true value), ``by_attribute``, ``by_fold`` with ``fold_mae_mean`` and
      ``fold_mae_std`` (ddof=1, over folds with scored rows), and ``under_age``
      (``under_age_rates`` at ``under_age`` years).

    Undefined numbers (nothing scored, an empty class) are None.
    """
    label_rows = [r for r in rows if true_value(r, target) is not None]
    true, pred = scored_pairs(label_rows, target)
    err = pred - true
    n_rows, n_scored = len(label_rows), int(err.size)
    cs_curve = [cumulative_score(err, level) for level in range(CS_CURVE_MAX + 1)]
    folds = fold_table(label_rows, target)
    fold_maes = [f["mae"] for f in folds if f["mae"] is not None]
    return {
        "target": target,
        "n_rows": n_rows,
        "n_scored": n_scored,
        "n_failed": count_failures(r for r in label_rows if not is_scored(r, target)),
        "coverage": fraction(n_scored, n_rows),
        "mae": mean_absolute_error(err),
        "mae_ci": bootstrap_mean_ci(np.abs(err), n_boot=n_boot, seed=seed, confidence=confidence),
        "confidence": confidence,
        "n_boot": n_boot,
        "rmse": root_mean_squared_error(err),
        "bias": mean_bias(err),
        "median_ae": median_absolute_error(err),
        "cs": {str(level): cs_curve[level] for level in CS_LEVELS},
        "cs_curve": cs_curve,
        "cs5": cs_curve[5],
        "ce20": gross_error_rate(err, GROSS_ERROR_YEARS),
        "memorisation": memorisation_signal(err),
        **epsilon_over_labels(label_rows, target),
        "by_band": band_table(true, pred, bands),
        "by_attribute": attribute_table(label_rows, target),
        "by_fold": folds,
        "fold_mae_mean": json_float(statistics.fmean(fold_maes)) if fold_maes else None,
        "fold_mae_std": sample_std(fold_maes),
        "under_age": under_age_rates(true, pred, under_age),
    }
