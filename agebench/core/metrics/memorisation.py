"""The memorisation signal: how much denser a model's errors are at zero than right beside
it, a sign that it has seen the test images with their labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from agebench.core.metrics.rows import fraction, json_float
from agebench.core.metrics.scalars import BOUNDARY_TOLERANCE, wilson_lower_bound

#: the memorisation signal's windows on |error|, in years (see ``memorisation_signal``)
ZERO_WINDOW = 0.5
NEIGHBOUR_WINDOW = 1.5
#: the lower confidence bound of the density ratio above which an eval gets a finding
MEMORISATION_THRESHOLD = 2.0
#: fewer errors than this within NEIGHBOUR_WINDOW of zero never raise the flag
MEMORISATION_MIN_COUNT = 30
MEMORISATION_CONFIDENCE = 0.95


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
        "share_zero": fraction(n_zero, int(err.size)),
        "share_neighbour": fraction(n_neighbour, int(err.size)),
        "ratio": json_float(2.0 * n_zero / n_neighbour) if n_neighbour else None,
        "ratio_low": json_float(ratio_low),
        "confidence": confidence,
        "threshold": threshold,
        "min_count": min_count,
        "flagged": bool(window >= min_count and ratio_low is not None and ratio_low > threshold),
    }
