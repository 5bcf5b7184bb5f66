"""Ready face crops prepared on the device: JPEG decoding and the crop warp, in batches.

With ready crops (``--faces none``) on a GPU there is no detector to feed, so what is left on
the host is reading files: decoding (nvJPEG, one batched call) and cutting each chip
(``agebench.faces.align.warp``) move to the device, and the crops go to
``TorchEngine.prepare_input`` without a round trip. On the CPU both work too (tests).

``warp_batch`` reproduces ``warp``'s pixels: bilinear sampling at the inverse-mapped pixel
centres with black outside (``grid_sample`` with zeros padding), and the same supersampling
rule (k x the size, then k x k block means, each stage rounded to uint8 as OpenCV does).
Measured against OpenCV 5.0 on the shared chips: at most 1 grey level apart, on 0-0.2% of
the pixels (float32 grid rounding near .5; ``tests/unit/test_device_decode.py``).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agebench.faces.align import _ANTIALIAS_FROM, _MAX_SUPERSAMPLE
from agebench.runner.image_orientation import UPRIGHT

if TYPE_CHECKING:
    import torch

#: images over this size are left to ``decode_image``, which refuses them as decompression bombs
_MAX_PIXELS = 200_000_000
#: float32 source pixels one grid_sample call may hold (about 256 MB)
_CHUNK_VALUES = 64 * 2**20


@dataclass(frozen=True)
class _Header:
    jpeg: bool  # a baseline or progressive JPEG of RGB or grey pixels: the device can decode it
    orientation: int


def _header(data: bytes) -> _Header:
    """What the file says about itself, read without decoding a pixel."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = int(image.getexif().get(0x0112, 1) or 1)
            pixels = image.width * image.height
            plain = image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L")
            return _Header(plain and pixels <= _MAX_PIXELS, orientation)
    except Exception:  # anything odd is for decode_image to name
        return _Header(False, 1)


def _upright(chw: torch.Tensor, orientation: int) -> torch.Tensor:
    """EXIF orientation applied to a (C, H, W) image, as ``PIL.ImageOps.exif_transpose``."""
    how = UPRIGHT.get(orientation, UPRIGHT[1])
    flips = [dim for dim, flip in ((-2, how.flip_rows), (-1, how.flip_cols)) if flip]
    out = chw.flip(flips) if flips else chw
    return out.transpose(-2, -1) if how.transpose else out


def _decode_on_device(datas: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """torchvision's decoder (nvJPEG on CUDA), batched; per image when the batch fails."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one bad file fails the whole batch: find it
            out: list[torch.Tensor | None] = []
            for tensor in tensors:
                try:
                    out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def decode_jpegs(
    datas: Sequence[bytes],
    device: str | torch.device = "cpu",
    *,
    names: Sequence[str | Path] | None = None,
) -> list[torch.Tensor]:
    """Decode image files to upright (H, W, 3) uint8 RGB tensors on ``device``.

    Plain RGB or grey JPEGs go to torchvision's decoder in one call (nvJPEG on CUDA; the EXIF
    orientation is applied on the device); anything else (other formats, CMYK, files the
    decoder refuses) is decoded by ``agebench.runner.imageio.decode_image`` and uploaded, so
    every file gets its usual treatment. A file that cannot be decoded raises
    ``ImageDecodeError`` naming it (``names``, else its index). The tensors are views of the
    decoder's (3, H, W) output.
    """
    import torch

    from agebench.runner.imageio import decode_image

    device = torch.device(device)
    labels = [Path(str(n)) for n in names] if names is not None else None
    headers = [_header(d) for d in datas]
    direct = [i for i, h in enumerate(headers) if h.jpeg]
    images: list[torch.Tensor | None] = [None] * len(datas)
    if direct:
        decoded = _decode_on_device([datas[i] for i in direct], device)
        for i, chw in zip(direct, decoded, strict=True):
            if chw is not None:
                images[i] = _upright(chw, headers[i].orientation).permute(1, 2, 0)
    for i, image in enumerate(images):
        if image is None:
            path = labels[i] if labels is not None else Path(f"<image {i}>")
            rgb = decode_image(path, data=datas[i]).rgb
            images[i] = torch.from_numpy(np.array(rgb, order="C")).to(device)
    return [image for image in images if image is not None]


def supersampling(matrix: np.ndarray) -> int:
    """``warp``'s factor k: photo pixels per crop pixel, rounded, when over 1.5 (at most 8)."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale > 0 and 1.0 / scale > _ANTIALIAS_FROM:
        return min(_MAX_SUPERSAMPLE, round(1.0 / scale))
    return 1


