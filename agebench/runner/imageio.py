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
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from agebench.core.fileread import (
    DEFAULT_MAX_FILE_BYTES,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    open_regular_file,
    read_image_bytes,
)
from agebench.runner.jpeg import (
    DECODER_WARNING,
    decode_turbo,
    draft_factor,
    jpeg_warning,
    scaled_size,
    upright_array,
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


_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_AXIS_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
# round(v / 257) for every 16-bit value; one table lookup beats per-pixel integer division.
_LUT_16_TO_8 = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)
# Pillow signals malformed data with whatever the failing parser raised, not one exception type.
_PILLOW_DATA_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
)
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"WEBP", 8, "WebP"),
    (b"GIF8", 0, "GIF"),
    (b"BM", 0, "BMP"),
)


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
    _check_draft_size(draft_size)
    if data is None:
        data = read_image_bytes(path, max_bytes=max_bytes)
    elif not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    request = _Draft(draft_size, draft_max_side, reduce)
    with io.BytesIO(data) as fh:
        image = _identify(fh, path)
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
                return _header_pixels(fh)
        return _header_pixels(path)
    except Exception:  # decoding reports the reason with the file's record
        return 0


def _header_pixels(fh: BinaryIO) -> int:
    size = _jpeg_header_size(fh) or _png_header_size(fh)
    if size is not None:
        return size[0] * size[1]
    fh.seek(0)
    with Image.open(fh) as image:
        return int(image.width) * int(image.height)


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
    orientation = _read_orientation(image, notes)
    upright = _apply_orientation(image, orientation, notes)
    rgb = np.ascontiguousarray(_to_rgb_array(upright, path, notes))
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


