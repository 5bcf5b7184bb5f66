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
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Row = Mapping[str, Any]
#: an age band ``low <= true < high``; ``high`` None means open-ended
Band = tuple[float, float | None]
#: an inclusive age group ``(low, high)``, Adience style
Group = tuple[float, float]

DEFAULT_BANDS: tuple[Band, ...] = (*((lo, lo + 10) for lo in range(0, 80, 10)), (80, None))
CS_LEVELS: tuple[int, ...] = tuple(range(11))
CS_CURVE_MAX = 20
GROSS_ERROR_YEARS = 20
BOUNDARY_TOLERANCE = 1e-9
#: targets that are apparent ages, for which ``age_std`` is the labels' spread (ChaLearn LAP)
EPSILON_TARGETS = frozenset({"apparent_age"})
FAILURE_STATUSES = ("no_face", "failed", "missing")
#: the status key used for an "ok" row that nevertheless carries no usable prediction
NO_PREDICTION = "no_prediction"
#: the memorisation signal's windows on |error|, in years (see ``memorisation_signal``)
ZERO_WINDOW = 0.5
NEIGHBOUR_WINDOW = 1.5
#: the lower confidence bound of the density ratio above which an eval gets a finding
MEMORISATION_THRESHOLD = 2.0
#: fewer errors than this within NEIGHBOUR_WINDOW of zero never raise the flag
MEMORISATION_MIN_COUNT = 30
MEMORISATION_CONFIDENCE = 0.95
_BOOT_CHUNK = 2_000_000  # resampled values held in memory at once by the bootstrap


# --- row access ---------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """A finite float, or None: a NaN or infinite number is treated as absent."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def true_value(row: Row, target: str = "age") -> float | None:
    """The label of ``row`` for ``target``: ``row["age"]`` for "age", else ``row["targets"]``."""
    if target == "age":
        return _finite(row.get("age"))
    return _finite((row.get("targets") or {}).get(target))


def is_scored(row: Row, target: str = "age") -> bool:
    """A row is scored when its status is "ok" and both its label and prediction exist."""
    return (
        row.get("status") == "ok"
        and true_value(row, target) is not None
        and _finite(row.get("pred_age")) is not None
    )


def _pairs(rows: Iterable[Row], target: str) -> tuple[np.ndarray, np.ndarray]:
    """(true, pred) arrays over the scored rows, in row order."""
    scored = [r for r in rows if is_scored(r, target)]
    true = np.array([true_value(r, target) for r in scored], dtype=float)
    pred = np.array([float(r["pred_age"]) for r in scored], dtype=float)
    return true, pred


# --- scalar statistics, each None when undefined -----------------------------------------------


def _float(value: Any) -> float | None:
    """A plain Python float (JSON-serialisable), or None for None/NaN."""
    if value is None:
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _fraction(count: int, total: int) -> float | None:
    return count / total if total else None


def mean_absolute_error(err: np.ndarray) -> float | None:
    """MAE = mean |pred - true|."""
    return _float(np.mean(np.abs(err))) if err.size else None


def root_mean_squared_error(err: np.ndarray) -> float | None:
    """RMSE = sqrt(mean (pred - true)^2): weighs gross errors more than the MAE does."""
    return _float(math.sqrt(np.mean(np.square(err)))) if err.size else None


def mean_bias(err: np.ndarray) -> float | None:
    """Bias = mean (pred - true): positive when the model makes people older than they are."""
    return _float(np.mean(err)) if err.size else None


def median_absolute_error(err: np.ndarray) -> float | None:
    """Median |pred - true| (the mean of the two middle values for an even count)."""
    return _float(np.median(np.abs(err))) if err.size else None


def cumulative_score(err: np.ndarray, level: float) -> float | None:
    """CS@L = fraction of scored rows with |pred - true| <= L (an error of exactly L counts)."""
    if not err.size:
        return None
    return _float(np.mean(np.abs(err) <= level + BOUNDARY_TOLERANCE))


