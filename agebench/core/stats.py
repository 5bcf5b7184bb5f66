"""Paired statistics for comparing models on the same images: every definition used by
``agebench compare`` lives here, once.

The functions are pure (no I/O, no globals) and return plain JSON-serialisable values (``int``,
``float``, ``str``, ``bool``, ``list``, ``dict``, ``None`` where a number is undefined, never
NaN). Inputs are equal-length arrays *aligned record by record*: element ``i`` of every array
is the same labelled face. Absolute errors are ``|pred - true|`` in years.

Definitions, chosen once:

- MAE difference ``A - B`` = mean(|e_A|) - mean(|e_B|) = mean(d) with d_i = |e_A,i| - |e_B,i|;
  negative when A is more accurate.
- Paired bootstrap: resample *records* (the same indices for both models) ``n_boot`` times; the
  CI is the percentile interval of the resampled differences (``paired_bootstrap_mae_diff``).
- Wilcoxon signed-rank test on the paired absolute errors, two-sided, zero differences dropped
  (Wilcoxon's original treatment, scipy's default); p = 1 when every difference is zero.
- Holm step-down adjustment of a family of p-values (``holm``).
- Ranking by MAE with groups of models that are not distinguishable (``ranking``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any, TypeVar

import numpy as np

#: two absolute errors closer than this (years) are a tie, as in ``agebench.core.metrics``
TIE_TOLERANCE = 1e-9
#: normal quantile of the Bland-Altman 95% limits of agreement
LOA_Z = 1.96
_BOOT_CHUNK = 2_000_000  # resampled values held in memory at once
T = TypeVar("T")


def _float(value: Any) -> float | None:
    """A plain Python float, or None for None/NaN/inf."""
    if value is None:
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _aligned(*arrays: Sequence[float] | np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=float).ravel() for a in arrays]
    if len({a.size for a in out}) > 1:
        sizes = ", ".join(str(a.size) for a in out)
        raise ValueError(f"paired arrays must have the same length, got {sizes}")
    return out


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


# --- bootstrap ------------------------------------------------------------------------------


def bootstrap_resampled_means(values: np.ndarray, *, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` record resamples of each row of ``values`` (shape (k, n)).

    Resample ``b`` is the index vector ``rng.integers(0, n, size=n)`` of
    ``rng = numpy.random.default_rng(seed)``, drawn in order b = 0, 1, ...; every row uses the
    same indices, which is what makes the bootstrap *paired*. Drawn in chunks to bound memory
    (numpy gives the same stream either way). Returns an array of shape (k, n_boot).
    """
    values = np.atleast_2d(np.asarray(values, dtype=float))
    k, n = values.shape
    means = np.empty((k, n_boot), dtype=float)
    if n == 0 or n_boot <= 0:
        return means[:, :0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK // max(1, n * k))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        index = rng.integers(0, n, size=(stop - start, n))
        means[:, start:stop] = values[:, index].mean(axis=2)
    return means


def percentile_ci(samples: np.ndarray, confidence: float) -> list[float] | None:
    """The ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles (linear
    interpolation) of ``samples``; None when there are none."""
    _check_confidence(confidence)
    if samples.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [100.0 * tail, 100.0 * (1.0 - tail)])
    return [float(low), float(high)]