#: start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size
#: (0xC4, 0xC8 and 0xCC, in that range, are other segments)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: markers with no length field (TEM, RSTn)
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_header_size(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking the marker segments; None when the
    file is no JPEG or its header is odd (Pillow then reads it).

    Pillow's ``Image.open`` costs about 150 us a file, as much as a third of decoding a 200 px
    chip, and the runner asks on the thread that hands chunks out: this walk costs a few reads.
    """
    fh.seek(0)
    if fh.read(2) != b"\xff\xd8":
        return None
    while True:
        if fh.read(1) != b"\xff":
            return None
        marker = fh.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fh.read(1)
        if not marker or marker[0] in (0xD9, 0xDA):  # end or scan before any frame header
            return None
        if marker[0] in _STANDALONE_MARKERS:
            continue
        length = int.from_bytes(fh.read(2), "big")
        if length < 2:
            return None
        if marker[0] in _SOF_MARKERS:
            frame = fh.read(5)
            if len(frame) < 5:
                return None
            return int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")
        fh.seek(length - 2, io.SEEK_CUR)


def _png_header_size(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, which the format puts first."""
    fh.seek(0)
    head = fh.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _check_draft_size(draft_size: tuple[int, int] | None) -> None:
    """Reject sizes that would make libjpeg's scale computation divide by zero."""
    if draft_size is not None and (len(draft_size) != 2 or min(draft_size) < 1):
        raise ValueError(f"draft_size must be two positive integers, got {draft_size!r}")


@dataclass(frozen=True, slots=True)
class _Draft:
    """What the caller allows a JPEG decode to shrink to (see :func:`decode_image`)."""

    size: tuple[int, int] | None
    max_side: int | None
    reduce: int | None

    def factor(self, stored: tuple[int, int], orientation: int) -> int:
        """The DCT scale denominator for a JPEG stored at ``stored`` with that orientation."""
        size = self.size
        if size is not None and orientation in _AXIS_SWAPPING_ORIENTATIONS:
            size = (size[1], size[0])
        return draft_factor(stored, draft_size=size, max_side=self.max_side, reduce=self.reduce)

    def target(self, stored: tuple[int, int], orientation: int) -> tuple[int, int] | None:
        """Pillow's ``draft`` target (stored orientation) for the same factor."""
        factor = self.factor(stored, orientation)
        if factor == 1:
            return None
        return (-(-stored[0] // factor), -(-stored[1] // factor))


def _identify(fh: BinaryIO, path: Path) -> Image.Image:
    """Parse the header only; tell 'not an image at all' apart from 'an image with a bad header'."""
    try:
        return Image.open(fh)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, f"image too large for Pillow's bomb guard ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, _unidentified_reason(fh)) from exc
    except _PILLOW_DATA_ERRORS as exc:
        raise ImageDecodeError(path, f"corrupt or truncated image header ({exc})") from exc


def _unidentified_reason(fh: BinaryIO) -> str:
    """Name the format a file claims by its magic bytes, or say what it looks like instead."""
    fh.seek(0)
    head = fh.read(64)
    for magic, offset, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return f"corrupt or truncated {name} data (header unreadable)"
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # a cut multi-byte char
    if text and "\ufffd" not in text and all(c.isprintable() or c.isspace() for c in text):
        return "not a recognised image (content looks like text)"
    return "not a recognised image (unknown binary content)"


def _decode_opened(
    image: Image.Image,
    path: Path,
    max_pixels: int,
    request: _Draft,
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
    if image.format in _JPEG_FORMATS:
        orientation = _read_orientation(image, notes)
        fast = _turbo_jpeg(image, data, orientation, request, notes)
        if fast is not None:
            rgb, scale = fast
        else:
            _check_jpeg_data(image, data, notes)
            target = request.target(stored_size, orientation)
            if target is not None:
                _apply_draft(image, target, notes)
    if rgb is None:
        _note_16bit_colour(image, notes)
        _load(image, path)
        scale = max(1, round(stored_size[0] / image.size[0]))
        if orientation is None:
            orientation = _read_orientation(image, notes)
        upright = _apply_orientation(image, orientation, notes)
        rgb = _to_rgb_array(upright, path, notes)
    if strict:
        _refuse_warnings(path, notes)
    swapped = orientation in _AXIS_SWAPPING_ORIENTATIONS
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


def _turbo_jpeg(
    image: Image.Image,
    data: bytes,
    orientation: int,
    request: _Draft,
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


def _check_jpeg_data(image: Image.Image, data: bytes, notes: list[str]) -> None:
    """Pillow ignores libjpeg's warnings: ask libjpeg about the JPEGs Pillow decodes itself."""
    if not _ends_with_eoi(data):
        return  # Pillow refuses a truncated file by itself
    warning = jpeg_warning(data, cmyk=image.mode == "CMYK")
    if warning is not None:
        notes.append(DECODER_WARNING + warning)


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
    except _PILLOW_DATA_ERRORS:
        animated = False  # a broken later frame does not spoil the first one
    if animated:
        image.seek(0)
        notes.append("first frame of animated image used")


def _read_orientation(image: Image.Image, notes: list[str]) -> int:
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


def _apply_draft(image: Image.Image, target: tuple[int, int], notes: list[str]) -> None:
    """Let libjpeg scale by 1/2..1/8 while decoding (``target`` in stored orientation)."""
    before = image.size
    image.draft("RGB", (int(target[0]), int(target[1])))
    if image.size != before:
        scale = round(before[0] / image.size[0])
        notes.append(f"JPEG decoded at 1/{scale} scale (draft)")


def _note_16bit_colour(image: Image.Image, notes: list[str]) -> None:
    """Record that Pillow silently dropped the low byte of 16-bit colour samples while opening."""
    tiles = getattr(image, "tile", None) or ()
    rawmode = getattr(tiles[0], "args", None) if tiles else None
    if isinstance(rawmode, str) and ";16" in rawmode and not image.mode.startswith("I"):
        notes.append("16-bit colour reduced to 8-bit by Pillow (high byte)")


def _load(image: Image.Image, path: Path) -> None:
    """Decode every pixel now, so truncation surfaces here (LOAD_TRUNCATED_IMAGES stays False)."""
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, f"image too large for Pillow's bomb guard ({exc})") from exc
    except _PILLOW_DATA_ERRORS as exc:
        raise ImageDecodeError(path, f"corrupt or truncated image data ({exc})") from exc


def _apply_orientation(image: Image.Image, orientation: int, notes: list[str]) -> Image.Image:
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


def _to_rgb_array(image: Image.Image, path: Path, notes: list[str]) -> np.ndarray:
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
