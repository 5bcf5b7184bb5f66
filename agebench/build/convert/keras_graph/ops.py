"""The parsed model as data (``Op``, ``KerasGraph``), what a layer family registers about its
layers (``LayerRule``), and the config validators every family shares.

A layer's checks, its NumPy forward and its PyTorch module are looked up by class name in
tables (``layers.LAYERS``, ``torch_net``), never chosen by an if/elif chain, so adding a
layer type is adding one rule to its family's table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agebench.build.convert.keras_graph.archive import KerasGraphError
from agebench.build.convert.tf_ops import Pads, softmax

Shape = tuple[int, ...]  # per example, channels last: (H, W, C) or (C,)
NO_PADS: Pads = (0, 0, 0, 0)


@dataclass(frozen=True)
class Op:
    """One computing layer of the flattened graph (channels-last shapes, batch left out)."""

    name: str
    kind: str
    config: Mapping[str, Any]
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    weights: tuple[np.ndarray, ...] = ()
    #: (top, bottom, left, right) zero padding before a convolution, TensorFlow's convention
    pads: Pads = NO_PADS


@dataclass(frozen=True)
class KerasGraph:
    """The model as a flat list of ops in execution order; tensors are named by their op."""

    input_name: str
    input_shape: Shape  # (H, W, C)
    ops: tuple[Op, ...]
    output: str
    skipped: tuple[str, ...] = ()  # identity layers left out, by config path
    source: Path | None = None
    sha256: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def consumers(self) -> Counter[str]:
        counts: Counter[str] = Counter(t for op in self.ops for t in op.inputs)
        counts[self.output] += 1
        return counts


@dataclass(frozen=True)
class LayerCall:
    """A layer as the graph walk meets it: config, inputs and weights not yet checked."""

    kind: str
    name: str
    config: Mapping[str, Any]
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    weights: tuple[np.ndarray, ...]

    @property
    def shape(self) -> Shape:
        return self.in_shapes[0]


class Checked(NamedTuple):
    """What a layer's check derives from its config: its output shape and its zero padding."""

    out_shape: Shape
    pads: Pads = NO_PADS


@dataclass(frozen=True)
class LayerRule:
    """How one Keras layer class is converted.

    ``check`` refuses what this converter does not reproduce exactly and derives the output
    shape; ``forward`` is the float64 NHWC NumPy reference, written from Keras' semantics and
    independent of the PyTorch rebuild.
    """

    check: Callable[[LayerCall], Checked]
    forward: Callable[[Op, list[np.ndarray]], np.ndarray]
    #: takes an (H, W, C) image, not a vector
    needs_image: bool = False
    #: takes several tensors (Add); every other layer takes exactly one
    many_inputs: bool = False


# --- config validators every layer family shares ---------------------------------------------

ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax")

#: a Keras activation name -> its float64 NumPy function (softmax over the last axis, as Keras)
NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "softmax": softmax,
}


def ints(value: Any, n: int, what: str) -> tuple[int, ...]:
    """``n`` integers from a Keras int-or-list setting (``3`` or ``[3, 3]``)."""
    values = [value] * n if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(values, list | tuple)
        or len(values) != n
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ):
        raise KerasGraphError(f"{what}: expected {n} integers, got {value!r}")
    return tuple(values)


def weights_like(
    name: str, weights: tuple[np.ndarray, ...], shapes: Sequence[Shape]
) -> tuple[np.ndarray, ...]:
    """The weights, if their shapes are exactly those the config implies."""
    got = [w.shape for w in weights]
    if got != [tuple(s) for s in shapes]:
        raise KerasGraphError(
            f"{name}: weights have shapes {got}, the config implies {list(shapes)}"
        )
    return weights


def activation_name(config: Mapping[str, Any], name: str) -> str:
    """The layer's ``activation``, one of ``ACTIVATIONS`` (None reads as linear)."""
    activation = config.get("activation", "linear")
    if activation is None:
        return "linear"
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise KerasGraphError(
            f"{name}: activation {activation!r:.80}; supported: {', '.join(ACTIVATIONS)}"
        )
    return activation


def number(value: Any, name: str, key: str) -> float:
    """A finite number from the config (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KerasGraphError(f"{name}: {key} must be a finite number, got {value!r:.60}")
    return float(value)
