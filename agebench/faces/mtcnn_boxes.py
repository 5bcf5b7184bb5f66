"""MTCNN's box arithmetic and NMS flavours, in facenet's float32 order of operations and box
order, so that the cascade keeps the boxes facenet keeps, ties included."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def package_folder(name: str) -> Path | None:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(name)
    folders = list(spec.submodule_search_locations or []) if spec else []
    return Path(folders[0]) if folders else None


def _load_torchvision_nms() -> Callable[[Tensor, Tensor, float], Tensor]:
    """torchvision's compiled NMS, loaded from its library without importing the package (whose
    ``ops`` import torch._dynamo, a second of start-up); ``torchvision.ops.nms`` otherwise."""
    try:
        return torch.ops.torchvision.nms  # registered already
    except (AttributeError, RuntimeError):
        pass
    folder = package_folder("torchvision")
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


# --- box arithmetic, in facenet's float32 order of operations ---------------------------------


def square(boxes: Tensor) -> Tensor:
    """facenet's ``rerec``: the square on the longer side, same centre."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def regress(boxes: Tensor, offsets: Tensor) -> Tensor:
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


def nms_per_image(
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


def min_nms(boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float) -> Tensor:
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