def paired_bootstrap_mae_diff(
    err_a: Sequence[float] | np.ndarray,
    err_b: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """MAE(A) - MAE(B) with a paired percentile bootstrap CI.

    ``err_a``/``err_b`` are errors of the same records (signed or absolute: their absolute
    values are used). ``diff`` = mean|e_A| - mean|e_B|; ``ci`` = percentile interval of
    mean(|e_A[idx]|) - mean(|e_B[idx]|) over the resamples of ``bootstrap_resampled_means``;
    ``excludes_zero``: the CI lies entirely on one side of 0. Deterministic for given inputs,
    ``n_boot`` and ``seed``. ``n`` = paired records; with none, every number is None.
    """
    _check_confidence(confidence)
    a, b = (np.abs(x) for x in _aligned(err_a, err_b))
    result: dict[str, Any] = {
        "n": int(a.size),
        "mae_a": None,
        "mae_b": None,
        "diff": None,
        "ci": None,
        "excludes_zero": None,
        "confidence": confidence,
        "n_boot": n_boot,
        "seed": seed,
    }
    if a.size == 0:
        return result
    means = bootstrap_resampled_means(np.vstack([a, b]), n_boot=n_boot, seed=seed)
    ci = percentile_ci(means[0] - means[1], confidence)
    result |= {
        "mae_a": _float(a.mean()),
        "mae_b": _float(b.mean()),
        "diff": _float(a.mean() - b.mean()),
        "ci": ci,
        "excludes_zero": None if ci is None else bool(ci[0] > 0.0 or ci[1] < 0.0),
    }
    return result


# --- tests and descriptive paired statistics ----------------------------------------------------


def wilcoxon_abs_errors(
    err_a: Sequence[float] | np.ndarray, err_b: Sequence[float] | np.ndarray
) -> dict[str, Any]:
    """Wilcoxon signed-rank test of |e_A| against |e_B| (two-sided).

    Calls ``scipy.stats.wilcoxon(|e_A|, |e_B|, zero_method="wilcox",
    alternative="two-sided", method="auto")``: records where both errors are equal are dropped
    (``n_nonzero`` counts the others), scipy picks the exact distribution for small samples and
    the normal approximation otherwise. The null hypothesis is that the differences
    |e_A| - |e_B| are symmetric about 0 (neither model tends to be closer), so this is a test
    of the typical, not the mean, difference. When every difference is zero, ``p`` = 1
    (nothing distinguishes the models) and ``statistic`` = 0; with no records, both are None.
    """
    a, b = (np.abs(x) for x in _aligned(err_a, err_b))
    diff = a - b
    nonzero = int(np.count_nonzero(diff))
    result: dict[str, Any] = {
        "n": int(a.size),
        "n_nonzero": nonzero,
        "statistic": None,
        "p": None,
        "zero_method": "wilcox",
        "alternative": "two-sided",
        "note": None,
    }
    if a.size == 0:
        return result
    if nonzero == 0:
        return result | {"statistic": 0.0, "p": 1.0, "note": "all differences are zero"}
    from scipy.stats import wilcoxon

    test = wilcoxon(a, b, zero_method="wilcox", alternative="two-sided", method="auto")
    return result | {"statistic": _float(test.statistic), "p": _float(test.pvalue)}


def closer_shares(
    err_a: Sequence[float] | np.ndarray,
    err_b: Sequence[float] | np.ndarray,
    tolerance: float = TIE_TOLERANCE,
) -> dict[str, Any]:
    """How often each model is the closer one: A closer when |e_A| < |e_B| - tolerance, B
    closer when |e_B| < |e_A| - tolerance, a tie otherwise. Counts and shares of ``n``."""
    a, b = (np.abs(x) for x in _aligned(err_a, err_b))
    n = int(a.size)
    a_closer = int(np.sum(a < b - tolerance))
    b_closer = int(np.sum(b < a - tolerance))
    ties = n - a_closer - b_closer
    share = (lambda c: c / n) if n else (lambda c: None)
    return {
        "n": n,
        "a_closer": a_closer,
        "b_closer": b_closer,
        "ties": ties,
        "share_a_closer": share(a_closer),
        "share_b_closer": share(b_closer),
        "share_ties": share(ties),
    }


def agreement(
    pred_a: Sequence[float] | np.ndarray, pred_b: Sequence[float] | np.ndarray
) -> dict[str, Any]:
    """How much two models agree with each other, whatever the truth.

    - ``pearson_r`` of the predictions (None below 2 records or when either is constant);
    - ``mean_abs_diff`` = mean |pred_A - pred_B|;
    - Bland-Altman: d = pred_A - pred_B, ``ba_mean_diff`` = mean d, ``ba_sd_diff`` = sample
      std of d (ddof=1), ``ba_loa`` = mean d -+ 1.96 sd (the 95% limits of agreement, None
      below 2 records).
    """
    a, b = _aligned(pred_a, pred_b)
    n = int(a.size)
    result: dict[str, Any] = {
        "n": n,
        "pearson_r": None,
        "mean_abs_diff": None,
        "ba_mean_diff": None,
        "ba_sd_diff": None,
        "ba_loa": None,
    }
    if n == 0:
        return result
    d = a - b
    result["mean_abs_diff"] = _float(np.mean(np.abs(d)))
    result["ba_mean_diff"] = _float(np.mean(d))
    if n >= 2:
        sd = float(np.std(d, ddof=1))
        result["ba_sd_diff"] = _float(sd)
        mean = float(np.mean(d))
        result["ba_loa"] = [mean - LOA_Z * sd, mean + LOA_Z * sd]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            result["pearson_r"] = _float(np.corrcoef(a, b)[0, 1])
    return result


# --- multiple comparisons and ranking -----------------------------------------------------------


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m p-values that are not None sorted ascending, p_(1) <= ... <= p_(m), the
    adjusted value is p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting where
    p~ < alpha controls the family-wise error rate at alpha. None stays None (not counted in m).
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * float(p)))
        adjusted[i] = running
    return adjusted


