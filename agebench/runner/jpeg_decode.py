"""The JPEG path of ``decode_image``: how far a decode may be reduced (libjpeg's DCT scaling,
Pillow's ``draft``), and RGB and grey JPEGs through libjpeg-turbo with its warnings kept
(``agebench.runner.jpeg``); the JPEGs Pillow decodes itself are asked about warnings too."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from agebench.runner.image_orientation import AXIS_SWAPPING_ORIENTATIONS
from agebench.runner.jpeg import (
    DECODER_WARNING,
    decode_turbo,
    draft_factor,
    jpeg_warning,
    scaled_size,
    upright_array,
)

#: Pillow formats decoded by libjpeg
JPEG_FORMATS = frozenset({"JPEG", "MPO"})


def check_draft_size(draft_size: tuple[int, int] | None) -> None:
    """Reject sizes that would make libjpeg's scale computation divide by zero."""
    if draft_size is not None and (len(draft_size) != 2 or min(draft_size) < 1):
        raise ValueError(f"draft_size must be two positive integers, got {draft_size!r}")


@dataclass(frozen=True, slots=True)
class DraftRequest:
    """What the caller allows a JPEG decode to shrink to (see
    ``agebench.runner.imageio.decode_image``)."""

    size: tuple[int, int] | None
    max_side: int | None
    reduce: int | None

    def factor(self, stored: tuple[int, int], orientation: int) -> int:
        """The DCT scale denominator for a JPEG stored at ``stored`` with that orientation."""
        size = self.size
        if size is not None and orientation in AXIS_SWAPPING_ORIENTATIONS:
            size = (size[1], size[0])
        return draft_factor(stored, draft_size=size, max_side=self.max_side, reduce=self.reduce)

    def target(self, stored: tuple[int, int], orientation: int) -> tuple[int, int] | None:
        """Pillow's ``draft`` target (stored orientation) for the same factor."""
        factor = self.factor(stored, orientation)
        if factor == 1:
            return None
        return (-(-stored[0] // factor), -(-stored[1] // factor))


def decode_with_turbo(
    image: Image.Image,
    data: bytes,
    orientation: int,
    request: DraftRequest,
    notes: list[str],
) -> tuple[np.ndarray, int] | None:
    """RGB and grey JPEGs through libjpeg-turbo with its warnings kept (``agebench.runner.jpeg``).

    Bit-identical to Pillow's decode (and its ``draft``), EXIF rotation included, and faster.
    Everything unusual stays with Pillow: CMYK, multi-picture files, and any file that does not
    end with the end-of-image marker, because libjpeg would return a truncated JPEG grey-filled
    where Pillow rightly reports it. Returns ``(pixels, scale)`` or None for the Pillow path.
    """
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    if not _ends_with_eoi(data):
        return None
    factor = request.factor(image.size, orientation)
    decoded = decode_turbo(data, image.size, factor, grey=image.mode == "L")
    if decoded is None:
        return None
    rgb, warning = decoded
    if rgb.shape[:2] != scaled_size(image.size, factor)[::-1]:
        return None  # libjpeg chose another scale than Pillow would: let Pillow do it
    if factor > 1:
        notes.append(f"JPEG decoded at 1/{factor} scale (draft)")
    if orientation != 1:
        rgb = upright_array(rgb, orientation)
        notes.append(f"EXIF orientation {orientation} applied")
    if image.mode == "L":
        notes.append("L converted to RGB")
    if warning is not None:
        notes.append(DECODER_WARNING + warning)
    return rgb, factor


def _ends_with_eoi(data: bytes) -> bool:
    return data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9")


def check_jpeg_data(image: Image.Image, data: bytes, notes: list[str]) -> None:
    """Pillow ignores libjpeg's warnings: ask libjpeg about the JPEGs Pillow decodes itself."""
    if not _ends_with_eoi(data):
        return  # Pillow refuses a truncated file by itself
    warning = jpeg_warning(data, cmyk=image.mode == "CMYK")
    if warning is not None:
        notes.append(DECODER_WARNING + warning)


def apply_draft(image: Image.Image, target: tuple[int, int], notes: list[str]) -> None:
    """Let libjpeg scale by 1/2..1/8 while decoding (``target`` in stored orientation)."""
    before = image.size
    image.draft("RGB", (int(target[0]), int(target[1])))
    if image.size != before:
        scale = round(before[0] / image.size[0])
        notes.append(f"JPEG decoded at 1/{scale} scale (draft)")
