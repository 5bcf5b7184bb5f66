"""Any Pillow mode as an ``H x W x 3`` uint8 array, by the rules of ``agebench.runner.imageio``
(16-bit scaled by its full range, floats kept or stretched, transparency on white), each
conversion noted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from agebench.core.fileread import ImageDecodeError

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# round(v / 257) for every 16-bit value; one table lookup beats per-pixel integer division.
_LUT_16_TO_8 = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)


def note_16bit_colour(image: Image.Image, notes: list[str]) -> None:
    """Record that Pillow silently dropped the low byte of 16-bit colour samples while opening."""
    tiles = getattr(image, "tile", None) or ()
    rawmode = getattr(tiles[0], "args", None) if tiles else None
    if isinstance(rawmode, str) and ";16" in rawmode and not image.mode.startswith("I"):
        notes.append("16-bit colour reduced to 8-bit by Pillow (high byte)")


def to_rgb_array(image: Image.Image, path: Path, notes: list[str]) -> np.ndarray:
    """Convert any Pillow mode to ``H x W x 3`` uint8 with as few full-image passes as possible."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode.startswith("I;16") or mode == "I":
        return _grey_to_rgb(_int_to_uint8(np.asarray(image), notes))
    if mode == "F":
        return _grey_to_rgb(_float_to_uint8(np.asarray(image), notes))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        notes.append("alpha composited on white")
        return np.asarray(_composite_on_white(image))
    try:
        converted = image.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError(path, f"unsupported colour mode {mode}") from exc
    notes.append(f"{mode} converted to RGB")
    return np.asarray(converted)


def _int_to_uint8(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """Scale by the sample's full range (not clip), so 16-bit mid-grey stays mid-grey."""
    if values.dtype.itemsize == 2:
        notes.append("16-bit scaled to 8-bit")
        return _LUT_16_TO_8[values]
    clipped = np.clip(values, 0, None)
    if clipped.size == 0 or int(clipped.max()) <= 0xFFFF:
        notes.append("16-bit scaled to 8-bit")
        return _LUT_16_TO_8[clipped]
    notes.append("32-bit scaled to 8-bit")
    return (clipped >> 23).astype(np.uint8)


def _float_to_uint8(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """Keep normalised 0..1 data as is; stretch anything else rather than saturate it."""
    finite = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0:
        notes.append("float 0..1 scaled to 8-bit")
        return (finite * 255.0 + 0.5).astype(np.uint8)
    notes.append(f"float range {low:g}..{high:g} stretched to 8-bit")
    scale = 255.0 / (high - low) if high > low else 0.0
    return ((finite - low) * scale + 0.5).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """Replicate one channel into three, producing a C-contiguous array in one pass."""
    return np.repeat(grey[:, :, np.newaxis], 3, axis=2)


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Blend straight alpha over white; transparent pixels' stored colour is often garbage."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, (0, 0), rgba)
    return background
