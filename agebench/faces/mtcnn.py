"""MTCNN's cascade on facenet-pytorch's nets, vectorised over candidate boxes and images.

facenet-pytorch's ``detect_face`` crops and area-resizes every candidate box in a Python loop,
runs its nets in NCHW (where CPU max-pooling is many times slower than in oneDNN's layout) and
is called one photo at a time. Here each stage handles all boxes of a batch of same-size images:
the pyramid and the box crops are area-resized from one summed-area table per image (gathers
instead of per-box ``interpolate`` calls), the nets run in oneDNN's blocked layout on CPU
(channels-last elsewhere) in chunks sized to stay in cache, each net's output heads are one
product, and facenet's input scaling is folded into the first convolutions.

Where the time still goes (one thread, 200 px chips with their padded retry, ~16 ms each):
half is the nets' convolutions, which run near this CPU's fp32 peak (~370 M multiply-adds per
chip); PReLU and max-pooling, memory-bound and not fusable through torch's oneDNN calls, ~12%;
the gathers of area resizing ~12%; index arithmetic, layout changes, NMS and the rest ~25%.

The results are meant to be facenet's own, image by image, to float rounding: the crops use its
conventions (1-based boxes truncated and clipped to the image, not zero-padded; area resizing
with ``adaptive_avg_pool2d``'s bins, summed exactly in integers), its thresholds (``>=`` for
P-Net, ``>`` after) and its NMS flavours; and each image's boxes reach every NMS in the order a
single-image ``detect_face`` call gives them, so even tied scores resolve the same way.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from agebench.core.errors import AgebenchError
from agebench.faces.detect import FACENET_INSTALL_HINT

#: (box x1, y1, x2, y2; points (5, 2) x, y; score) in the input's pixels, as facenet gives them
Detection = tuple[np.ndarray, np.ndarray, float]

#: pyramid pixels per P-Net call, and boxes per R-Net and O-Net call, per torch thread: measured
#: on the shared chips, 4x smaller chunks cost ~20% in per-call overhead, 4x bigger ~10% in
#: cache misses of the memory-bound PReLU and pooling (and they use more memory)
_PNET_PIXELS = 1 << 16
_RNET_BATCH = 64
_ONET_BATCH = 32


def _mkldnn_ok(device: torch.device) -> bool:
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
class _Nets:
    mkldnn: bool  # run the convolutions in oneDNN's blocked layout (CPU)
    pnet: tuple[_Conv, _Conv, _Conv, _Conv]  # the last: 1x1 head, 2 logits + 4 box offsets
    rnet: tuple[_Conv, _Conv, _Conv]
    rnet_dense: tuple[_Dense, _Dense]  # 576 -> 128, then 2 logits + 4 box offsets
    onet: tuple[_Conv, _Conv, _Conv, _Conv]
    onet_dense: tuple[_Dense, _Dense]  # 1152 -> 256, then 2 logits + 4 offsets + 10 points


def _package_folder(name: str) -> Path | None:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(name)
    folders = list(spec.submodule_search_locations or []) if spec else []
    return Path(folders[0]) if folders else None


def _facenet_weights() -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """facenet-pytorch's P-, R- and O-Net state dicts, read from its data folder.

    Importing facenet_pytorch imports torchvision's models, and they pull in torch._dynamo:
    about a second of every detecting run's start, for three files of weights.
    """
    folder = _package_folder("facenet_pytorch")
    files = [folder / "data" / f"{net}.pt" for net in ("pnet", "rnet", "onet")] if folder else []
    if not files or not all(f.is_file() for f in files):
        raise AgebenchError(
            f"face detection needs facenet-pytorch's MTCNN weights; {FACENET_INSTALL_HINT}"
        )
    pnet, rnet, onet = (torch.load(f, map_location="cpu", weights_only=True) for f in files)
    return pnet, rnet, onet


def _load_torchvision_nms() -> Callable[[Tensor, Tensor, float], Tensor]:
    """torchvision's compiled NMS, loaded from its library without importing the package (whose
    ``ops`` import torch._dynamo, a second of start-up); ``torchvision.ops.nms`` otherwise."""
    try:
        return torch.ops.torchvision.nms  # registered already
    except (AttributeError, RuntimeError):
        pass
    folder = _package_folder("torchvision")
    for library in sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd")) if folder else []:
        try:
            torch.ops.load_library(str(library))
            return torch.ops.torchvision.nms
        except (OSError, RuntimeError, AttributeError):
            continue
    from torchvision.ops import nms as package_nms

    return package_nms


_nms: Callable[[Tensor, Tensor, float], Tensor] | None = None


def nms(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """torchvision's IoU NMS: indices kept, by decreasing score."""
    global _nms
    if _nms is None:
        _nms = _load_torchvision_nms()
    return _nms(boxes, scores, threshold)


