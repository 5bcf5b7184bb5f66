"""facenet-pytorch's P-, R- and O-Net, loaded from its weight files and run in the layout
that is fast on the device: oneDNN's blocked layout on CPU, channels-last elsewhere, with each
net's output heads fused into one product and facenet's input scaling folded into the first
convolutions (``agebench.faces.mtcnn`` runs the cascade on them)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from agebench.faces.mtcnn_weights import weight_files


def mkldnn_ok(device: torch.device) -> bool:
    """Whether the nets can run in oneDNN's blocked layout: on CPU, with oneDNN built in."""
    return device.type == "cpu" and torch.backends.mkldnn.is_available()


@dataclass(frozen=True)
class _Conv:
    """A valid 3x3-style convolution with its PReLU (none for P-Net's 1x1 head)."""

    weight: Tensor  # dense, channels-last
    bias: Tensor
    slope: Tensor | None
    packed: Tensor | None  # the weight in oneDNN's blocked layout, where oneDNN is used

    def __call__(self, x: Tensor, pool: int = 0) -> Tensor:
        if x.is_mkldnn:
            assert self.packed is not None
            y = torch.mkldnn_convolution(x, self.packed, self.bias, (0, 0), (1, 1), (1, 1), 1)
        else:
            y = F.conv2d(x, self.weight, self.bias)
        if self.slope is not None:
            y = F.prelu(y, self.slope)
        return F.max_pool2d(y, pool, 2, ceil_mode=True) if pool else y


@dataclass(frozen=True)
class _Dense:
    weight: Tensor
    bias: Tensor
    slope: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias)
        return y if self.slope is None else F.prelu(y, self.slope)


@dataclass(frozen=True)
class Nets:
    """The three nets' layers, ready to run on one device."""

    mkldnn: bool  # run the convolutions in oneDNN's blocked layout (CPU)
    pnet: tuple[_Conv, _Conv, _Conv, _Conv]  # the last: 1x1 head, 2 logits + 4 box offsets
    rnet: tuple[_Conv, _Conv, _Conv]
    rnet_dense: tuple[_Dense, _Dense]  # 576 -> 128, then 2 logits + 4 box offsets
    onet: tuple[_Conv, _Conv, _Conv, _Conv]
    onet_dense: tuple[_Dense, _Dense]  # 1152 -> 256, then 2 logits + 4 offsets + 10 points


def _facenet_weights() -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """The P-, R- and O-Net state dicts (``faces.mtcnn_weights`` finds the files)."""
    pnet, rnet, onet = (
        torch.load(f, map_location="cpu", weights_only=True) for f in weight_files()
    )
    return pnet, rnet, onet


def load_nets(device: torch.device, mkldnn: bool) -> Nets:
    p, r, o = _facenet_weights()

    def t(tensor: Tensor) -> Tensor:
        return tensor.detach().to(device=device, dtype=torch.float32).contiguous()

    def conv(weight: Tensor, bias: Tensor, slope: Tensor | None, first: bool = False) -> _Conv:
        if first:  # facenet feeds (x - 127.5) / 128: fold that into the weights, feed x
            weight, bias = weight.double(), bias.double()
            bias = bias - weight.sum(dim=(1, 2, 3)) * (127.5 / 128)
            weight = weight / 128
        weight = t(weight)
        packed = None
        if mkldnn:
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                weight.to_mkldnn(), [0, 0], [1, 1], [1, 1], 1
            )
        return _Conv(
            weight.contiguous(memory_format=torch.channels_last),
            t(bias),
            None if slope is None else t(slope),
            packed,
        )

    def layer(net: dict[str, Tensor], name: str, prelu: str, first: bool = False) -> _Conv:
        return conv(net[f"{name}.weight"], net[f"{name}.bias"], net[f"{prelu}.weight"], first)

    def dense(net: dict[str, Tensor], name: str, prelu: str) -> _Dense:
        # facenet flattens (N, W, H, C) after a permute; we flatten (N, C, H, W) as it lies
        weight = net[f"{name}.weight"]
        out, side = weight.shape[0], 3
        weight = weight.view(out, side, side, -1).permute(0, 3, 2, 1)
        return _Dense(t(weight.reshape(out, -1)), t(net[f"{name}.bias"]), t(net[f"{prelu}.weight"]))

    def heads(net: dict[str, Tensor], *names: str) -> _Dense:
        weight = torch.cat([net[f"{n}.weight"] for n in names])
        return _Dense(t(weight), t(torch.cat([net[f"{n}.bias"] for n in names])))

    pnet_head = (
        torch.cat([p[f"conv4_{k}.weight"] for k in (1, 2)]),
        torch.cat([p[f"conv4_{k}.bias"] for k in (1, 2)]),
    )
    return Nets(
        mkldnn=mkldnn,
        pnet=(
            layer(p, "conv1", "prelu1", True),
            layer(p, "conv2", "prelu2"),
            layer(p, "conv3", "prelu3"),
            conv(*pnet_head, None),
        ),
        rnet=(
            layer(r, "conv1", "prelu1", True),
            layer(r, "conv2", "prelu2"),
            layer(r, "conv3", "prelu3"),
        ),
        rnet_dense=(dense(r, "dense4", "prelu4"), heads(r, "dense5_1", "dense5_2")),
        onet=(
            layer(o, "conv1", "prelu1", True),
            layer(o, "conv2", "prelu2"),
            layer(o, "conv3", "prelu3"),
            layer(o, "conv4", "prelu4"),
        ),
        onet_dense=(dense(o, "dense5", "prelu5"), heads(o, "dense6_1", "dense6_2", "dense6_3")),
    )


# --- the nets, on (N, 3, H, W) float pixel values (facenet's scaling is in the first conv) ----


def _enter(nets: Nets, x: Tensor) -> Tensor:
    """oneDNN's blocked layout on CPU, else channels-last (NHWC), where max-pooling is fast."""
    return x.to_mkldnn() if nets.mkldnn else x.contiguous(memory_format=torch.channels_last)


def _face_probability(logits: Tensor) -> Tensor:
    """Channel 1 of facenet's 2-way softmax, as the logistic of the logit difference."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


def run_pnet(nets: Nets, x: Tensor) -> tuple[Tensor, Tensor]:
    """Probability map (N, h, w) and box offsets (N, h, w, 4)."""
    c1, c2, c3, head = nets.pnet
    y = head(c3(c2(c1(_enter(nets, x), pool=2))))
    y = y.to_dense() if y.is_mkldnn else y
    return _face_probability(y), y[:, 2:].permute(0, 2, 3, 1)


def _tail(x: Tensor, dense: tuple[_Dense, _Dense]) -> tuple[Tensor, Tensor]:
    x = x.to_dense() if x.is_mkldnn else x
    y = dense[1](dense[0](x.reshape(len(x), -1)))
    return _face_probability(y), y[:, 2:]


def run_rnet(nets: Nets, x: Tensor) -> tuple[Tensor, Tensor]:
    """Face probability (K,) and box offsets (K, 4)."""
    c1, c2, c3 = nets.rnet
    x = c3(c2(c1(_enter(nets, x), pool=3), pool=3))
    return _tail(x, nets.rnet_dense)


def run_onet(nets: Nets, x: Tensor) -> tuple[Tensor, Tensor]:
    """Face probability (K,) and box offsets + landmark coordinates (K, 14)."""
    c1, c2, c3, c4 = nets.onet
    x = c4(c3(c2(c1(_enter(nets, x), pool=3), pool=3), pool=2))
    return _tail(x, nets.onet_dense)
