"""The ChaLearn LAP epsilon-error, for apparent-age targets whose labels carry the spread of
the votes (``age_std``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agebench.core.metrics.rows import Row, finite, is_scored, true_value

#: targets that are apparent ages, for which ``age_std`` is the labels' spread (ChaLearn LAP)
EPSILON_TARGETS = frozenset({"apparent_age"})


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


def epsilon_over_labels(label_rows: Sequence[Row], target: str) -> dict[str, Any]:
    """Mean epsilon-error over every label row with an ``age_std``; unscored rows score 1."""
    if target not in EPSILON_TARGETS:
        return {"epsilon_error": None, "n_epsilon": 0}
    with_std = [r for r in label_rows if finite(r.get("age_std")) is not None]
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
