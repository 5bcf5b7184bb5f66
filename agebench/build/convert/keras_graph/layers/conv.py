"""Spatial layers: ZeroPadding2D, Conv2D and DepthwiseConv2D (channels last, TensorFlow's
'same' padding), checked and evaluated in float64."""

from __future__ import annotations

import numpy as np

from agebench.build.convert.keras_graph.archive import KerasGraphError
from agebench.build.convert.keras_graph.ops import (
    NO_PADS,
    NUMPY_ACTIVATIONS,
    Checked,
    LayerCall,
    LayerRule,
    Op,
    Shape,
    activation_name,
    ints,
    weights_like,
)
from agebench.build.convert.tf_ops import Pads, conv2d_nhwc, same_pads


def _check_zero_padding(call: LayerCall) -> Checked:
    name, shape = call.name, call.shape
    padding = call.config.get("padding", 1)
    if isinstance(padding, int) or (
        isinstance(padding, list) and len(padding) == 2 and all(isinstance(p, int) for p in padding)
    ):
        ph, pw = ints(padding, 2, f"{name}: padding")
        pads: Pads = (ph, ph, pw, pw)
    else:
        if not isinstance(padding, list) or len(padding) != 2:
            raise KerasGraphError(f"{name}: padding {padding!r}")
        top, bottom = ints(padding[0], 2, f"{name}: padding")
        left, right = ints(padding[1], 2, f"{name}: padding")
        pads = (top, bottom, left, right)
    if min(pads) < 0:
        raise KerasGraphError(f"{name}: negative padding {pads}")
    weights_like(name, call.weights, [])
    return Checked((shape[0] + pads[0] + pads[1], shape[1] + pads[2] + pads[3], shape[2]), pads)


def _check_conv(call: LayerCall) -> Checked:
    """Conv2D (with groups) and DepthwiseConv2D: geometry, padding, activation and kernel."""
    name, config = call.name, call.config
    kh, kw = ints(config.get("kernel_size"), 2, f"{name}: kernel_size")
    sh, sw = ints(config.get("strides", 1), 2, f"{name}: strides")
    dh, dw = ints(config.get("dilation_rate", 1), 2, f"{name}: dilation_rate")
    if min(kh, kw, sh, sw, dh, dw) < 1:
        raise KerasGraphError(f"{name}: non-positive kernel, stride or dilation")
    padding = config.get("padding", "valid")
    height, width, channels = call.shape
    pads = NO_PADS
    if padding == "same":
        pads = (*same_pads(height, kh, sh, dh), *same_pads(width, kw, sw, dw))
    elif padding != "valid":
        raise KerasGraphError(f"{name}: padding {padding!r}; only 'valid' and 'same'")
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    oh = (height + pads[0] + pads[1] - eh) // sh + 1
    ow = (width + pads[2] + pads[3] - ew) // sw + 1
    if oh < 1 or ow < 1:
        raise KerasGraphError(f"{name}: the kernel is larger than its {height}x{width} input")
    activation_name(config, name)
    use_bias = bool(config.get("use_bias", True))
    if call.kind == "Conv2D":
        filters = int(config.get("filters", 0))
        groups = int(config.get("groups", 1))
        if filters < 1 or groups < 1 or channels % groups or filters % groups:
            raise KerasGraphError(f"{name}: filters {filters}, groups {groups}, {channels} in")
        out_channels = filters
        kernel: Shape = (kh, kw, channels // groups, filters)
    else:
        multiplier = int(config.get("depth_multiplier", 1))
        if multiplier < 1:
            raise KerasGraphError(f"{name}: depth_multiplier {multiplier}")
        out_channels = channels * multiplier
        kernel = (kh, kw, channels, multiplier)
    weights_like(name, call.weights, [kernel] + ([(out_channels,)] if use_bias else []))
    return Checked((oh, ow, out_channels), pads)


def _zero_padding(op: Op, args: list[np.ndarray]) -> np.ndarray:
    top, bottom, left, right = op.pads
    return np.pad(args[0], ((0, 0), (top, bottom), (left, right), (0, 0)))


def _conv(op: Op, args: list[np.ndarray]) -> np.ndarray:
    out = conv2d_nhwc(
        args[0],
        op.weights[0],
        strides=ints(op.config.get("strides", 1), 2, op.name),
        dilation=ints(op.config.get("dilation_rate", 1), 2, op.name),
        pads=op.pads,
        groups=int(op.config.get("groups", 1)) if op.kind == "Conv2D" else 1,
        depthwise=op.kind == "DepthwiseConv2D",
    )
    if len(op.weights) > 1:
        out += op.weights[1]
    return NUMPY_ACTIVATIONS[activation_name(op.config, op.name)](out)


RULES: dict[str, LayerRule] = {
    "ZeroPadding2D": LayerRule(_check_zero_padding, _zero_padding, needs_image=True),
    "Conv2D": LayerRule(_check_conv, _conv, needs_image=True),
    "DepthwiseConv2D": LayerRule(_check_conv, _conv, needs_image=True),
}
