"""Batches for the training loop: the crop cache's uint8 crops as the backbone's input
tensors, their augmentation on the device (flip, a small affine jitter, colour jitter), the
frozen backbone's features computed once, and ages decoded by the head's manifest decoder.

Kept apart from the loop (``trainer``) so that the loop is only optimisation, checkpoints and
model selection, and so that a benchmark of one step (tests/benchmarks) builds its batch the
way training does.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agebench.models.decoders import Decoder, build_decoder
from agebench.training.backbone import Backbone
from agebench.training.heads import Head

#: the augmentation's ranges: rotation (degrees), scale and shift (share of the side), colour
ROTATE, SCALE, SHIFT, COLOUR = 8.0, 0.05, 0.04, 0.2


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads for the duration (a library call must not leave them changed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def augment(crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, H, W, 3) float pixels 0..255: random flip, rotation/scale/shift, brightness,
    contrast and saturation, each drawn per image from ``generator`` (CPU)."""
    n = crops.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1).to(crops.device)

    x = crops.permute(0, 3, 1, 2)
    flip = (torch.rand(n, generator=generator) < 0.5).to(crops.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    angle = uniform(n) * math.radians(ROTATE)
    scale = 1 + uniform(n) * SCALE
    shift = uniform(n, 2) * SHIFT * 2  # affine_grid's coordinates span 2 per side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    brightness, contrast, saturation = (1 + uniform(n) * COLOUR for _ in range(3))
    x = x * brightness[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast[:, None, None, None] + mean
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * saturation[:, None, None, None] + gray
    return x.clamp(0, 255).permute(0, 2, 3, 1)


def decoder_of(head: Head) -> Decoder:
    """The manifest decoder the head exports to, built as eval builds it (tables included)."""
    section = head.decoder_section()
    with tempfile.TemporaryDirectory(prefix="agebench-head-") as folder:
        fields = section.write(Path(folder))
        return build_decoder(fields["decoder"], fields["params"], task="age", base_dir=Path(folder))


class Batches:
    """Model inputs for record indices: the cached crops (augmented or not) or the features."""

    def __init__(
        self,
        backbone: Backbone,
        crops: np.ndarray,
        features: torch.Tensor | None,
        device: torch.device,
        channels_last: bool,
    ) -> None:
        self.backbone, self.crops, self.features = backbone, crops, features
        self.device, self.channels_last = device, channels_last

    def input(self, index: np.ndarray, generator: torch.Generator | None) -> torch.Tensor:
        if self.features is not None:
            return self.features[torch.as_tensor(index)].to(self.device)
        pixels = torch.from_numpy(np.asarray(self.crops[np.asarray(index)])).to(self.device)
        pixels = pixels.float()
        if generator is not None:
            pixels = augment(pixels, generator)
        x = self.backbone.prepare(pixels)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, head: Head, x: torch.Tensor, *, export: bool = False) -> torch.Tensor:
        features = x if self.features is not None else self.backbone(x)
        out: torch.Tensor = head.export_module()(features) if export else head(features)
        return out.float()


def extract_features(
    backbone: Backbone, crops: np.ndarray, index: np.ndarray, *, batch_size: int, device: str
) -> torch.Tensor:
    """(len(crops), D) float32 features of the records ``index`` (other rows stay zero), by the
    backbone in eval mode: what a frozen backbone gives every epoch, computed once."""
    backbone.eval().to(device)
    out = torch.zeros(len(crops), backbone.dim)
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            part = np.asarray(index[start : start + batch_size])
            pixels = torch.from_numpy(np.asarray(crops[part])).to(device).float()
            out[torch.as_tensor(part)] = backbone(backbone.prepare(pixels)).float().cpu()
    return out


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA; nothing elsewhere (CPU bf16 is slower than float32 on most)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def predict_ages(batches: Batches, head: Head, index: np.ndarray, batch_size: int) -> np.ndarray:
    """Ages of the records ``index`` through the exported head and its decoder."""
    decoder = decoder_of(head)
    outputs = []
    with torch.no_grad(), autocast(batches.device):
        for start in range(0, len(index), batch_size):
            x = batches.input(index[start : start + batch_size], None)
            outputs.append(batches.forward(head, x, export=True).cpu().double().numpy())
    return np.asarray(decoder.decode(np.concatenate(outputs)).fields["age"], dtype=np.float64)
