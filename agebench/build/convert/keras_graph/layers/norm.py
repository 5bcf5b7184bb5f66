"""Per-channel affine layers: Rescaling and BatchNormalization (inference statistics, on the
channel axis), checked and evaluated in float64."""

from __future__ import annotations

import numpy as np

from agebench.build.convert.keras_graph.archive import KerasGraphError
from agebench.build.convert.keras_graph.ops import (
    Checked,
    LayerCall,
    LayerRule,
    Op,
    number,
    weights_like,
)
from agebench.build.convert.tf_ops import batchnorm_affine

BN_EPSILON = 1e-3  # Keras' BatchNormalization default


def rescaling_affine(op: Op) -> tuple[np.ndarray, np.ndarray]:
    """Rescaling as ``y = x * scale + offset`` (each a number or one per channel), float64."""
    scale = np.asarray(op.config.get("scale", 1.0), dtype=np.float64)
    offset = np.asarray(op.config.get("offset", 0.0), dtype=np.float64)
    return scale, offset


def bn_affine(op: Op) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization as ``y = x * scale + shift``, float64 (no gamma: 1, no beta: 0)."""
    w = list(op.weights)
    gamma = w.pop(0) if op.config.get("scale", True) else np.ones_like(w[-1])
    beta = w.pop(0) if op.config.get("center", True) else np.zeros_like(w[-1])
    mean, var = w
    return batchnorm_affine(gamma, beta, mean, var, float(op.config.get("epsilon", BN_EPSILON)))


def _check_rescaling(call: LayerCall) -> Checked:
    for key in ("scale", "offset"):
        value = call.config.get(key, 1.0 if key == "scale" else 0.0)
        values = value if isinstance(value, list) else [value]
        for v in values:
            number(v, call.name, key)
        if len(values) not in (1, call.shape[-1]):
            raise KerasGraphError(
                f"{call.name}: {key} has {len(values)} values for {call.shape[-1]}"
            )
    weights_like(call.name, call.weights, [])
    return Checked(call.shape)


def _check_batchnorm(call: LayerCall) -> Checked:
    name, config, shape = call.name, call.config, call.shape
    axis = config.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if axis not in (-1, len(shape)):
        raise KerasGraphError(f"{name}: axis {axis!r}; only the channel (last) axis")
    number(config.get("epsilon", BN_EPSILON), name, "epsilon")
    count = 2 + bool(config.get("scale", True)) + bool(config.get("center", True))
    weights_like(name, call.weights, [(shape[-1],)] * count)
    if np.any(call.weights[-1] < 0):
        raise KerasGraphError(f"{name}: negative moving variance")
    return Checked(shape)


def _rescaling(op: Op, args: list[np.ndarray]) -> np.ndarray:
    scale, offset = rescaling_affine(op)
    return args[0] * scale + offset


def _batchnorm(op: Op, args: list[np.ndarray]) -> np.ndarray:
    """Keras' own order of operations, not the folded affine the export uses."""
    w = [a.astype(np.float64) for a in op.weights]
    gamma = w.pop(0) if op.config.get("scale", True) else 1.0
    beta = w.pop(0) if op.config.get("center", True) else 0.0
    mean, var = w
    epsilon = float(op.config.get("epsilon", BN_EPSILON))
    return (args[0] - mean) / np.sqrt(var + epsilon) * gamma + beta


RULES: dict[str, LayerRule] = {
    "Rescaling": LayerRule(_check_rescaling, _rescaling),
    "BatchNormalization": LayerRule(_check_batchnorm, _batchnorm),
}
