"""Statistics of one model's errors (err = pred - true, in years), each None when undefined:
MAE, RMSE, bias, median, cumulative score, gross error rate, and the intervals and spreads
reported beside them. (Tests between models are in ``agebench.core.stats``.)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

from agebench.core.metrics.rows import json_float

#: threshold comparisons on |error| allow this many years (see the package docstring)
BOUNDARY_TOLERANCE = 1e-9
GROSS_ERROR_YEARS = 20
_BOOT_CHUNK = 2_000_000  # resampled values held in memory at once by the bootstrap


def mean_absolute_error(err: np.ndarray) -> float | None:
    """MAE = mean |pred - true|."""
    return json_float(np.mean(np.abs(err))) if err.size else None


def root_mean_squared_error(err: np.ndarray) -> float | None:
    """RMSE = sqrt(mean (pred - true)^2): weighs gross errors more than the MAE does."""
    return json_float(math.sqrt(np.mean(np.square(err)))) if err.size else None


def mean_bias(err: np.ndarray) -> float | None:
    """Bias = mean (pred - true): positive when the model makes people older than they are."""
    return json_float(np.mean(err)) if err.size else None


def median_absolute_error(err: np.ndarray) -> float | None:
    """Median |pred - true| (the mean of the two middle values for an even count)."""
    return json_float(np.median(np.abs(err))) if err.size else None


def cumulative_score(err: np.ndarray, level: float) -> float | None:
    """CS@L = fraction of scored rows with |pred - true| <= L (an error of exactly L counts)."""
    if not err.size:
        return None
    return json_float(np.mean(np.abs(err) <= level + BOUNDARY_TOLERANCE))


def gross_error_rate(err: np.ndarray, threshold: float = GROSS_ERROR_YEARS) -> float | None:
    """CE@T = fraction of scored rows with |pred - true| > T (strictly): the complement of
    CS@T, reported separately because gross errors are what a user of the model notices."""
    if not err.size:
        return None
    return json_float(np.mean(np.abs(err) > threshold + BOUNDARY_TOLERANCE))


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
    return json_float(statistics.stdev(values)) if len(values) >= 2 else None


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
