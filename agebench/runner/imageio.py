"""Decode photos into upright 8-bit RGB arrays, turning every failure into one readable line.

A batch over millions of files meets every oddity there is: empty and truncated files, text saved
as ``.png``, CMYK scans, 16-bit greyscale, transparent PNGs and phones that store pixels sideways
behind an EXIF tag. Face detectors want one thing, an upright ``H x W x 3`` uint8 array, so every
input is normalised here and every failure becomes :class:`ImageDecodeError` naming the file.

Choices worth knowing:

* **16-bit greyscale** (``I;16*``) is scaled by its full range, ``round(v / 257)``: 65535 -> 255,
  32768 -> 128. Mode ``I`` (32-bit) is treated as 16-bit when its values fit in 0..65535 (how
  16-bit PNGs used to open) and as 31-bit otherwise. Negative values are clipped to 0.
* **16-bit colour PNGs** never reach us as 16-bit: Pillow opens them as 8-bit ``RGB``/``RGBA``
  keeping the high byte (truncation, at most one level below rounding). We only add a note.
* **Float images** (``F``): values already within 0..1 are scaled by 255, the usual convention;
  anything else is min-max stretched, because clipping unnormalised data to 0..1 would turn the
  whole face white. NaN and infinities count as 0.
* **CMYK JPEGs** are read with Pillow's Adobe (inverted) polarity, which is how Photoshop and
  Pillow itself write them, then converted without a colour profile.
* **Transparency** of any kind is composited over white, the usual background of ID photos.
* **Animated** files (GIF, WebP, APNG, multi-picture JPEG) give their first frame.
* **Decompression bombs**: ``max_pixels`` is checked from the header before any pixel is decoded.
  Pillow's own guard (2 x ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP by default) still applies
  first and is reported the same way; this module never changes Pillow's global settings.
* Returned arrays may be read-only (``np.asarray`` wraps Pillow's bytes without another
  copy): copy before writing into one.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from agebench.core.fileread import (
    DEFAULT_MAX_FILE_BYTES,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    open_regular_file,
    read_image_bytes,
)
from agebench.runner.image_headers import PILLOW_DATA_ERRORS, identify, pixels_in_header
from agebench.runner.image_modes import note_16bit_colour, to_rgb_array
from agebench.runner.image_orientation import (
    AXIS_SWAPPING_ORIENTATIONS,
    apply_orientation,
    read_orientation,
)
from agebench.runner.jpeg import DECODER_WARNING
from agebench.runner.jpeg_decode import (
    JPEG_FORMATS,
    DraftRequest,
    apply_draft,
    check_draft_size,
    check_jpeg_data,
    decode_with_turbo,
)

__all__ = [
    "DECODER_WARNING",
    "IMAGE_EXTENSIONS",
    "DecodedImage",
    "ImageDecodeError",
    "decode_image",
    "decode_pillow",
    "decoded_array",
    "has_decoder_warning",
    "header_pixels",
]


def has_decoder_warning(notes: Iterable[str] | None) -> bool:
    """Whether an image's notes say its decoder warned (data it decoded around): summaries
    count these, so that a damaged file scored ``ok`` is never silent."""
    return any(note.startswith(DECODER_WARNING) for note in notes or ())


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An upright RGB image plus what was done to get it, so reports can explain odd results."""

    rgb: np.ndarray
    width: int
    height: int
    source_mode: str
    exif_orientation: int
    notes: tuple[str, ...]
    #: (width, height) of the full-resolution upright image; differs from the array's size
    #: only when a draft decode shrank it
    full_size: tuple[int, int] = (0, 0)
    #: the DCT scale denominator of a reduced JPEG decode (1: full size); a pixel of ``rgb``
    #: covers ``scale x scale`` pixels of the file
    scale: int = 1


def decode_image(
    path: Path,
    *,
    max_pixels: int = 200_000_000,
    draft_size: tuple[int, int] | None = None,
    data: bytes | None = None,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    draft_max_side: int | None = None,
    reduce: int | None = None,
) -> DecodedImage:
    """Decode ``path`` to an upright, C-contiguous ``H x W x 3`` uint8 array.

    ``draft_size`` (width, height as displayed, i.e. after EXIF orientation) lets JPEGs decode at
    1/2, 1/4 or 1/8 scale inside libjpeg, far faster for large photos; the result is never smaller
    than ``draft_size`` unless the image itself is. ``draft_max_side``: likewise, keeping the
    longer side at least this long (detection needs no more); ``reduce``: exactly 1/``reduce``
    scale (1, 2, 4 or 8), for a second decode sized to a face. ``data``: the file's bytes, already
    read (eval hashes them first), so the file is not read twice; otherwise the file is read by
    :func:`~agebench.core.fileread.read_image_bytes` (regular files only, at most ``max_bytes``).
    Decoder warnings (damaged JPEG data that libjpeg patched over) become a note starting with
    :data:`DECODER_WARNING`, or, with ``strict``, an :class:`ImageDecodeError` with that reason.
    """
    path = Path(path)
    check_draft_size(draft_size)
    if data is None:
        data = read_image_bytes(path, max_bytes=max_bytes)
    elif not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    request = DraftRequest(draft_size, draft_max_side, reduce)
    with io.BytesIO(data) as fh:
        image = identify(fh, path)
        try:
            return _decode_opened(image, path, max_pixels, request, data, strict)
        finally:
            image.close()


