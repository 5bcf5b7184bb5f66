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

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from agebench.faces.mtcnn_boxes import min_nms, nms_per_image, regress, square
from agebench.faces.mtcnn_nets import Nets, load_nets, mkldnn_ok, run_onet, run_pnet, run_rnet
from agebench.faces.mtcnn_resize import crops, integral, resize

#: (box x1, y1, x2, y2; points (5, 2) x, y; score) in the input's pixels, as facenet gives them
Detection = tuple[np.ndarray, np.ndarray, float]

#: pyramid pixels per P-Net call, and boxes per R-Net and O-Net call, per torch thread: measured
#: on the shared chips, 4x smaller chunks cost ~20% in per-call overhead, 4x bigger ~10% in
#: cache misses of the memory-bound PReLU and pooling (and they use more memory)
_PNET_PIXELS = 1 << 16
_RNET_BATCH = 64
_ONET_BATCH = 32


#: R-Net and O-Net: the net, its input side and its boxes per call per thread, by stage
_BOX_STAGES: dict[int, tuple[Callable[[Nets, Tensor], tuple[Tensor, Tensor]], int, int]] = {
    1: (run_rnet, 24, _RNET_BATCH),
    2: (run_onet, 48, _ONET_BATCH),
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
        inputs, valid = crops(table, image[i : i + chunk], boxes[i : i + chunk], size, zero_pad)
        prob, rest = net(inputs)
        probs.append(torch.where(valid, prob, 0.0))
        rests.append(rest)
    return torch.cat(probs), torch.cat(rests)


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
        use_mkldnn = mkldnn_ok(self.device) if mkldnn is None else mkldnn and mkldnn_ok(self.device)
        self._nets = load_nets(self.device, use_mkldnn)

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
            table = integral(np.ascontiguousarray(images), self.device)
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
                prob, offsets = run_pnet(self._nets, resize(table[first : first + step], *size))
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
        keep = nms_per_image(boxes[:, :4], boxes[:, 4], image, 0.5, sub=key % len(scales))
        boxes, image = boxes[keep], image[keep]
        keep = nms_per_image(boxes[:, :4], boxes[:, 4], image, 0.7)
        boxes, image = boxes[keep], image[keep]
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        moved = boxes[:, :4] + boxes[:, 5:9] * torch.stack([w, h, w, h], dim=1)
        return square(moved), image

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
        pick = nms_per_image(boxes, prob, image, 0.7)
        return square(regress(boxes[pick], offsets[pick])), image[pick]

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
        boxes = regress(boxes, rest[:, :4])
        pick = min_nms(boxes, prob, image, 0.7)
        return boxes[pick], points[pick], prob[pick], image[pick]
