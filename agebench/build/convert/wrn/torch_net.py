"""yu4u's Wide ResNet rebuilt in PyTorch, for export: TensorFlow's 'same' padding reproduced
exactly, Keras weights loaded by their auto-generated names, and BatchNorms that follow a
convolution folded into it.

torch is imported when ``WideResNet`` is first asked for (``wide_resnet_class``), so importing
the converter (for MANIFEST, or the NumPy reference) stays light.
"""

from __future__ import annotations

import copy
import functools
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from agebench.build.convert.tf_ops import (
    batchnorm_affine,
    fold_affine_into_conv,
    oihw_from_hwio,
    same_output,
    same_pads,
)
from agebench.build.convert.wrn.h5 import load_keras_h5
from agebench.build.convert.wrn.topology import (
    AGE_UNITS,
    BN_EPSILON,
    GENDER_UNITS,
    HEAD_NAMES,
    POOL_SIZE,
    Architecture,
    KerasH5Error,
    infer_architecture,
    keras_topology,
)


@functools.cache
def wide_resnet_class() -> type:
    """The ``WideResNet`` class, made (and torch imported) on first use."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SameConv2d(nn.Conv2d):
        """Bias-free Conv2d with TensorFlow's 'same' padding, for a fixed input size.

        Symmetric padding stays inside the convolution; TF's uneven padding (stride 2 on an
        even input: 0 before, 1 after) is an explicit zero pad, which the export folds back
        into the ONNX Conv's ``pads``.
        """

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, in_size: int) -> None:
            before, after = same_pads(in_size, kernel, stride)
            symmetric = before == after
            super().__init__(cin, cout, kernel, stride, before if symmetric else 0, bias=False)
            self.out_size = same_output(in_size, stride)
            self.tf_pad = None if symmetric else (before, after, before, after)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.tf_pad is not None:
                x = F.pad(x, self.tf_pad)
            return super().forward(x)

    class SameAvgPool2d(nn.Module):
        """Stride-1 'same' average pooling with TF's uneven padding left out of the count.

        PyTorch pads symmetrically, so pad by the larger side with ``count_include_pad=False``
        and drop the surplus leading rows and columns: output i then averages input rows
        i - before .. i + after that exist, as TF does. Exports as AveragePool
        (count_include_pad=0) + Slice. ``divisor_override`` is avoided on purpose: the
        TorchScript exporter drops it silently.
        """

        def __init__(self, pool: int) -> None:
            super().__init__()
            before, after = same_pads(4 * pool, pool, 1)  # stride 1: independent of size
            self.pool, self.pad, self.skip = pool, after, after - before

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.avg_pool2d(x, self.pool, 1, self.pad, count_include_pad=False)
            return y[:, :, self.skip :, self.skip :] if self.skip else y

    class Block(nn.Module):
        """wide_resnet.py's ``_wide_basic``: pre-activation; a projection reads BN+ReLU(x)."""

        def __init__(self, cin: int, cout: int, stride: int, in_size: int) -> None:
            super().__init__()
            self.projects = cin != cout
            if not self.projects and stride != 1:
                raise ValueError("an identity shortcut cannot change the size")
            self.bn1: nn.Module = nn.BatchNorm2d(cin, eps=BN_EPSILON)
            self.conv1 = SameConv2d(cin, cout, 3, stride, in_size)
            self.bn2: nn.Module = nn.BatchNorm2d(cout, eps=BN_EPSILON)
            self.conv2 = SameConv2d(cout, cout, 3, 1, self.conv1.out_size)
            self.shortcut = SameConv2d(cin, cout, 1, stride, in_size) if self.projects else None
            self.out_size = self.conv1.out_size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            act = F.relu(self.bn1(x))
            y = self.conv2(F.relu(self.bn2(self.conv1(act))))
            return y + (self.shortcut(act) if self.shortcut is not None else x)

        def keras_order(self) -> Iterator[tuple[str, nn.Module]]:
            """The block's weighted layers in the order Keras created, hence named, them."""
            yield "batch_normalization", self.bn1
            yield "conv2d", self.conv1
            yield "batch_normalization", self.bn2
            yield "conv2d", self.conv2
            if self.shortcut is not None:
                yield "conv2d", self.shortcut

    class WideResNet(nn.Module):
        """yu4u's ``WideResNet(image_size, depth, k)()`` in PyTorch, taking NCHW float input.

        Input: the Keras model's pixels (0..255 BGR, no normalisation), NCHW. Output:
        ``(age_probabilities (N, 101), gender_probabilities (N, 2))``; gender index 0 is
        female. Padding is computed for ``image_size``; other sizes are not this model.
        """

        def __init__(self, depth: int = 16, k: int = 8, image_size: int = 64) -> None:
            super().__init__()
            keras_topology(depth, k, image_size)  # validates the arguments
            self.arch = Architecture(depth, k, image_size, HEAD_NAMES[0])
            widths = self.arch.widths
            self.stem = SameConv2d(3, widths[0], 3, 1, image_size)
            blocks, size = [], image_size
            for stage, first_stride in ((1, 1), (2, 2), (3, 2)):
                for index in range((depth - 4) // 6):
                    cin = widths[stage - 1] if index == 0 else widths[stage]
                    stride = first_stride if index == 0 else 1
                    blocks.append(Block(cin, widths[stage], stride, size))
                    size = blocks[-1].out_size
            self.blocks = nn.ModuleList(blocks)
            self.bn = nn.BatchNorm2d(widths[3], eps=BN_EPSILON)
            self.pool = SameAvgPool2d(POOL_SIZE)
            self.final_size = size
            self.gender = nn.Linear(widths[3] * size * size, GENDER_UNITS, bias=False)
            self.age = nn.Linear(widths[3] * size * size, AGE_UNITS, bias=False)
            self.folded_batchnorms = 0

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            x = torch.flatten(self.pool(F.relu(self.bn(x))), 1)  # CHW; Dense weights permuted
            return F.softmax(self.age(x), dim=1), F.softmax(self.gender(x), dim=1)

        def keras_order(self) -> Iterator[tuple[str, nn.Module]]:
            yield "conv2d", self.stem
            for block in self.blocks:
                yield from block.keras_order()
            yield "batch_normalization", self.bn

        def load_keras_weights(self, weights: Mapping[str, np.ndarray]) -> WideResNet:
            """Copy Keras weights in: conv HWIO -> OIHW; Dense (HWC, out) -> (out, CHW)."""
            arch = infer_architecture(weights)
            mine = self.arch
            if (arch.depth, arch.k, arch.image_size) != (mine.depth, mine.k, mine.image_size):
                raise KerasH5Error(
                    f"weights are WRN-{arch.depth}-{arch.k} at {arch.image_size}px; this module "
                    f"is WRN-{mine.depth}-{mine.k} at {mine.image_size}px"
                )
            counters: Counter[str] = Counter()

            def array(key: str) -> np.ndarray:
                if key not in weights:
                    raise KerasH5Error(f"missing weight {key!r}")
                return weights[key]

            def tensor(key: str) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(array(key), dtype=np.float32))

            with torch.no_grad():
                for prefix, module in self.keras_order():
                    counters[prefix] += 1
                    name = f"{prefix}_{counters[prefix]}"
                    if prefix == "conv2d":
                        oihw = oihw_from_hwio(array(f"{name}/kernel")).astype(np.float32)
                        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(oihw)))
                    else:
                        module.weight.copy_(tensor(f"{name}/gamma"))
                        module.bias.copy_(tensor(f"{name}/beta"))
                        module.running_mean.copy_(tensor(f"{name}/moving_mean"))
                        module.running_var.copy_(tensor(f"{name}/moving_variance"))
                s, c = self.final_size, mine.widths[3]
                for linear, layer in ((self.gender, arch.heads[0]), (self.age, arch.heads[1])):
                    kernel = tensor(f"{layer}/kernel")  # rows in Keras's NHWC flatten order
                    kernel = kernel.reshape(s, s, c, -1).permute(3, 2, 0, 1).reshape(-1, c * s * s)
                    linear.weight.copy_(kernel)
            self.arch = arch
            return self.eval()

        @classmethod
        def from_keras_h5(cls, path: Path) -> WideResNet:
            weights = load_keras_h5(path)
            arch = infer_architecture(weights)
            return cls(arch.depth, arch.k, arch.image_size).load_keras_weights(weights)

        def fused_for_export(self) -> WideResNet:
            """A copy with each BatchNorm that directly follows a convolution folded into it.

            That is each block's second BN, and the first block's BN into the stem when that
            block projects (the stem's output then feeds nothing else). BNs after a residual
            addition stay: the un-normalised sum also feeds the next addition.
            """
            fused = copy.deepcopy(self).eval()
            pairs: list[tuple[nn.Conv2d, nn.Module, str]] = [
                (block.conv1, block, "bn2") for block in fused.blocks
            ]
            if fused.blocks[0].projects:
                pairs.insert(0, (fused.stem, fused.blocks[0], "bn1"))
            with torch.no_grad():
                for conv, owner, attr in pairs:
                    bn = getattr(owner, attr)
                    gamma, beta, mean, var = (
                        t.detach().numpy()
                        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)
                    )
                    scale, shift = batchnorm_affine(gamma, beta, mean, var, bn.eps)
                    weight, bias = fold_affine_into_conv(
                        conv.weight.detach().numpy(), None, scale, shift
                    )
                    conv.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
                    conv.bias = nn.Parameter(torch.from_numpy(bias.astype(np.float32)))
                    setattr(owner, attr, nn.Identity())
            fused.folded_batchnorms = len(pairs)
            return fused

    # its public home: ``agebench.build.convert.wrn.WideResNet``
    WideResNet.__module__ = __name__.rpartition(".")[0]
    WideResNet.__qualname__ = "WideResNet"
    return WideResNet