def gross_error_rate(err: np.ndarray, threshold: float = GROSS_ERROR_YEARS) -> float | None:
    """CE@T = fraction of scored rows with |pred - true| > T (strictly): the complement of
    CS@T, reported separately because gross errors are what a user of the model notices."""
    if not err.size:
        return None
    return _float(np.mean(np.abs(err) > threshold + BOUNDARY_TOLERANCE))


def memorisation_signal(
    err: np.ndarray,
    *,
    threshold: float | None = None,
    min_count: int | None = None,
    confidence: float | None = None,
) -> dict[str, Any]:
    """How much denser the errors are at zero than right beside it: a sign of memorisation.

    A model that has seen a test image with its label gives back that label almost exactly,
    so its errors pile up at zero; a model that generalises, however good, has an error
    density that is smooth across zero. Counted over the scored errors ``err``:

    - ``n_zero``: |err| <= 0.5 (a window 1 year wide); ``n_neighbour``: 0.5 < |err| <= 1.5
      (two windows 1 year wide, one each side). Each window of 1 year holds exactly one whole
      number, so a model predicting whole years on whole-year labels (FG-NET, UTKFace) is
      measured on the same footing as one with continuous predictions: a smooth density
      gives a ratio of about 1 either way. (A neighbourhood of 0.5 < |err| <= 1.0 would hold
      two whole numbers in a width of one, and halve the ratio of whole-year predictions.)
    - ``ratio`` = (n_zero / 1) / (n_neighbour / 2), the density at zero over the density
      beside it; None when nothing is beside it.
    - ``ratio_low``: its one-sided lower confidence bound. Given the m = n_zero + n_neighbour
      errors in the three windows, n_zero is binomial with p = ratio / (ratio + 2); the
      Wilson score bound on p at ``confidence`` gives ratio_low = 2 p_low / (1 - p_low).
    - ``flagged``: m >= ``min_count`` and ratio_low > ``threshold``, so that 48 images can
      never raise the flag by chance.

    Calibration (``MEMORISATION_THRESHOLD``): an honest error density peaks smoothly at zero;
    a Laplace density with the MAE of the best real-age models (2 years) gives 1.44, a
    Gaussian with sd 2 gives 1.13, and even a Laplace with MAE 1 only 2.05. Measured with
    ``agebench eval --bench fgnet --root FGNET --protocol lopo -m MODEL`` (1,001 scored) and
    ``agebench eval --bench utkface --root utkface-48 -m MODEL`` (48 chips), ratio (bound):

    ==================  ===================  ==================
    model               FG-NET               UTKFace, 48 chips
    ==================  ===================  ==================
    dlib-age-v1         7.93 (6.71) flagged  0.86 (0.29)
    yu4u-wrn-16-8       1.10 (0.77)          0.57 (0.17)
    apmoe-mobilenetv2   1.30 (0.97)          8.00 (1.54), 5 near zero: too few
    ==================  ===================  ==================

    A bound of 2 sits between the honest models (bounds under 1) and dlib-age-v1 on FG-NET
    (476 of 1,001 errors within half a year), with room for honest models better than these.
    """
    threshold = MEMORISATION_THRESHOLD if threshold is None else threshold
    min_count = MEMORISATION_MIN_COUNT if min_count is None else min_count
    confidence = MEMORISATION_CONFIDENCE if confidence is None else confidence
    size = np.abs(err)
    n_zero = int(np.sum(size <= ZERO_WINDOW + BOUNDARY_TOLERANCE))
    n_neighbour = int(np.sum(size <= NEIGHBOUR_WINDOW + BOUNDARY_TOLERANCE)) - n_zero
    window = n_zero + n_neighbour
    p_low = wilson_lower_bound(n_zero, window, confidence)
    ratio_low = None if p_low is None else 2.0 * p_low / (1.0 - p_low)
    return {
        "zero_window": ZERO_WINDOW,
        "neighbour_window": [ZERO_WINDOW, NEIGHBOUR_WINDOW],
        "n": int(err.size),
        "n_zero": n_zero,
        "n_neighbour": n_neighbour,
        "share_zero": _fraction(n_zero, int(err.size)),
        "share_neighbour": _fraction(n_neighbour, int(err.size)),
        "ratio": _float(2.0 * n_zero / n_neighbour) if n_neighbour else None,
        "ratio_low": _float(ratio_low),
        "confidence": confidence,
        "threshold": threshold,
        "min_count": min_count,
        "flagged": bool(window >= min_count and ratio_low is not None and ratio_low > threshold),
    }


