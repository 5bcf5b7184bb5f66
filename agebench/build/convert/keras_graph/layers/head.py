"""Activation, merge and head layers: ReLU, Add, GlobalAveragePooling2D and Dense, checked and
evaluated in float64."""

from __future__ import annotations

import numpy as np

from agebench.build.convert.keras_graph.archive import KerasGraphError
from agebench.build.convert.keras_graph.ops import (
    NUMPY_ACTIVATIONS,
    Checked,
    LayerCall,
    LayerRule,
    Op,
    activation_name,
    number,
    weights_like,
)


def _check_relu(call: LayerCall) -> Checked:
    name, config = call.name, call.config
    threshold = number(config.get("threshold", 0.0) or 0.0, name, "threshold")
    number(config.get("negative_slope", 0.0) or 0.0, name, "negative_slope")
    max_value = config.get("max_value")
    if max_value is not None and number(max_value, name, "max_value") < 0:
        raise KerasGraphError(f"{name}: negative max_value")
    if threshold != 0.0:
        raise KerasGraphError(f"{name}: ReLU threshold {threshold}; only 0 is supported")
    weights_like(name, call.weights, [])
    return Checked(call.shape)


def _check_add(call: LayerCall) -> Checked:
    if len(call.inputs) < 2 or any(s != call.shape for s in call.in_shapes):
        raise KerasGraphError(
            f"{call.name}: Add of shapes {list(call.in_shapes)}; equal shapes needed"
        )
    weights_like(call.name, call.weights, [])
    return Checked(call.shape)


def _check_global_average(call: LayerCall) -> Checked:
    channels = call.shape[2]
    weights_like(call.name, call.weights, [])
    return Checked((1, 1, channels) if call.config.get("keepdims") else (channels,))


def _check_dense(call: LayerCall) -> Checked:
    name, config, shape = call.name, call.config, call.shape
    if len(shape) == 3:
        raise KerasGraphError(f"{name}: Dense on an image tensor {shape}; refused")
    units = int(config.get("units", 0))
    if units < 1:
        raise KerasGraphError(f"{name}: units {units}")
    activation_name(config, name)
    use_bias = bool(config.get("use_bias", True))
    weights_like(name, call.weights, [(shape[0], units)] + ([(units,)] if use_bias else []))
    return Checked((units,))


def _relu(op: Op, args: list[np.ndarray]) -> np.ndarray:
    x = args[0]
    max_value = op.config.get("max_value")
    slope = float(op.config.get("negative_slope", 0.0) or 0.0)
    y = np.maximum(x, 0.0) if max_value is None else np.clip(x, 0.0, float(max_value))
    return y + slope * np.minimum(x, 0.0)


def _dense(op: Op, args: list[np.ndarray]) -> np.ndarray:
    y = args[0] @ op.weights[0].astype(np.float64)
    if len(op.weights) > 1:
        y = y + op.weights[1]
    return NUMPY_ACTIVATIONS[activation_name(op.config, op.name)](y)


RULES: dict[str, LayerRule] = {
    "ReLU": LayerRule(_check_relu, _relu),
    "Add": LayerRule(_check_add, lambda op, args: np.sum(args, axis=0), many_inputs=True),
    "GlobalAveragePooling2D": LayerRule(
        _check_global_average,
        lambda op, args: args[0].mean(axis=(1, 2), keepdims=bool(op.config.get("keepdims"))),
        needs_image=True,
    ),
    "Dense": LayerRule(_check_dense, _dense),
}
