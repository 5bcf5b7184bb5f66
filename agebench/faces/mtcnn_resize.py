"""Area resizing from a summed-area table, for MTCNN's image pyramid and its box crops:
exact integer sums and ``adaptive_avg_pool2d``'s bins (facenet's ``imresample``), as gathers
over all images and boxes at once instead of one ``interpolate`` call per box."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor


def integral(images: np.ndarray, device: torch.device) -> Tensor:
    """(N, 3, H+1, W+1) exact integer sums of uint8 (N, H, W, 3) images, zero first row/col.

    Channel planes, so that both resizing passes copy whole rows instead of gathering pixels.
    """
    if device.type == "cpu":  # OpenCV's integral is several times faster than two cumsums
        return integral_cv2(images)
    return integral_torch(torch.from_numpy(images).to(device))


def exact_dtype(images: np.ndarray | Tensor) -> bool:
    """Whether int32 holds every sum: then the table is int32, else 64-bit."""
    return 255 * images.shape[1] * images.shape[2] < 2**31


def integral_cv2(images: np.ndarray) -> Tensor:
    n, h, w, c = images.shape
    small = exact_dtype(images)
    table = np.empty((n, c, h + 1, w + 1), dtype=np.int32 if small else np.float64)
    depth = cv2.CV_32S if small else cv2.CV_64F
    for i in range(n):
        for k, plane in enumerate(cv2.split(images[i])):
            cv2.integral(plane, table[i, k], sdepth=depth)
    return torch.from_numpy(table)


def integral_torch(pixels: Tensor) -> Tensor:
    n, h, w, c = pixels.shape
    dtype = torch.int32 if exact_dtype(pixels) else torch.int64
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


def resize(table: Tensor, height: int, width: int) -> Tensor:
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


def crops(
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