def _grid(
    matrices: list[np.ndarray], image: tuple[int, int], out: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """grid_sample's (B, h, w, 2) grid: where each crop pixel centre falls in the photo.

    OpenCV maps crop pixel (x, y) to photo point M^-1 (x, y, 1), pixel centres at integers;
    grid_sample (align_corners=False) reads photo x at (2 x + 1) / W - 1. Coordinates are
    computed in float64, then rounded once to float32.
    """
    import torch

    height, width = image
    inverse = np.stack([_inverse(m) for m in matrices])  # (B, 2, 3)
    theta = torch.from_numpy(inverse).to(device)
    ys = torch.arange(out[0], dtype=torch.float64, device=device)
    xs = torch.arange(out[1], dtype=torch.float64, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1)  # (h, w, 3)
    source = torch.einsum("hwk,bjk->bhwj", points, theta)  # (B, h, w, 2) photo pixels
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64, device=device)
    offset = torch.tensor([1.0 / width - 1.0, 1.0 / height - 1.0], dtype=torch.float64)
    return (source * scale + offset.to(device)).to(torch.float32)


def _inverse(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _warp_group(
    images: list[torch.Tensor], matrices: list[np.ndarray], size: tuple[int, int], k: int
) -> torch.Tensor:
    """Crops (B, h, w, 3) uint8 from equally sized photos sharing the factor k."""
    import torch
    import torch.nn.functional as F

    height, width = size
    big = []
    for matrix in matrices:
        scaled = np.asarray(matrix, dtype=np.float64) * k
        scaled[:, 2] += (k - 1) / 2.0  # as warp: crop pixel centres stay where they were
        big.append(scaled)
    device = images[0].device
    source = torch.stack([image.permute(2, 0, 1) for image in images]).to(torch.float32)
    photo = (images[0].shape[0], images[0].shape[1])
    grid = _grid(big, photo, (height * k, width * k), device)
    sampled = F.grid_sample(
        source, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    sampled = sampled.round().clamp(0, 255)  # warpAffine's uint8 result
    if k > 1:  # INTER_AREA by an integer factor: the mean of each k x k block
        mean = F.avg_pool2d(sampled, k)
        # OpenCV rounds halves up in its 2x path, to even elsewhere
        sampled = (mean + 0.5).floor() if k == 2 else mean.round()
    return sampled.permute(0, 2, 3, 1).to(torch.uint8)


def warp_batch(
    images: Sequence[torch.Tensor], matrices: Sequence[np.ndarray], size: tuple[int, int]
) -> torch.Tensor:
    """``warp`` for many crops at once: ``images[i]`` (H, W, 3) uint8 cut by ``matrices[i]``
    (2x3, photo -> crop, OpenCV's pixel-centre convention) to ``size`` (h, w).

    Returns (N, h, w, 3) uint8 on the images' device. Photos of one size sharing a
    supersampling factor go through one ``grid_sample`` call (split only to bound memory).
    """
    import torch

    if len(images) != len(matrices):
        raise ValueError(f"{len(images)} images for {len(matrices)} matrices")
    height, width = size
    if not images:
        return torch.empty((0, height, width, 3), dtype=torch.uint8)
    out = torch.empty((len(images), height, width, 3), dtype=torch.uint8, device=images[0].device)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for index, (image, matrix) in enumerate(zip(images, matrices, strict=True)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"image {index}: expected (H, W, 3) uint8, got {tuple(image.shape)}")
        key = (int(image.shape[0]), int(image.shape[1]), supersampling(matrix))
        groups.setdefault(key, []).append(index)
    for (h, w, k), indices in groups.items():
        per_image = 3 * max(h * w, height * width * k * k)
        step = max(1, _CHUNK_VALUES // per_image)
        for start in range(0, len(indices), step):
            chunk = indices[start : start + step]
            crops = _warp_group([images[i] for i in chunk], [matrices[i] for i in chunk], size, k)
            out[torch.tensor(chunk, device=out.device)] = crops
    return out