def wilson_lower_bound(successes: int, trials: int, confidence: float) -> float | None:
    """One-sided Wilson score lower bound of a binomial proportion; None without trials.

    Chosen over the normal approximation because it stays inside [0, 1] and is sensible for
    the few-dozen counts a small benchmark gives (it never reaches 1, so the ratio it bounds
    stays finite even when every error near zero is at zero)."""
    if trials <= 0:
        return None
    z = statistics.NormalDist().inv_cdf(confidence)
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - spread) / (1 + z * z / trials))


def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); None below two values."""
    return _float(statistics.stdev(values)) if len(values) >= 2 else None


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int, seed: int, confidence: float
) -> list[float] | None:
    """Percentile bootstrap CI of the mean of ``values``.

    ``n_boot`` resamples of ``len(values)`` indices drawn with replacement by
    ``numpy.random.default_rng(seed).integers`` (in chunks of rows to bound memory); the CI is
    the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles (linear interpolation)
    of the resampled means. Deterministic for a given input, ``n_boot`` and ``seed``.
    """
    n = values.size
    if n == 0 or n_boot <= 0:
        return None
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK // n)
    means = np.empty(n_boot, dtype=float)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return [float(low), float(high)]


def epsilon_errors(pred: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """ChaLearn LAP epsilon-error per image: e = 1 - exp(-(x - mu)^2 / (2 sigma^2)).

    ``mu`` and ``sigma`` are the mean and std of the apparent-age votes. With sigma == 0 the
    Gaussian degenerates to a point: e = 0 for an exact hit, 1 otherwise.
    """
    diff = pred - mu
    zero = sigma == 0
    safe = np.where(zero, 1.0, sigma)
    e = 1.0 - np.exp(-np.square(diff) / (2.0 * np.square(safe)))
    return np.where(zero, np.where(diff == 0, 0.0, 1.0), e)


# --- tables --------------------------------------------------------------------------------


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


def _natural_key(value: Any) -> list[Any]:
    """Sort "2" before "10": digit runs compare as numbers."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", str(value))
        if part
    ]


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
        for value in sorted(values[key], key=_natural_key):
            subset = [r for r in rows if str((r.get("attributes") or {}).get(key)) == value]
            true, pred = _pairs(subset, target)
            entries.append({"value": value} | _error_summary(pred - true))
        tables[key] = entries
    return tables


def _by_fold(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows grouped by fold name (naturally sorted); rows without a fold are left out."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        if row.get("fold") is not None:
            groups.setdefault(str(row["fold"]), []).append(row)
    return {fold: groups[fold] for fold in sorted(groups, key=_natural_key)}


def fold_table(rows: Sequence[Row], target: str) -> list[dict[str, Any]]:
    """MAE per fold over its scored rows (n = scored rows of the fold)."""
    table = []
    for fold, subset in _by_fold(rows).items():
        true, pred = _pairs(subset, target)
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
        "precision": _fraction(tp, tp + fp),
        "recall": _fraction(tp, tp + fn),
        "false_accept_rate": _fraction(fn, tp + fn),
        "false_reject_rate": _fraction(fp, fp + tn),
    }


