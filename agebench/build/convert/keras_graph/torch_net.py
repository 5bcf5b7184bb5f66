"""The parsed graph rebuilt as a PyTorch module working in NCHW, for export.

BatchNormalization is folded into the convolution before it where that convolution is linear
and read by nothing else; TensorFlow's uneven 'same' padding becomes an explicit ``F.pad``,
which the ONNX passes fold back into the ``Conv``. torch is imported when a module is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from agebench.build.convert.keras_graph.layers.norm import bn_affine, rescaling_affine
from agebench.build.convert.keras_graph.ops import KerasGraph, Op, activation_name, ints
from agebench.build.convert.tf_ops import fold_affine_into_conv, oihw_from_hwio


def build_torch_module(graph: KerasGraph, *, fold_batchnorm: bool = True) -> Any:
    """An ``nn.Module`` taking (N, C, H, W) float32 and computing the graph in NCHW.

    With ``fold_batchnorm``, a BatchNormalization whose only input is a linear convolution
    read by nothing else is folded into that convolution's weights (in float64).
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    def activation(name: str, channel_dim: int) -> Callable[[Any], Any]:
        return {
            "linear": lambda x: x,
            "relu": F.relu,
            "relu6": F.relu6,
            "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
            "softmax": lambda x: torch.softmax(x, dim=channel_dim),
        }[name]

    def tensor(array: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    class Conv(nn.Module):
        def __init__(self, op: Op, bn: Op | None) -> None:
            super().__init__()
            kernel = op.weights[0].astype(np.float64)
            kh, kw = kernel.shape[:2]
            if op.kind == "Conv2D":
                groups = int(op.config.get("groups", 1))
                weight = oihw_from_hwio(kernel)  # (out, in/groups, kh, kw)
            else:
                groups = kernel.shape[2]  # out channel c * multiplier + m, as torch's groups
                weight = kernel.transpose(2, 3, 0, 1).reshape(-1, 1, kh, kw)
            out_channels = weight.shape[0]
            bias = op.weights[1].astype(np.float64) if len(op.weights) > 1 else None
            if bn is not None:
                weight, bias = fold_affine_into_conv(weight, bias, *bn_affine(bn))
            top, bottom, left, right = op.pads
            self.pad = None
            padding: tuple[int, int] = (0, 0)
            if top == bottom and left == right:
                padding = (top, left)
            else:
                self.pad = (left, right, top, bottom)
            self.conv = nn.Conv2d(
                weight.shape[1] * groups,
                out_channels,
                (kh, kw),
                stride=ints(op.config.get("strides", 1), 2, op.name),
                padding=padding,
                dilation=ints(op.config.get("dilation_rate", 1), 2, op.name),
                groups=groups,
                bias=bias is not None,
            )
            with torch.no_grad():
                self.conv.weight.copy_(tensor(weight))
                if bias is not None:
                    self.conv.bias.copy_(tensor(bias))
            self.act = activation(activation_name(op.config, op.name), 1)

        def forward(self, x: Any) -> Any:
            if self.pad is not None:
                x = F.pad(x, self.pad)
            return self.act(self.conv(x))

    class Affine(nn.Module):  # BatchNormalization that could not be folded, and Rescaling
        def __init__(self, scale: np.ndarray, shift: np.ndarray, rank: int) -> None:
            super().__init__()
            view = (1, -1, 1, 1) if rank == 4 else (1, -1)
            self.register_buffer("scale", tensor(np.atleast_1d(scale)).reshape(view))
            self.register_buffer("shift", tensor(np.atleast_1d(shift)).reshape(view))

        def forward(self, x: Any) -> Any:
            return x * self.scale + self.shift

    class Pad(nn.Module):
        def __init__(self, pads: tuple[int, int, int, int]) -> None:
            super().__init__()
            top, bottom, left, right = pads
            self.pads = (left, right, top, bottom)

        def forward(self, x: Any) -> Any:
            return F.pad(x, self.pads)

    class ReLU(nn.Module):
        def __init__(self, config: Mapping[str, Any]) -> None:
            super().__init__()
            max_value = config.get("max_value")
            self.max_value = None if max_value is None else float(max_value)
            self.slope = float(config.get("negative_slope", 0.0) or 0.0)

        def forward(self, x: Any) -> Any:
            if self.slope == 0.0:
                if self.max_value is None:
                    return F.relu(x)
                if self.max_value == 6.0:
                    return F.relu6(x)
                return torch.clamp(x, 0.0, self.max_value)
            if self.max_value is None:
                return F.leaky_relu(x, self.slope)
            return torch.clamp(x, 0.0, self.max_value) + self.slope * torch.clamp(x, max=0.0)

    class Add(nn.Module):
        def forward(self, *xs: Any) -> Any:
            total = xs[0]
            for x in xs[1:]:
                total = total + x
            return total

    class GlobalAverage(nn.Module):
        def __init__(self, keepdims: bool) -> None:
            super().__init__()
            self.keepdims = keepdims

        def forward(self, x: Any) -> Any:
            return torch.mean(x, dim=(2, 3), keepdim=self.keepdims)

    class Dense(nn.Module):
        def __init__(self, op: Op) -> None:
            super().__init__()
            kernel = op.weights[0]
            self.linear = nn.Linear(kernel.shape[0], kernel.shape[1], bias=len(op.weights) > 1)
            with torch.no_grad():
                self.linear.weight.copy_(tensor(kernel.T))
                if len(op.weights) > 1:
                    self.linear.bias.copy_(tensor(op.weights[1]))
            self.act = activation(activation_name(op.config, op.name), -1)

        def forward(self, x: Any) -> Any:
            return self.act(self.linear(x))

    #: Keras layer class -> its module (given the op, and the BatchNormalization folded into it)
    modules: dict[str, Callable[[Op, Op | None], nn.Module]] = {
        "Conv2D": Conv,
        "DepthwiseConv2D": Conv,
        "Rescaling": lambda op, _: Affine(*rescaling_affine(op), len(op.in_shapes[0]) + 1),
        "BatchNormalization": lambda op, _: Affine(*bn_affine(op), len(op.in_shapes[0]) + 1),
        "ZeroPadding2D": lambda op, _: Pad(op.pads),
        "ReLU": lambda op, _: ReLU(op.config),
        "Add": lambda op, _: Add(),
        "GlobalAveragePooling2D": lambda op, _: GlobalAverage(bool(op.config.get("keepdims"))),
        "Dense": lambda op, _: Dense(op),
    }

    consumers = graph.consumers()
    producer = {op.name: op for op in graph.ops}
    folded: dict[str, Op] = {}  # conv name -> its BatchNormalization
    if fold_batchnorm:
        for op in graph.ops:
            source = producer.get(op.inputs[0])
            if (
                op.kind == "BatchNormalization"
                and source is not None
                and source.kind in ("Conv2D", "DepthwiseConv2D")
                and activation_name(source.config, source.name) == "linear"
                and consumers[source.name] == 1
            ):
                folded[source.name] = op

    class KerasGraphModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList()
            self.plan: list[tuple[int, tuple[int, ...]]] = []
            slots = {graph.input_name: 0}
            folded_bn = {bn.name: conv for conv, bn in folded.items()}
            for op in graph.ops:
                if op.name in folded_bn:
                    slots[op.name] = slots[folded_bn[op.name]]
                    continue
                self.layers.append(modules[op.kind](op, folded.get(op.name)))
                self.plan.append((len(self.layers) - 1, tuple(slots[t] for t in op.inputs)))
                slots[op.name] = len(self.plan)
            self.output_slot = slots[graph.output]
            self.folded = len(folded)

        def forward(self, images: Any) -> Any:
            values = [images]
            for index, inputs in self.plan:
                values.append(self.layers[index](*[values[i] for i in inputs]))
            return values[self.output_slot]

    return KerasGraphModule().eval()