def ranking(
    maes: Mapping[str, float | None],
    pvalues: Mapping[tuple[str, str], float | None],
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Models ranked by MAE, with the groups that the paired tests cannot tell apart.

    ``maes``: model -> MAE (on the same records); ``pvalues``: (model, model) -> p-value of
    the pair, already adjusted for multiple comparisons (either key order; a missing or None
    p counts as not significant). Models are sorted by MAE (None last; ties by name).

    - ``order``: [{rank, model, mae, p_to_next, significant_to_next, groups}], where
      ``significant_to_next`` says whether this model differs from the next one (p < alpha);
      rank 1 is the lowest MAE.
    - ``groups``: the maximal runs of consecutive models (in rank order) in which *no* pair
      differs (all p >= alpha), each given a letter ``a``, ``b``, ...; a model is in every group
      whose letter it carries, and two models sharing a letter are not distinguishable.
      (The homogeneous subsets of a post-hoc test; groups may overlap when significance is
      not transitive: A ~ B, B ~ C but A != C gives groups {A, B} and {B, C}.)
    """

    def p_of(a: str, b: str) -> float | None:
        p = pvalues.get((a, b))
        return pvalues.get((b, a)) if p is None else p

    def differs(a: str, b: str) -> bool:
        p = p_of(a, b)
        return p is not None and p < alpha

    names = sorted(maes, key=lambda m: (maes[m] is None, maes[m] or 0.0, m))
    groups: list[list[str]] = []
    covered_to = -1
    for start in range(len(names)):
        stop = start
        while stop + 1 < len(names) and not any(
            differs(names[i], names[stop + 1]) for i in range(start, stop + 1)
        ):
            stop += 1
        if stop > covered_to:  # not inside an earlier, longer run: a new maximal group
            groups.append(names[start : stop + 1])
            covered_to = stop
    letters = [_letter(i) for i in range(len(groups))]
    order = []
    for rank, name in enumerate(names, start=1):
        nxt = names[rank] if rank < len(names) else None
        order.append(
            {
                "rank": rank,
                "model": name,
                "mae": maes[name],
                "p_to_next": None if nxt is None else p_of(name, nxt),
                "significant_to_next": None if nxt is None else differs(name, nxt),
                "groups": "".join(
                    letter for letter, group in zip(letters, groups, strict=True) if name in group
                ),
            }
        )
    return {
        "alpha": alpha,
        "order": order,
        "groups": [
            {"letter": letter, "models": group}
            for letter, group in zip(letters, groups, strict=True)
        ],
    }


def _letter(index: int) -> str:
    """a, b, ..., z, aa, ab, ..."""
    text = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        text = chr(ord("a") + rest) + text
    return text


def all_pairs(items: Iterable[T]) -> list[tuple[T, T]]:
    """Every unordered pair (A, B) with A before B in ``items``."""
    return list(combinations(items, 2))
