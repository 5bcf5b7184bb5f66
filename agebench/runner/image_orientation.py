"""EXIF orientation: read it without ever failing an image for broken metadata, and turn the
pixels upright."""

from __future__ import annotations

from typing import NamedTuple

from PIL import ExifTags, Image, ImageOps


class Upright(NamedTuple):
    """The index shuffle that turns a stored image upright: flip its rows (top to bottom),
    flip its columns (left to right), then swap its axes; pure shuffles, so the pixels are
    exactly those of ``PIL.ImageOps.exif_transpose``."""

    flip_rows: bool
    flip_cols: bool
    transpose: bool


#: EXIF orientation -> its shuffle (6 and 8, the rotations by 90 degrees, flip then swap)
UPRIGHT: dict[int, Upright] = {
    1: Upright(False, False, False),
    2: Upright(False, True, False),
    3: Upright(True, True, False),
    4: Upright(True, False, False),
    5: Upright(False, False, True),
    6: Upright(True, False, True),
    7: Upright(True, True, True),
    8: Upright(False, True, True),
}
#: orientations that swap width and height (transpose, rotations by 90 and 270 degrees)
AXIS_SWAPPING_ORIENTATIONS = frozenset(o for o, how in UPRIGHT.items() if how.transpose)


def read_orientation(image: Image.Image, notes: list[str]) -> int:
    """Return the EXIF orientation (1..8); broken or odd EXIF means 'as stored', with a note."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # EXIF is optional metadata: never fail an image because of it
        notes.append(f"unreadable EXIF ignored ({type(exc).__name__})")
        return 1
    if isinstance(value, int) and 1 <= value <= 8:
        return value
    notes.append(f"invalid EXIF orientation {value!r} ignored")
    return 1


def apply_orientation(image: Image.Image, orientation: int, notes: list[str]) -> Image.Image:
    """Transpose to upright; a failure keeps the stored orientation rather than losing the image."""
    if orientation == 1:
        return image
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:  # rewriting broken EXIF must not cost us the pixels
        notes.append(f"EXIF orientation {orientation} not applied ({type(exc).__name__})")
        return image
    notes.append(f"EXIF orientation {orientation} applied")
    return upright
