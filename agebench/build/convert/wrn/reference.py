"""The gate's reference for the WRN: the Keras layer list of ``topology`` evaluated the way
TensorFlow does, in float64 NumPy on NHWC input. It shares nothing with the PyTorch rebuild
but the TensorFlow arithmetic of :mod:`agebench.build.convert.tf_ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from agebench.build.convert.tf_ops import conv2d_nhwc, same_output, same_pads, softmax
from agebench.build.convert.wrn.topology import (
    AGE_OUTPUT,
    BN_EPSILON,
    GENDER_OUTPUT,
    KerasLayer,
    infer_architecture,
)


def avg_pool_same(x: np.ndarray, pool: int, stride: int, exclude_pad: bool = True) -> np.ndarray:
    """TensorFlow AvgPool 'same': each average over the window's pixels inside the map."""
    n, h, w, c = x.shape
    top, bottom = same_pads(h, pool, stride)
    left, right = same_pads(w, pool, stride)
    oh, ow = same_output(h, stride), same_output(w, stride)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    inside = np.pad(np.ones((h, w)), ((top, bottom), (left, right)))
    sums = np.zeros((n, oh, ow, c))
    counts = np.zeros((oh, ow))
    for i in range(pool):
        for j in range(pool):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            cols = slice(j, j + stride * (ow - 1) + 1, stride)
            sums += xp[:, rows, cols]
            counts += inside[rows, cols]
    if not exclude_pad:
        counts = np.full_like(counts, pool * pool)
    return sums / counts[None, :, :, None]


def numpy_reference(
    weights: Mapping[str, np.ndarray],
    x_nhwc: np.ndarray,
    *,
    batch: int = 4,
    _exclude_pad: bool = True,
) -> dict[str, np.ndarray]:
    """The Keras model's forward pass in NumPy (float64): NHWC 0..255 BGR in, probabilities out.

    Walks ``keras_topology`` layer by layer, as Keras would evaluate the saved graph; shares
    nothing with the PyTorch module. Slow (about a second per image for WRN-16-8 on two
    cores): it is the gate's reference, run on a few images.
    """
    arch = infer_architecture(weights)
    x_nhwc = np.asarray(x_nhwc)
    expect = (arch.image_size, arch.image_size, 3)
    if x_nhwc.ndim != 4 or x_nhwc.shape[1:] != expect:
        raise ValueError(
            f"expected an (N, {', '.join(map(str, expect))}) batch, got {x_nhwc.shape}"
        )
    layers = arch.topology()
    gender, age = [], []
    for start in range(0, len(x_nhwc), batch):
        chunk = x_nhwc[start : start + batch]
        values: dict[str, np.ndarray] = {}
        for layer in layers:
            step = _Step(layer, [values[name] for name in layer.inbound], weights, _exclude_pad)
            values[layer.name] = _LAYER_FORWARD[layer.kind](step, chunk)
        gender.append(values[arch.heads[0]])
        age.append(values[arch.heads[1]])
    return {AGE_OUTPUT: np.concatenate(age), GENDER_OUTPUT: np.concatenate(gender)}


class _Step:
    """One layer's evaluation: its inputs and its weights in float64."""

    def __init__(
        self,
        layer: KerasLayer,
        args: list[np.ndarray],
        weights: Mapping[str, np.ndarray],
        exclude_pad: bool,
    ) -> None:
        self.layer, self.args, self.weights, self.exclude_pad = layer, args, weights, exclude_pad

    def w(self, param: str) -> np.ndarray:
        return np.asarray(self.weights[f"{self.layer.name}/{param}"], dtype=np.float64)


def _conv(s: _Step, _x: np.ndarray) -> np.ndarray:
    kernel = s.w("kernel")
    stride = s.layer.params["stride"]
    height, width = s.args[0].shape[1:3]
    pads = (*same_pads(height, kernel.shape[0], stride), *same_pads(width, kernel.shape[1], stride))
    return conv2d_nhwc(s.args[0], kernel, strides=(stride, stride), pads=pads)


def _batchnorm(s: _Step, _x: np.ndarray) -> np.ndarray:
    scale = s.w("gamma") / np.sqrt(s.w("moving_variance") + BN_EPSILON)
    return (s.args[0] - s.w("moving_mean")) * scale + s.w("beta")


def _avg_pool(s: _Step, _x: np.ndarray) -> np.ndarray:
    return avg_pool_same(s.args[0], s.layer.params["pool"], s.layer.params["stride"], s.exclude_pad)


#: Keras layer class -> its float64 forward (the step, the batch fed to the model)
_LAYER_FORWARD: dict[str, Callable[[_Step, np.ndarray], np.ndarray]] = {
    "InputLayer": lambda s, x: x.astype(np.float64),
    "Conv2D": _conv,
    "BatchNormalization": _batchnorm,
    "Activation": lambda s, x: np.maximum(s.args[0], 0.0),  # topology: only relu
    "Add": lambda s, x: s.args[0] + s.args[1],
    "AveragePooling2D": _avg_pool,
    "Flatten": lambda s, x: s.args[0].reshape(len(s.args[0]), -1),  # NHWC: H, W, C order
    "Dense": lambda s, x: softmax(s.args[0] @ s.w("kernel")),
}
