"""Baseline and progressive JPEGs through libjpeg-turbo (simplejpeg), with its warnings kept.

libjpeg *recovers* from damaged entropy-coded data: garbled bytes mid-scan give a picture whose
lower part is garbage plus a warning ("Corrupt JPEG data: premature end of data segment",
"... N extraneous bytes before marker 0xd9"). Pillow drops those warnings silently and OpenCV
prints them on stderr without a file name, so a damaged photo was scored ``ok``. simplejpeg
(TurboJPEG with TJFLAG_STOPONWARNING when ``strict=True``) turns the first warning into a
``ValueError`` carrying libjpeg's own message; a clean file costs one decode, exactly as before,
and only a damaged one is decoded a second time, leniently, to get its pixels. Nothing is ever
printed, and the check is per call, so it is safe in worker threads (no fd-2 capture).

Pixels are libjpeg-turbo's ISLOW IDCT with fancy upsampling: bit-identical to Pillow's and
OpenCV's decodes (``tests/unit/test_imageio.py`` checks it on the 48 shared chips). DCT scaling
(1/2, 1/4, 1/8) uses Pillow's ``draft`` rule for the factor, so reduced decodes keep their size.
"""

from __future__ import annotations

import math

import numpy as np
import simplejpeg

from agebench.runner.image_orientation import UPRIGHT

#: every note that reports a decoder warning starts with this, so summaries can count them
DECODER_WARNING = "decoder warning: "
#: DCT scale denominators libjpeg offers at or below full size (as Pillow's ``draft`` uses)
_FACTORS = (8, 4, 2, 1)


def draft_factor(
    size: tuple[int, int],
    *,
    draft_size: tuple[int, int] | None = None,
    max_side: int | None = None,
    reduce: int | None = None,
) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) for a JPEG of stored ``size``.

    ``draft_size``: never smaller than this (Pillow's rule: the largest factor ``s`` with
    ``size // draft_size >= s`` on both axes). ``max_side``: the longer side stays at least
    this long. ``reduce``: exactly this factor (rounded down to one libjpeg offers). The
    smallest of the factors asked for wins, so every request is honoured.
    """
    width, height = size
    wanted = [8]
    if draft_size is not None:
        wanted.append(min(width // draft_size[0], height // draft_size[1]))
    if max_side is not None:
        wanted.append(max(width, height) // max(1, max_side))
    if reduce is not None:
        wanted.append(reduce)
    if len(wanted) == 1:
        return 1
    limit = min(wanted)
    return next((s for s in _FACTORS if limit >= s), 1)


def decode_turbo(
    data: bytes, size: tuple[int, int], factor: int, *, grey: bool = False
) -> tuple[np.ndarray, str | None] | None:
    """Decode to ``H x W x 3`` RGB at 1/``factor`` scale: ``(pixels, first warning or None)``.

    None when libjpeg cannot decode the file at all (the caller's Pillow path then names the
    error as it always has). ``grey`` sources are decoded to grey and replicated, which is
    what Pillow's ``L -> RGB`` conversion gives.
    """
    width, height = size
    kwargs = {
        "colorspace": "GRAY" if grey else "RGB",
        "min_factor": factor,
        "min_width": -(-width // factor),
        "min_height": -(-height // factor),
    }
    warning = None
    try:
        pixels = simplejpeg.decode_jpeg(data, strict=True, **kwargs)
    except ValueError as strict_error:
        try:
            pixels = simplejpeg.decode_jpeg(data, strict=False, **kwargs)
        except ValueError:
            return None
        warning = _one_line(strict_error)
    if grey:
        pixels = np.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, axis=2)
    return pixels, warning


def jpeg_warning(data: bytes, *, cmyk: bool = False) -> str | None:
    """libjpeg's first warning for ``data`` (entropy-decoding it at 1/8 scale), else None.

    For the JPEGs Pillow decodes itself (CMYK, multi-picture): the check costs a cheap extra
    decode on those rare files only. A file libjpeg cannot decode at all gives None: Pillow's
    decode reports it.
    """
    kwargs = {"colorspace": "CMYK" if cmyk else "RGB", "min_factor": 8}
    try:
        simplejpeg.decode_jpeg(data, strict=True, **kwargs)
    except ValueError as strict_error:
        try:
            simplejpeg.decode_jpeg(data, strict=False, **kwargs)
        except ValueError:
            return None
        return _one_line(strict_error)
    return None


def upright_array(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation applied to an ``H x W x C`` array, as ``PIL.ImageOps.exif_transpose``.

    Pure index shuffles, so the pixels are exactly Pillow's; C-contiguous result.
    """
    how = UPRIGHT.get(orientation)
    if how is None or how == UPRIGHT[1]:
        return rgb
    out = rgb[::-1] if how.flip_rows else rgb
    out = out[:, ::-1] if how.flip_cols else out
    out = out.transpose(1, 0, 2) if how.transpose else out
    return np.ascontiguousarray(out)


def scaled_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """libjpeg's output size at 1/``factor``: each side rounded up."""
    return (math.ceil(size[0] / factor), math.ceil(size[1] / factor))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
