"""The Keras graph of yu4u's ``wide_resnet.py``, as data: its layers in creation order (hence
their auto-generated names), the weights each holds, and the architecture read back from them.

Everything else in the converter (the HDF5 check, the NumPy reference, the PyTorch rebuild)
derives from this one description.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agebench.core.errors import AgebenchError

BN_EPSILON = 1e-3  # Keras 2 BatchNormalization default, and what this file's config says
INPUT_NAME = "images"
AGE_OUTPUT = "age_probabilities"
GENDER_OUTPUT = "gender_probabilities"
#: the Dense layer names: Keras 2.0.6 auto-names (this file) or wide_resnet.py's later names
HEAD_NAMES = (("dense_1", "dense_2"), ("pred_gender", "pred_age"))
GENDER_UNITS, AGE_UNITS = 2, 101
POOL_SIZE = 8


class KerasH5Error(AgebenchError, ValueError):
    """The HDF5 file is not the Keras Wide ResNet this converter knows."""


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the Keras model: class, auto-generated name, inputs, and what matters."""

    kind: str
    name: str
    inbound: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


def keras_topology(
    depth: int = 16, k: int = 8, image_size: int = 64, heads: tuple[str, str] = HEAD_NAMES[0]
) -> list[KerasLayer]:
    """The layers of ``WideResNet(image_size, depth, k)()`` in creation order.

    Keras names a layer when it is constructed (``conv2d_<n>``, counted per class), so the
    creation order of wide_resnet.py is replayed here: in a block, BN, ReLU, conv, BN, ReLU,
    conv, then the shortcut conv, then the add.
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
    if k < 1 or image_size % 4:
        raise ValueError(f"need k >= 1 and an image size divisible by 4, got {k}, {image_size}")
    counters: Counter[str] = Counter()
    layers: list[KerasLayer] = []

    def add(kind: str, prefix: str, inbound: list[str], **params: Any) -> str:
        counters[prefix] += 1
        name = f"{prefix}_{counters[prefix]}"
        layers.append(KerasLayer(kind, name, tuple(inbound), params))
        return name

    def conv(x: str, filters: int, kernel: int, stride: int) -> str:
        return add("Conv2D", "conv2d", [x], filters=filters, kernel=kernel, stride=stride)

    def bn_relu(x: str) -> str:
        bn = add("BatchNormalization", "batch_normalization", [x])
        return add("Activation", "activation", [bn], activation="relu")

    x = add("InputLayer", "input", [], size=image_size)
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    x = conv(x, widths[0], 3, 1)
    for stage, first_stride in ((1, 1), (2, 2), (3, 2)):
        for block in range(n):
            n_in = widths[stage - 1] if block == 0 else widths[stage]
            n_out = widths[stage]
            stride = first_stride if block == 0 else 1
            if n_in != n_out:
                x = bn_relu(x)  # the block's input becomes BN+ReLU of it (shortcut too)
                convs = conv(x, n_out, 3, stride)
            else:
                convs = conv(bn_relu(x), n_out, 3, stride)
            convs = conv(bn_relu(convs), n_out, 3, 1)
            shortcut = conv(x, n_out, 1, stride) if n_in != n_out else x
            x = add("Add", "add", [convs, shortcut])
    x = bn_relu(x)
    x = add("AveragePooling2D", "average_pooling2d", [x], pool=POOL_SIZE, stride=1)
    x = add("Flatten", "flatten", [x])
    for name, units in zip(heads, (GENDER_UNITS, AGE_UNITS), strict=True):
        layers.append(KerasLayer("Dense", name, (x,), {"units": units}))
    return layers


@dataclass(frozen=True)
class Architecture:
    depth: int
    k: int
    image_size: int
    heads: tuple[str, str]  # (gender, age) Dense layer names

    @property
    def final_size(self) -> int:
        return self.image_size // 4

    @property
    def widths(self) -> tuple[int, int, int, int]:
        return (16, 16 * self.k, 32 * self.k, 64 * self.k)

    def topology(self) -> list[KerasLayer]:
        return keras_topology(self.depth, self.k, self.image_size, self.heads)


def param_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every weight the Keras model holds: ``"<layer>/<param>"`` -> shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    channels: dict[str, int] = {}
    flat = arch.final_size**2 * arch.widths[3]
    for layer in arch.topology():
        cin = channels.get(layer.inbound[0], 3) if layer.inbound else 3
        if layer.kind == "Conv2D":
            p = layer.params
            shapes[f"{layer.name}/kernel"] = (p["kernel"], p["kernel"], cin, p["filters"])
            channels[layer.name] = p["filters"]
        elif layer.kind == "BatchNormalization":
            for param in ("gamma", "beta", "moving_mean", "moving_variance"):
                shapes[f"{layer.name}/{param}"] = (cin,)
            channels[layer.name] = cin
        elif layer.kind == "Dense":
            shapes[f"{layer.name}/kernel"] = (flat, layer.params["units"])
        else:
            channels[layer.name] = cin
    return shapes


def infer_architecture(weights: Mapping[str, np.ndarray]) -> Architecture:
    """Depth, width, input size and head names from the weights' names and shapes."""
    layers = {key.split("/", 1)[0] for key in weights}
    heads = next((h for h in HEAD_NAMES if set(h) & layers), None)
    if heads is None:
        raise KerasH5Error(
            f"no output layers: expected Dense layers {HEAD_NAMES[0]} or {HEAD_NAMES[1]}"
        )
    absent = [f"{name}/kernel" for name in heads if f"{name}/kernel" not in weights]
    if absent:
        raise KerasH5Error(f"missing output layer weights {', '.join(absent)}")

    # a WRN-d has d conv layers (conv2d_1..conv2d_d) and d - 3 BNs; the highest index seen
    # fixes d, so that a missing layer is then reported by name
    def highest(prefix: str) -> int:
        found = [int(n.rsplit("_", 1)[1]) for n in layers if re.fullmatch(prefix + r"_\d+", n)]
        return max(found, default=0)

    seen = max(highest("conv2d"), highest("batch_normalization") + 3)
    depth = 6 * max(1, math.ceil((seen - 4) / 6)) + 4
    if "conv2d_2/kernel" not in weights:
        raise KerasH5Error("missing layer conv2d_2 (the first block's convolution)")
    width = int(weights["conv2d_2/kernel"].shape[-1])
    if width % 16:
        raise KerasH5Error(f"conv2d_2 has {width} filters, not a multiple of 16")
    k = width // 16
    flat = int(weights[f"{heads[1]}/kernel"].shape[0])
    side = math.isqrt(flat // (64 * k)) if flat % (64 * k) == 0 else 0
    if side < 2 or side * side * 64 * k != flat:
        raise KerasH5Error(f"{heads[1]} takes {flat} inputs: not a square map of {64 * k}")
    return Architecture(depth=depth, k=k, image_size=4 * side, heads=heads)