def _count_failures(unscored: Iterable[Row]) -> dict[str, int]:
    """Unscored label rows by status (every failure status listed, 0 when absent); an "ok"
    row without a usable prediction is counted as ``no_prediction``."""
    counts = dict.fromkeys(FAILURE_STATUSES, 0)
    for row in unscored:
        key = NO_PREDICTION if row.get("status") == "ok" else str(row.get("status"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def _epsilon(label_rows: Sequence[Row], target: str) -> dict[str, Any]:
    """Mean epsilon-error over every label row with an ``age_std``; unscored rows score 1."""
    if target not in EPSILON_TARGETS:
        return {"epsilon_error": None, "n_epsilon": 0}
    with_std = [r for r in label_rows if _finite(r.get("age_std")) is not None]
    if not with_std:
        return {"epsilon_error": None, "n_epsilon": 0}
    scored = [r for r in with_std if is_scored(r, target)]
    e = epsilon_errors(
        np.array([float(r["pred_age"]) for r in scored], dtype=float),
        np.array([true_value(r, target) for r in scored], dtype=float),
        np.array([float(r["age_std"]) for r in scored], dtype=float),
    )
    total = float(np.sum(e)) + (len(with_std) - len(scored))
    return {"epsilon_error": total / len(with_std), "n_epsilon": len(with_std)}


# --- the entry points ----------------------------------------------------------------------


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
    true, pred = _pairs(label_rows, target)
    err = pred - true
    n_rows, n_scored = len(label_rows), int(err.size)
    cs_curve = [cumulative_score(err, level) for level in range(CS_CURVE_MAX + 1)]
    folds = fold_table(label_rows, target)
    fold_maes = [f["mae"] for f in folds if f["mae"] is not None]
    return {
        "target": target,
        "n_rows": n_rows,
        "n_scored": n_scored,
        "n_failed": _count_failures(r for r in label_rows if not is_scored(r, target)),
        "coverage": _fraction(n_scored, n_rows),
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
        **_epsilon(label_rows, target),
        "by_band": band_table(true, pred, bands),
        "by_attribute": attribute_table(label_rows, target),
        "by_fold": folds,
        "fold_mae_mean": _float(statistics.fmean(fold_maes)) if fold_maes else None,
        "fold_mae_std": sample_std(fold_maes),
        "under_age": under_age_rates(true, pred, under_age),
    }


# --- age groups (Adience) --------------------------------------------------------------------


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
    age = _finite(row.get("pred_age"))
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
    return _float(np.mean(np.abs(pred - true) <= off)) if true.size else None


def _group_folds(rows: Sequence[Row], groups: Sequence[Group]) -> dict[str, Any]:
    """Accuracy and one-off per fold, and their mean and sample std over folds."""
    folds: list[dict[str, Any]] = []
    for fold, subset in _by_fold(rows).items():
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
        result[f"{name}_fold_mean"] = _float(statistics.fmean(values)) if values else None
        result[f"{name}_fold_std"] = sample_std(values)
    return result


def _midpoint_errors(rows: Sequence[Row], groups: Sequence[Group]) -> np.ndarray:
    """pred_age - midpoint of the true group, over scored rows that have a pred_age."""
    return np.array(
        [
            float(r["pred_age"]) - sum(groups[_true_group(r, groups)]) / 2.0
            for r in rows
            if _is_group_scored(r, groups) and _finite(r.get("pred_age")) is not None
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
        "n_failed": _count_failures(r for r in label_rows if not _is_group_scored(r, bounds)),
        "coverage": _fraction(int(true.size), len(label_rows)),
        "accuracy": _accuracy(true, pred, 0),
        "accuracy_ci": bootstrap_mean_ci(correct, n_boot=n_boot, seed=seed, confidence=confidence),
        "confidence": confidence,
        "one_off": _accuracy(true, pred, 1),
        **_group_folds(label_rows, bounds),
        "confusion": confusion.tolist(),
        "mae_midpoint": mean_absolute_error(mid_err),
        "n_midpoint": int(mid_err.size),
    }
