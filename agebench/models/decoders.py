"""Turn a model head's raw output into ages (or labels), one vectorised call per batch.

Every decoder returns ``Decoded``: per-face ``fields`` (the values people read: ``age``,
``age_std``, ``age_group``, ``gender``...) and per-face ``raw`` arrays (the evidence behind
them, written only with ``--save-raw``). The ``age_std`` of a decoder that has no
distribution is NaN, so that downstream code never has to branch on the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agebench.core.errors import ManifestError
from agebench.core.registry import Registry

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Decoded:
    fields: dict[str, np.ndarray]
    raw: dict[str, np.ndarray] = field(default_factory=dict)


class Decoder:
    """Base class: ``decode`` takes an (N, ...) output array for N faces."""

    #: what the head estimates; "age" heads feed the metrics, others are reported beside them
    task: str = "age"

    def decode(self, output: np.ndarray) -> Decoded:
        raise NotImplementedError


DECODERS: Registry[Callable[..., Decoder]] = Registry("decoder")


def build_decoder(kind: str, params: Params, *, task: str, base_dir: Path) -> Decoder:
    """Construct a decoder from manifest params; bad params become ManifestErrors."""
    factory = DECODERS.get(kind)
    try:
        decoder = factory(task=task, base_dir=base_dir, **params)
    except TypeError as error:
        raise ManifestError(f"decoder {kind!r}: bad parameters: {error}") from error
    except ValueError as error:
        raise ManifestError(f"decoder {kind!r}: {error}") from error
    return decoder


def _activation(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda x: x,
    "softmax": softmax,
    "sigmoid": sigmoid,
}


def _as_2d(output: np.ndarray, width: int | None, what: str) -> np.ndarray:
    out = np.asarray(output, dtype=np.float64)
    out = out.reshape(out.shape[0], -1)
    if width is not None and out.shape[1] != width:
        raise ValueError(
            f"{what}: model output has {out.shape[1]} values per face, expected {width}"
        )
    return out


def _weighted_std(probs: np.ndarray, values: np.ndarray, mean: np.ndarray) -> np.ndarray:
    var = (probs * (values[None, :] - mean[:, None]) ** 2).sum(axis=1)
    return np.sqrt(np.maximum(var, 0.0))


def _bin_values(
    bins: Sequence[float] | None, start: float | None, count: int | None, step: float
) -> np.ndarray:
    if bins is not None:
        values = np.asarray(bins, dtype=np.float64)
    elif start is not None and count is not None:
        values = start + step * np.arange(count, dtype=np.float64)
    else:
        raise ValueError("give either 'bins' or 'start' with 'count'")
    if values.ndim != 1 or values.size < 2:
        raise ValueError("needs at least two bin values")
    return values


@DECODERS.decorator("expectation")
class ExpectationDecoder(Decoder):
    """DEX / Mean-Variance: the age is the expected value of a distribution over age bins."""

    def __init__(
        self,
        *,
        task: str,
        base_dir: Path,
        bins: Sequence[float] | None = None,
        start: float | None = None,
        count: int | None = None,
        step: float = 1.0,
        activation: str = "none",
    ) -> None:
        self.task = task
        self.bins = _bin_values(bins, start, count, step)
        self.activation = _activation(activation)

    def decode(self, output: np.ndarray) -> Decoded:
        probs = self.activation(_as_2d(output, self.bins.size, "expectation"))
        age = probs @ self.bins
        std = _weighted_std(probs, self.bins, age)
        return Decoded({"age": age, "age_std": std}, {"probabilities": probs})


@DECODERS.decorator("regression")
class RegressionDecoder(Decoder):
    """Direct regression: ``age = output * scale + offset``.

    UTKFace-style models often predict age / 116, hence scale 116.
    """

    def __init__(
        self,
        *,
        task: str,
        base_dir: Path,
        scale: float = 1.0,
        offset: float = 0.0,
        clip: Sequence[float] | None = None,
    ) -> None:
        self.task = task
        self.scale = float(scale)
        self.offset = float(offset)
        if clip is not None and (len(clip) != 2 or clip[0] >= clip[1]):
            raise ValueError("'clip' must be [low, high] with low < high")
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    def decode(self, output: np.ndarray) -> Decoded:
        value = _as_2d(output, 1, "regression")[:, 0]
        age = value * self.scale + self.offset
        if self.clip is not None:
            age = np.clip(age, *self.clip)
        return Decoded({"age": age, "age_std": np.full_like(age, np.nan)}, {"output": value})


@DECODERS.decorator("ordinal")
class OrdinalDecoder(Decoder):
    """CORAL / CORN: K-1 binary rank outputs; the rank is how many exceed the threshold.

    CORAL's outputs are P(y > k) directly; CORN's are conditional, P(y > k | y > k-1), and
    become unconditional by a cumulative product. The spread comes from the implied
    distribution P(y = k) = P(y > k-1) - P(y > k).
    """

    def __init__(
        self,
        *,
        task: str,
        base_dir: Path,
        mode: str = "coral",
        threshold: float = 0.5,
        start: float = 0.0,
        step: float = 1.0,
        activation: str = "sigmoid",
        num_ranks: int | None = None,
    ) -> None:
        if mode not in ("coral", "corn"):
            raise ValueError(f"mode {mode!r} is not 'coral' or 'corn'")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold {threshold} is not strictly between 0 and 1")
        self.task = task
        self.mode = mode
        self.threshold = float(threshold)
        self.start = float(start)
        self.step = float(step)
        self.activation = _activation(activation)
        self.num_ranks = num_ranks

    def decode(self, output: np.ndarray) -> Decoded:
        width = None if self.num_ranks is None else self.num_ranks - 1
        probs = self.activation(_as_2d(output, width, "ordinal"))
        if self.mode == "corn":
            probs = np.cumprod(probs, axis=1)
        above = probs > self.threshold
        ranks = above.sum(axis=1)
        age = self.start + self.step * ranks
        ones = np.ones((probs.shape[0], 1))
        zeros = np.zeros((probs.shape[0], 1))
        # P(y > k) must not increase with k: clip, so a non-monotone CORAL output still
        # gives a distribution
        survival = np.minimum.accumulate(np.hstack([ones, probs, zeros]), axis=1)
        pmf = survival[:, :-1] - survival[:, 1:]
        values = self.start + self.step * np.arange(pmf.shape[1], dtype=np.float64)
        mean = pmf @ values
        std = _weighted_std(pmf, values, mean)
        raw = {
            "rank_probabilities": probs,
            "threshold": np.full(probs.shape[0], self.threshold),
            "ranks_above_threshold": above.astype(np.int8),
            "rank": ranks,
        }
        return Decoded({"age": age.astype(np.float64), "age_std": std}, raw)


@DECODERS.decorator("groups")
class AgeGroupDecoder(Decoder):
    """Adience-style age ranges: report the most probable group and its midpoint in years."""

    def __init__(
        self,
        *,
        task: str,
        base_dir: Path,
        groups: Sequence[Sequence[float]],
        labels: Sequence[str] | None = None,
        activation: str = "softmax",
    ) -> None:
        bounds = np.asarray(groups, dtype=np.float64)
        if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] < 2:
            raise ValueError("'groups' must be a list of at least two [low, high] ranges")
        if np.any(bounds[:, 0] > bounds[:, 1]):
            raise ValueError("every group needs low <= high")
        if labels is not None and len(labels) != len(bounds):
            raise ValueError(f"{len(labels)} labels for {len(bounds)} groups")
        self.task = task
        self.bounds = bounds
        self.midpoints = bounds.mean(axis=1)
        self.labels = np.asarray(
            labels if labels is not None else [f"{lo:g}-{hi:g}" for lo, hi in bounds], dtype=object
        )
        self.activation = _activation(activation)

    def decode(self, output: np.ndarray) -> Decoded:
        probs = self.activation(_as_2d(output, len(self.bounds), "groups"))
        index = probs.argmax(axis=1)
        age = self.midpoints[index]
        std = _weighted_std(probs, self.midpoints, probs @ self.midpoints)
        fields = {
            "age": age,
            "age_std": std,
            "age_group": self.labels[index],
            "age_group_index": index,
            "age_group_probability": probs[np.arange(len(index)), index],
        }
        return Decoded(fields, {"probabilities": probs})


@DECODERS.decorator("prototype")
class PrototypeDecoder(Decoder):
    """Metric learning: the age of the prototype nearest the embedding by mean L1 distance.

    The prototype table ships with the model as ``.npz`` (``ages`` (A,), ``prototypes`` (A, D));
    the spread is the std of a softmax over negative distances divided by ``temperature``.
    """

    def __init__(
        self,
        *,
        task: str,
        base_dir: Path,
        prototypes: str,
        temperature: float = 1.0,
        sha256: str | None = None,
    ) -> None:
        from agebench.models.hashing import verify_sha256

        path = (base_dir / prototypes).resolve()
        if not path.is_file():
            raise ValueError(f"prototype table {path} does not exist")
        if sha256 is not None:
            verify_sha256(path, sha256)
        with np.load(path) as table:
            if "ages" not in table or "prototypes" not in table:
                raise ValueError(f"{path}: needs arrays 'ages' and 'prototypes'")
            self.ages = np.asarray(table["ages"], dtype=np.float64).reshape(-1)
            self.prototypes = np.asarray(table["prototypes"], dtype=np.float64)
        if self.prototypes.ndim != 2 or self.prototypes.shape[0] != self.ages.size:
            raise ValueError(f"{path}: 'prototypes' must be (len(ages), D)")
        if temperature <= 0:
            raise ValueError("'temperature' must be positive")
        self.task = task
        self.temperature = float(temperature)

    def decode(self, output: np.ndarray) -> Decoded:
        emb = _as_2d(output, self.prototypes.shape[1], "prototype")
        dist = np.abs(emb[:, None, :] - self.prototypes[None, :, :]).mean(axis=2)
        nearest = dist.argmin(axis=1)
        age = self.ages[nearest]
        weights = softmax(-dist / self.temperature)
        std = _weighted_std(weights, self.ages, weights @ self.ages)
        return Decoded({"age": age, "age_std": std}, {"distances": dist, "nearest": nearest})


@DECODERS.decorator("classification")
class ClassificationDecoder(Decoder):
    """A categorical extra head such as gender: the label and its probability."""

    def __init__(
        self,
        *,
        task: str,
        base_dir: Path,
        labels: Sequence[str],
        activation: str = "softmax",
    ) -> None:
        if len(labels) < 2:
            raise ValueError("'labels' needs at least two entries")
        self.task = task
        self.labels = np.asarray(list(labels), dtype=object)
        self.activation = _activation(activation)

    def decode(self, output: np.ndarray) -> Decoded:
        probs = self.activation(_as_2d(output, len(self.labels), "classification"))
        index = probs.argmax(axis=1)
        fields = {
            self.task: self.labels[index],
            f"{self.task}_probability": probs[np.arange(len(index)), index],
        }
        return Decoded(fields, {f"{self.task}_probabilities": probs})