def _load_nets(device: torch.device, mkldnn: bool) -> _Nets:
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
    return _Nets(
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


def _enter(nets: _Nets, x: Tensor) -> Tensor:
    """oneDNN's blocked layout on CPU, else channels-last (NHWC), where max-pooling is fast."""
    return x.to_mkldnn() if nets.mkldnn else x.contiguous(memory_format=torch.channels_last)


def _face_probability(logits: Tensor) -> Tensor:
    """Channel 1 of facenet's 2-way softmax, as the logistic of the logit difference."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


def _pnet(nets: _Nets, x: Tensor) -> tuple[Tensor, Tensor]:
    """Probability map (N, h, w) and box offsets (N, h, w, 4)."""
    c1, c2, c3, head = nets.pnet
    y = head(c3(c2(c1(_enter(nets, x), pool=2))))
    y = y.to_dense() if y.is_mkldnn else y
    return _face_probability(y), y[:, 2:].permute(0, 2, 3, 1)


def _tail(x: Tensor, dense: tuple[_Dense, _Dense]) -> tuple[Tensor, Tensor]:
    x = x.to_dense() if x.is_mkldnn else x
    y = dense[1](dense[0](x.reshape(len(x), -1)))
    return _face_probability(y), y[:, 2:]


def _rnet(nets: _Nets, x: Tensor) -> tuple[Tensor, Tensor]:
    """Face probability (K,) and box offsets (K, 4)."""
    c1, c2, c3 = nets.rnet
    x = c3(c2(c1(_enter(nets, x), pool=3), pool=3))
    return _tail(x, nets.rnet_dense)


def _onet(nets: _Nets, x: Tensor) -> tuple[Tensor, Tensor]:
    """Face probability (K,) and box offsets + landmark coordinates (K, 14)."""
    c1, c2, c3, c4 = nets.onet
    x = c4(c3(c2(c1(_enter(nets, x), pool=3), pool=3), pool=2))
    return _tail(x, nets.onet_dense)


#: R-Net and O-Net: the net, its input side and its boxes per call per thread, by stage
_BOX_STAGES: dict[int, tuple[Callable[[_Nets, Tensor], tuple[Tensor, Tensor]], int, int]] = {
    1: (_rnet, 24, _RNET_BATCH),
    2: (_onet, 48, _ONET_BATCH),
}


def _run_boxes(
    net: Callable[[Tensor], tuple[Tensor, Tensor]],
    table: Tensor,
    image: Tensor,
    boxes: Tensor,
    size: int,
    chunk: int,
    zero_pad: bool = False,
) -> tuple[Tensor, Tensor]:
    """A net on the crops of boxes, cut and run a cache-sized chunk at a time; empty crops
    (boxes outside the image, which facenet would fail on) get probability 0."""
    probs, rests = [], []
    for i in range(0, len(boxes), chunk):
        crops, valid = _crops(table, image[i : i + chunk], boxes[i : i + chunk], size, zero_pad)
        prob, rest = net(crops)
        probs.append(torch.where(valid, prob, 0.0))
        rests.append(rest)
    return torch.cat(probs), torch.cat(rests)


# --- area resizing from a summed-area table ------------------------------------------------


def _integral(images: np.ndarray, device: torch.device) -> Tensor:
    """(N, 3, H+1, W+1) exact integer sums of uint8 (N, H, W, 3) images, zero first row/col.

    Channel planes, so that both resizing passes copy whole rows instead of gathering pixels.
    """
    if device.type == "cpu":  # OpenCV's integral is several times faster than two cumsums
        return _integral_cv2(images)
    return _integral_torch(torch.from_numpy(images).to(device))


def _exact_dtype(images: np.ndarray | Tensor) -> bool:
    """Whether int32 holds every sum: then the table is int32, else 64-bit."""
    return 255 * images.shape[1] * images.shape[2] < 2**31


def _integral_cv2(images: np.ndarray) -> Tensor:
    n, h, w, c = images.shape
    small = _exact_dtype(images)
    table = np.empty((n, c, h + 1, w + 1), dtype=np.int32 if small else np.float64)
    depth = cv2.CV_32S if small else cv2.CV_64F
    for i in range(n):
        for k, plane in enumerate(cv2.split(images[i])):
            cv2.integral(plane, table[i, k], sdepth=depth)
    return torch.from_numpy(table)


def _integral_torch(pixels: Tensor) -> Tensor:
    n, h, w, c = pixels.shape
    dtype = torch.int32 if _exact_dtype(pixels) else torch.int64
    table = torch.zeros((n, c, h + 1, w + 1), dtype=dtype, device=pixels.device)
    table[:, :, 1:, 1:] = pixels.permute(0, 3, 1, 2).cumsum(2, dtype=dtype).cumsum(3, dtype=dtype)
    return table


def _bins(start: Tensor, length: Tensor, out: int) -> tuple[Tensor, Tensor]:
    """``adaptive_avg_pool2d``'s bins over [start, start + length): [lo, hi) per output.

    floor(i * L / out) and ceil((i + 1) * L / out) in float64, which is exact for these
    sizes and much faster than integer floor division.
    """
    i = torch.arange(out + 1, device=start.device, dtype=torch.float64)
    edges = i * length[..., None].to(torch.float64) / out
    lo = edges[..., :-1].floor().to(torch.int64)
    hi = edges[..., 1:].ceil().to(torch.int64)
    return start[..., None] + lo, start[..., None] + hi


def _resize(table: Tensor, height: int, width: int) -> Tensor:
    """Every image of the table area-resized to (N, 3, height, width): bin means, as
    ``adaptive_avg_pool2d`` (facenet's ``imresample``) computes them, to float rounding."""
    n, c, h1, w1 = table.shape
    zero = torch.zeros((), dtype=torch.int64, device=table.device)
    r0, r1 = _bins(zero, torch.full((), h1 - 1, device=table.device), height)
    c0, c1 = _bins(zero, torch.full((), w1 - 1, device=table.device), width)
    rows = (table.index_select(2, r1) - table.index_select(2, r0)).transpose(2, 3).contiguous()
    sums = (rows.index_select(2, c1) - rows.index_select(2, c0)).transpose(2, 3)
    area = ((r1 - r0)[:, None] * (c1 - c0)).to(torch.float32)
    out = torch.empty((n, c, height, width), device=table.device)
    return torch.div(sums, area, out=out)


def _crops(
    table: Tensor, image: Tensor, boxes: Tensor, size: int, zero_pad: bool = False
) -> tuple[Tensor, Tensor]:
    """(K, 3, size, size) net inputs for boxes, cut as facenet's ``pad`` and crop loop do;
    and which were non-empty.

    facenet truncates the box, clips it to [1, W] x [1, H] (1-based, inclusive) and resizes
    the clipped region, so an edge box is stretched rather than padded. With ``zero_pad`` the
    box is kept whole and what lies outside the image is black, as in the original MTCNN
    (Zhang et al.'s ``pad``): a face cut by the image edge keeps its proportions.
    """
    _, c, h1, w1 = table.shape
    b = torch.trunc(boxes[:, :4]).to(torch.int64)
    if zero_pad:
        x0, y0, x1, y1 = b[:, 0] - 1, b[:, 1] - 1, b[:, 2], b[:, 3]
        valid = (x1 > x0) & (y1 > y0) & (x1 > 0) & (y1 > 0) & (x0 < w1 - 1) & (y0 < h1 - 1)
    else:
        x0, y0 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1
        x1, y1 = b[:, 2].clamp(max=w1 - 1), b[:, 3].clamp(max=h1 - 1)
        valid = (x1 > x0) & (y1 > y0)
    # an empty crop (a box outside the image) gets a dummy pixel and is dropped by the caller
    x0, y0 = torch.where(valid, x0, 0), torch.where(valid, y0, 0)
    x1, y1 = torch.where(valid, x1, 1), torch.where(valid, y1, 1)
    r0, r1 = _bins(y0, y1 - y0, size)
    c0, c1 = _bins(x0, x1 - x0, size)
    area = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).to(torch.float32)
    if zero_pad:  # sums over the part of each bin inside the image; the rest adds 0
        r0, r1 = r0.clamp(0, h1 - 1), r1.clamp(0, h1 - 1)
        c0, c1 = c0.clamp(0, w1 - 1), c1.clamp(0, w1 - 1)
    plane = (image[:, None] * c + torch.arange(c, device=table.device)) * h1  # (K, c)
    flat = table.view(-1)

    def corner(rows: Tensor, cols: Tensor) -> Tensor:
        index = ((plane[:, :, None] + rows[:, None, :]) * w1)[..., None] + cols[:, None, None, :]
        return flat.index_select(0, index.view(-1))

    sums = (corner(r1, c1) - corner(r0, c1)) - (corner(r1, c0) - corner(r0, c0))
    return sums.view(len(boxes), c, size, size).to(torch.float32) / area[:, None], valid


# --- box arithmetic, in facenet's float32 order of operations ---------------------------------


def _square(boxes: Tensor) -> Tensor:
    """facenet's ``rerec``: the square on the longer side, same centre."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regress(boxes: Tensor, offsets: Tensor) -> Tensor:
    """facenet's ``bbreg``: offsets in units of the 1-based inclusive box size."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    size = torch.stack([w, h, w, h], dim=1)
    return boxes[:, :4] + offsets * size


# --- NMS -------------------------------------------------------------------------------------


def _runs(groups: Tensor) -> list[tuple[int, int]]:
    """[start, end) of each run of equal values in a sorted group index."""
    if not len(groups):
        return []
    counts = torch.unique_consecutive(groups, return_counts=True)[1].tolist()
    ends = np.cumsum(counts).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


def _nms_per_image(
    boxes: Tensor, scores: Tensor, image: Tensor, threshold: float, sub: Tensor | None = None
) -> Tensor:
    """torchvision's IoU NMS within each image (a sorted run), on boxes in their given order,
    as facenet's single-image calls see them; kept indices grouped by image.

    ``sub`` splits an image further (P-Net's scales) by shifting each part's boxes apart;
    only for integer-valued boxes, whose shifted IoUs are bit-identical.
    """
    keep = []
    for start, end in _runs(image):
        if end - start == 1:
            keep.append(torch.tensor([start], device=boxes.device))
            continue
        part = boxes[start:end]
        if sub is not None:
            part = part + (sub[start:end] * (part.max() + 1))[:, None]
        kept = nms(part, scores[start:end], threshold)
        if sub is not None:  # back to facenet's order: part by part, by score within each
            kept = kept[torch.sort(sub[start:end][kept], stable=True)[1]]
        keep.append(kept + start)
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.int64, device=boxes.device)