def header_pixels(path: Path | str | BinaryIO) -> int:
    """Width x height from the file's header (0 when unknown), without decoding a pixel.

    Lets the runner count the pixels a chunk will hold before decoding it. Only regular files
    are opened, without blocking; anything odd counts 0 and is named when it is decoded.
    ``path`` may also be an open binary stream (an image given in memory).
    """
    try:
        if isinstance(path, str | Path):
            with open_regular_file(path) as fh:
                return pixels_in_header(fh)
        return pixels_in_header(path)
    except Exception:  # decoding reports the reason with the file's record
        return 0


def decode_pillow(
    image: Image.Image, name: Path | str, *, max_pixels: int = 200_000_000, strict: bool = False
) -> DecodedImage:
    """An image opened (or made) with Pillow, normalised as a file's decode is: EXIF
    orientation applied, any mode converted to RGB by the same rules (16-bit scaled,
    transparency on white...). ``name`` names it in errors.

    The image's current frame is used as it is (a caller who picked a frame meant it), and
    the caller's image is never changed: a lazily opened one is loaded, transposition copies.
    A file's JPEG decode may be reduced (draft) where a Pillow image is always taken at full
    size, so the two agree exactly only when the file path decodes at full size as well.
    """
    path = Path(name)
    _check_dimensions(image, path, max_pixels)
    notes: list[str] = []
    _load(image, path)
    orientation = read_orientation(image, notes)
    upright = apply_orientation(image, orientation, notes)
    rgb = np.ascontiguousarray(to_rgb_array(upright, path, notes))
    if strict:
        _refuse_warnings(path, notes)
    return DecodedImage(
        rgb=rgb,
        width=rgb.shape[1],
        height=rgb.shape[0],
        source_mode=image.mode,
        exif_orientation=orientation,
        notes=tuple(notes),
        full_size=(rgb.shape[1], rgb.shape[0]),
    )


def decoded_array(rgb: np.ndarray, name: Path | str) -> DecodedImage:
    """An RGB ``H x W x 3`` uint8 array taken as a decoded image (no orientation: an array
    has no EXIF); anything else is refused with :class:`ImageDecodeError` naming the shape."""
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageDecodeError(
            name,
            f"expected an RGB uint8 array of shape (H, W, 3), got {array.dtype} "
            f"{tuple(array.shape)}",
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(name, f"zero-size image ({array.shape[1]}x{array.shape[0]})")
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return DecodedImage(
        rgb=array,
        width=width,
        height=height,
        source_mode="RGB array",
        exif_orientation=1,
        notes=(),
        full_size=(width, height),
    )


def _decode_opened(
    image: Image.Image,
    path: Path,
    max_pixels: int,
    request: DraftRequest,
    data: bytes,
    strict: bool,
) -> DecodedImage:
    """Run the pipeline on an identified image: guard, pick frame, draft, load, orient, convert."""
    _check_dimensions(image, path, max_pixels)
    stored_size = image.size
    notes: list[str] = []
    source_mode = image.mode
    _use_first_frame(image, notes)
    orientation: int | None = None
    rgb: np.ndarray | None = None
    scale = 1
    if image.format in JPEG_FORMATS:
        orientation = read_orientation(image, notes)
        fast = decode_with_turbo(image, data, orientation, request, notes)
        if fast is not None:
            rgb, scale = fast
        else:
            check_jpeg_data(image, data, notes)
            target = request.target(stored_size, orientation)
            if target is not None:
                apply_draft(image, target, notes)
    if rgb is None:
        note_16bit_colour(image, notes)
        _load(image, path)
        scale = max(1, round(stored_size[0] / image.size[0]))
        if orientation is None:
            orientation = read_orientation(image, notes)
        upright = apply_orientation(image, orientation, notes)
        rgb = to_rgb_array(upright, path, notes)
    # read above on both paths: before decoding for a JPEG, after loading otherwise
    assert orientation is not None
    if strict:
        _refuse_warnings(path, notes)
    swapped = orientation in AXIS_SWAPPING_ORIENTATIONS
    return DecodedImage(
        rgb=rgb,
        width=rgb.shape[1],
        height=rgb.shape[0],
        source_mode=source_mode,
        exif_orientation=orientation,
        notes=tuple(notes),
        full_size=stored_size[::-1] if swapped else stored_size,
        scale=scale,
    )


def _refuse_warnings(path: Path, notes: list[str]) -> None:
    """Strict mode: damaged data that the decoder patched over fails the image."""
    for note in notes:
        if note.startswith(DECODER_WARNING):
            raise ImageDecodeError(path, note)


def _check_dimensions(image: Image.Image, path: Path, max_pixels: int) -> None:
    """Refuse before decoding: a tiny file can declare a size that would exhaust memory."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(path, f"zero-size image ({width}x{height})")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageDecodeError(
            path,
            f"image too large: {pixels:,} pixels ({width}x{height}) exceeds the limit of "
            f"{max_pixels:,} pixels (decompression-bomb guard)",
        )


def _use_first_frame(image: Image.Image, notes: list[str]) -> None:
    """Face analysis wants one picture; the first frame is the one viewers show as a thumbnail."""
    try:
        animated = bool(getattr(image, "is_animated", False))
    except PILLOW_DATA_ERRORS:
        animated = False  # a broken later frame does not spoil the first one
    if animated:
        image.seek(0)
        notes.append("first frame of animated image used")


def _load(image: Image.Image, path: Path) -> None:
    """Decode every pixel now, so truncation surfaces here (LOAD_TRUNCATED_IMAGES stays False)."""
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, f"image too large for Pillow's bomb guard ({exc})") from exc
    except PILLOW_DATA_ERRORS as exc:
        raise ImageDecodeError(path, f"corrupt or truncated image data ({exc})") from exc