def _min_nms(boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float) -> Tensor:
    """facenet's final NMS: overlap over the smaller box, +1 areas, ties to the later box."""
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = (torch.minimum(x2[:, None], x2) - torch.maximum(x1[:, None], x1) + 1).clamp(min=0)
    h = (torch.minimum(y2[:, None], y2) - torch.maximum(y1[:, None], y1) + 1).clamp(min=0)
    overlap = w * h / torch.minimum(area[:, None], area)
    suppress = ((overlap > threshold) & (groups[:, None] == groups)).cpu().numpy()
    group = groups.tolist()
    done = np.zeros(len(group), dtype=bool)
    keep = []
    for i in torch.sort(scores, stable=True)[1].flip(0).tolist():
        if not done[i]:
            keep.append(i)
            done |= suppress[i]
    keep.sort(key=lambda i: group[i])  # stable: by score within each image
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


# --- the cascade -----------------------------------------------------------------------------


def _threads() -> int:
    return torch.get_num_threads()


def _scales(height: int, width: int, min_size: int, factor: float) -> list[float]:
    scale, scales = 12.0 / min_size, []
    side = min(height, width) * scale
    while side >= 12:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


class MtcnnCascade:
    """P-Net pyramid -> NMS -> R-Net -> NMS -> O-Net -> landmarks -> NMS, batch at a time.

    Holds only read-only weights, so concurrent ``detect`` calls from worker threads are safe.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        *,
        mkldnn: bool | None = None,
        zero_pad: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.zero_pad = zero_pad
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        use_mkldnn = (
            _mkldnn_ok(self.device) if mkldnn is None else mkldnn and _mkldnn_ok(self.device)
        )
        self._nets = _load_nets(self.device, use_mkldnn)

    def detect(self, images: np.ndarray, min_size: int) -> list[list[Detection]]:
        """Faces in each of (N, H, W, 3) uint8 RGB images, highest score first, per image."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"need (N, H, W, 3) uint8 RGB images, got {images.dtype} {images.shape}"
            )
        out: list[list[Detection]] = [[] for _ in range(len(images))]
        if not len(images) or min(images.shape[1:3]) < 12:
            return out
        with torch.inference_mode():
            table = _integral(np.ascontiguousarray(images), self.device)
            found = self._stage1(table, min_size)
            found = self._stage2(table, *found)
            boxes_t, points_t, scores_t, image_t = self._stage3(table, *found)
            boxes, points = boxes_t.cpu().numpy(), points_t.cpu().numpy()
            scores, image = scores_t.cpu(), image_t.cpu().numpy()
        for i in range(len(boxes)):
            box, marks = boxes[i].astype(np.float64), points[i].astype(np.float64)
            out[image[i]].append((box, marks, float(scores[i])))
        return out

    def _stage1(self, table: Tensor, min_size: int) -> tuple[Tensor, Tensor]:
        """P-Net candidates, NMS'd per scale then per image, squared: (boxes, image)."""
        n, height, width = table.shape[0], table.shape[2] - 1, table.shape[3] - 1
        scales = _scales(height, width, min_size, self.factor)
        threads = _threads()
        found: list[Tensor] = []
        keys: list[Tensor] = []  # image * len(scales) + scale index, per candidate
        for k, scale in enumerate(scales):
            size = (int(height * scale + 1), int(width * scale + 1))
            step = max(1, _PNET_PIXELS * threads // (size[0] * size[1]))
            for first in range(0, n, step):
                prob, offsets = _pnet(self._nets, _resize(table[first : first + step], *size))
                hit = prob >= self.thresholds[0]
                where = hit.nonzero()
                cell = where[:, 1:].flip(1).to(torch.float32)
                q1 = ((2 * cell + 1) / scale).floor()
                q2 = ((2 * cell + 12) / scale).floor()
                found.append(torch.cat([q1, q2, prob[hit][:, None], offsets[hit]], dim=1))
                keys.append((where[:, 0] + first) * len(scales) + k)
        if not found:
            empty = torch.zeros(0, dtype=torch.int64, device=table.device)
            return torch.zeros((0, 4), device=table.device), empty
        key, order = torch.sort(torch.cat(keys), stable=True)  # image, scale, P-Net cell
        boxes = torch.cat(found)[order]
        image = torch.div(key, len(scales), rounding_mode="floor")
        keep = _nms_per_image(boxes[:, :4], boxes[:, 4], image, 0.5, sub=key % len(scales))
        boxes, image = boxes[keep], image[keep]
        keep = _nms_per_image(boxes[:, :4], boxes[:, 4], image, 0.7)
        boxes, image = boxes[keep], image[keep]
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        moved = boxes[:, :4] + boxes[:, 5:9] * torch.stack([w, h, w, h], dim=1)
        return _square(moved), image

    def _kept(
        self, stage: int, table: Tensor, boxes: Tensor, image: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """R-Net (``stage`` 1) or O-Net (2) on the boxes' crops: the boxes above the stage's
        threshold, with their probability, outputs and image."""
        net, size, batch = _BOX_STAGES[stage]
        nets = self._nets
        prob, rest = _run_boxes(
            lambda x: net(nets, x), table, image, boxes, size, batch * _threads(), self.zero_pad
        )
        keep = prob > self.thresholds[stage]
        return boxes[keep], prob[keep], rest[keep], image[keep]

    def _stage2(self, table: Tensor, boxes: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        """R-Net: keep, NMS per image, regress and square."""
        if not len(boxes):
            return boxes, image
        boxes, prob, offsets, image = self._kept(1, table, boxes, image)
        pick = _nms_per_image(boxes, prob, image, 0.7)
        return _square(_regress(boxes[pick], offsets[pick])), image[pick]

    def _stage3(
        self, table: Tensor, boxes: Tensor, image: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """O-Net: keep, landmarks, regress, then min-overlap NMS per image."""
        if not len(boxes):
            return boxes, torch.zeros((0, 5, 2), device=boxes.device), boxes[:, 0], image
        boxes, prob, rest, image = self._kept(2, table, boxes, image)
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        px = w * rest[:, 4:9] + boxes[:, 0:1] - 1
        py = h * rest[:, 9:14] + boxes[:, 1:2] - 1
        points = torch.stack([px, py], dim=2)
        boxes = _regress(boxes, rest[:, :4])
        pick = _min_nms(boxes, prob, image, 0.7)
        return boxes[pick], points[pick], prob[pick], image[pick]
