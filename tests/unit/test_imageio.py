"""decode_image on every awkward input: right pixels out, or one clear line naming the file."""

from __future__ import annotations

import errno
import io
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, ImageOps

from agebench.core import fileread
from agebench.core.errors import AgebenchError
from agebench.runner import imageio, jpeg_decode
from agebench.runner.imageio import (
    IMAGE_EXTENSIONS,
    DecodedImage,
    ImageDecodeError,
    decode_image,
)
from tests.fixtures.bad_images import (
    ALPHA_BORDER,
    EXPECTED_DECODE_FAILURES,
    HUGE_SIZE,
    write_bad_inputs,
)

# ----------------------------------------------------------------------------- fixtures/helpers
# ``face_rgb`` (a real face chip) comes from tests/conftest.py.


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, face_rgb: np.ndarray) -> dict[str, Path]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad_inputs"), face_rgb)


def _save(path: Path, image: Image.Image, fmt: str, **params: object) -> Path:
    image.save(path, fmt, **params)
    return path


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _pattern(height: int = 3, width: int = 5) -> np.ndarray:
    """Distinct random pixels, so any flip or rotation is detectable exactly."""
    return np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _assert_rgb(decoded: DecodedImage, height: int, width: int) -> None:
    rgb = decoded.rgb
    assert rgb.shape == (height, width, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags.c_contiguous
    assert (decoded.width, decoded.height) == (width, height)


def _png_16bit(path: Path, samples: np.ndarray, colour_type: int) -> Path:
    """Hand-built 16-bit PNG (Pillow cannot write 16-bit colour PNGs)."""
    height, width = samples.shape[:2]
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def _with_orientation(orientation: object) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif.tobytes()


# ----------------------------------------------------------------------------- failures


def test_fixture_writes_every_case(bad: dict[str, Path]) -> None:
    expected = {
        "corrupt.jpg", "truncated.jpg", "empty.jpg", "text.png", "alpha.png", "gray16.png",
        "cmyk.jpg", "gray.jpg", "exif_rotated.jpg", "huge.jpg", "noface.jpg", "palette.png",
        "dir_named.jpg",
    }  # fmt: skip
    assert expected <= set(bad)
    assert set(bad) - expected <= {"unreadable.jpg"}
    assert all(path.exists() for path in bad.values())


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt.jpg", "corrupt or truncated image data"),
        ("truncated.jpg", "truncated"),
        ("empty.jpg", "empty file (0 bytes)"),
        ("text.png", "not a recognised image (content looks like text)"),
        ("dir_named.jpg", "is a directory"),
    ],
)
def test_bad_input_fails_with_one_line_naming_file(
    bad: dict[str, Path], name: str, reason: str
) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bad[name])
    message = str(caught.value)
    assert message.startswith(f"{bad[name]}: ")
    assert reason in message
    assert "\n" not in message and "Traceback" not in message
    assert caught.value.path == bad[name]
    assert name in EXPECTED_DECODE_FAILURES


def test_every_other_fixture_decodes(bad: dict[str, Path]) -> None:
    for name in sorted(set(bad) - EXPECTED_DECODE_FAILURES - {"huge.jpg"}):
        decoded = decode_image(bad[name])
        assert decoded.rgb.ndim == 3, name


def test_permission_bits_deny_read(bad: dict[str, Path]) -> None:
    if "unreadable.jpg" not in bad:
        pytest.skip("running with CAP_DAC_OVERRIDE (root): a mode-000 file is still readable")
    with pytest.raises(ImageDecodeError, match="permission denied"):
        decode_image(bad["unreadable.jpg"])


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.EIO, "Input/output error"), "cannot read file (Input/output error)"),
    ],
)
def test_os_errors_when_opening_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: OSError, reason: str
) -> None:
    """Root ignores mode bits, so simulate what open() raises for other users and failing disks."""

    def failing_open(*args: object, **kwargs: object) -> None:
        raise error

    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff")
    monkeypatch.setattr(fileread.os, "open", failing_open)
    with pytest.raises(ImageDecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_image(tmp_path / "x.jpg")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="file not found"):
        decode_image(tmp_path / "absent.jpg")


def test_binary_junk_and_bad_headers_are_told_apart(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ImageDecodeError, match=r"not a recognised image \(unknown binary"):
        decode_image(junk)
    fake_png = tmp_path / "fake.png"
    fake_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated PNG data"):
        decode_image(fake_png)


def test_truncation_is_not_tolerated_globally(bad: dict[str, Path]) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(bad["truncated.jpg"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_error_pickles_and_is_a_user_error(tmp_path: Path) -> None:
    error = ImageDecodeError(tmp_path / "a.jpg", "empty file\n(0 bytes)")
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == str(error) == f"{tmp_path / 'a.jpg'}: empty file (0 bytes)"
    assert isinstance(clone, AgebenchError)
    assert clone.reason == "empty file (0 bytes)"


def test_size_over_max_pixels_is_refused_before_decoding(bad: dict[str, Path]) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bad["huge.jpg"], max_pixels=10_000_000)
    message = str(caught.value)
    assert "24,000,000 pixels" in message
    assert "10,000,000" in message
    assert "decompression-bomb" in message


def test_pillow_bomb_guard_is_reported(
    monkeypatch: pytest.MonkeyPatch, bad: dict[str, Path]
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match="bomb guard"):
        decode_image(bad["noface.jpg"])


def test_zero_size_image(monkeypatch: pytest.MonkeyPatch, bad: dict[str, Path]) -> None:
    """Pillow's parsers reject 0-pixel headers themselves; make sure we would too."""
    monkeypatch.setattr(Image, "open", lambda fh: Image.new("RGB", (0, 5)))
    with pytest.raises(ImageDecodeError, match=r"zero-size image \(0x5\)"):
        decode_image(bad["noface.jpg"])


def test_invalid_draft_size(bad: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="draft_size"):
        decode_image(bad["noface.jpg"], draft_size=(0, 10))


# ----------------------------------------------------------------------------- modes


@pytest.mark.parametrize(
    ("name", "mode", "note"),
    [
        ("alpha.png", "RGBA", "alpha composited on white"),
        ("gray16.png", "I;16", "16-bit scaled to 8-bit"),
        ("cmyk.jpg", "CMYK", "CMYK converted to RGB"),
        ("gray.jpg", "L", "L converted to RGB"),
        ("palette.png", "P", "P converted to RGB"),
        ("noface.jpg", "RGB", None),
    ],
)
def test_fixture_modes_decode_to_rgb(
    bad: dict[str, Path], name: str, mode: str, note: str | None
) -> None:
    decoded = decode_image(bad[name])
    assert decoded.source_mode == mode
    assert decoded.exif_orientation == 1
    assert decoded.notes == ((note,) if note else ())
    _assert_rgb(decoded, decoded.rgb.shape[0], decoded.rgb.shape[1])


def test_alpha_composited_on_white(bad: dict[str, Path], face_rgb: np.ndarray) -> None:
    rgb = decode_image(bad["alpha.png"]).rgb
    height, width = face_rgb.shape[:2]
    _assert_rgb(decode_image(bad["alpha.png"]), height + 2 * ALPHA_BORDER, width + 2 * ALPHA_BORDER)
    inner = (slice(ALPHA_BORDER, ALPHA_BORDER + height), slice(ALPHA_BORDER, ALPHA_BORDER + width))
    np.testing.assert_array_equal(rgb[inner], face_rgb)
    border = np.ones(rgb.shape[:2], dtype=bool)
    border[inner] = False
    assert (rgb[border] == 255).all()


def test_partial_alpha_blends_with_white(tmp_path: Path) -> None:
    pixels = np.array([[[0, 0, 0, 128], [200, 100, 0, 255], [10, 20, 30, 0]]], dtype=np.uint8)
    path = _save(tmp_path / "a.png", Image.fromarray(pixels, "RGBA"), "PNG")
    rgb = decode_image(path).rgb.astype(int)
    np.testing.assert_allclose(rgb[0, 0], [127, 127, 127], atol=1)
    np.testing.assert_array_equal(rgb[0, 1], [200, 100, 0])
    np.testing.assert_array_equal(rgb[0, 2], [255, 255, 255])


def test_grey_alpha_and_palette_transparency(tmp_path: Path) -> None:
    grey_alpha = Image.fromarray(np.array([[[0, 0], [90, 255]]], dtype=np.uint8), "LA")
    decoded = decode_image(_save(tmp_path / "la.png", grey_alpha, "PNG"))
    assert decoded.source_mode == "LA"
    np.testing.assert_array_equal(decoded.rgb[0], [[255, 255, 255], [90, 90, 90]])

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((1, 0), 1)
    decoded = decode_image(_save(tmp_path / "p.png", palette, "PNG", transparency=1))
    assert decoded.notes == ("alpha composited on white",)
    np.testing.assert_array_equal(decoded.rgb[0], [[255, 0, 0], [255, 255, 255]])


def test_gray16_fixture_scales_by_full_range(bad: dict[str, Path], face_rgb: np.ndarray) -> None:
    rgb = decode_image(bad["gray16.png"]).rgb
    grey = np.asarray(Image.fromarray(face_rgb).convert("L"))
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


@pytest.mark.parametrize("big_endian_tiff", [False, True])
def test_16bit_grey_values(tmp_path: Path, big_endian_tiff: bool) -> None:
    values = np.array([[0, 128, 129, 257, 32768, 65534, 65535]], dtype=np.uint16)
    if big_endian_tiff:
        path = _save(tmp_path / "g.tif", Image.fromarray(values.astype(">u2")), "TIFF")
        mode = "I;16B"
    else:
        path = _save(tmp_path / "g.png", Image.fromarray(values), "PNG")
        mode = "I;16"
    decoded = decode_image(path)
    assert decoded.source_mode == mode
    np.testing.assert_array_equal(decoded.rgb[0, :, 0], [0, 0, 1, 1, 128, 255, 255])
    assert decoded.notes == ("16-bit scaled to 8-bit",)


def test_32bit_int_grey(tmp_path: Path) -> None:
    fits_16 = np.array([[-5, 0, 32768, 65535]], dtype=np.int32)
    decoded = decode_image(_save(tmp_path / "a.tif", Image.fromarray(fits_16), "TIFF"))
    assert decoded.source_mode == "I"
    np.testing.assert_array_equal(decoded.rgb[0, :, 1], [0, 0, 128, 255])
    wide = np.array([[0, 2**30, 2**31 - 1]], dtype=np.int32)
    decoded = decode_image(_save(tmp_path / "b.tif", Image.fromarray(wide), "TIFF"))
    np.testing.assert_array_equal(decoded.rgb[0, :, 2], [0, 128, 255])
    assert decoded.notes == ("32-bit scaled to 8-bit",)


def test_float_images(tmp_path: Path) -> None:
    unit = np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)
    decoded = decode_image(_save(tmp_path / "u.tif", Image.fromarray(unit), "TIFF"))
    assert decoded.source_mode == "F"
    np.testing.assert_array_equal(decoded.rgb[0, :, 0], [0, 128, 255, 0])
    wide = np.array([[-1.0, 1.0, 3.0]], dtype=np.float32)
    decoded = decode_image(_save(tmp_path / "w.tif", Image.fromarray(wide), "TIFF"))
    np.testing.assert_array_equal(decoded.rgb[0, :, 0], [0, 128, 255])
    assert "stretched" in decoded.notes[0]


def test_16bit_colour_png_arrives_as_8bit(tmp_path: Path) -> None:
    samples = np.array([[[65535, 32768, 0], [3000, 256, 255]]], dtype=np.uint16)
    decoded = decode_image(_png_16bit(tmp_path / "c.png", samples, colour_type=2))
    assert decoded.source_mode == "RGB"
    np.testing.assert_array_equal(decoded.rgb[0], [[255, 128, 0], [11, 1, 0]])  # high byte
    assert decoded.notes == ("16-bit colour reduced to 8-bit by Pillow (high byte)",)


def test_cmyk_jpeg_matches_face(bad: dict[str, Path], face_rgb: np.ndarray) -> None:
    rgb = decode_image(bad["cmyk.jpg"]).rgb
    assert _mean_abs_diff(rgb, face_rgb) < 4
    assert _mean_abs_diff(255 - rgb, face_rgb) > 40  # polarity is not inverted


def test_grey_and_palette_look_like_the_face(bad: dict[str, Path], face_rgb: np.ndarray) -> None:
    grey = np.asarray(Image.fromarray(face_rgb).convert("L"))
    gray_jpg = decode_image(bad["gray.jpg"]).rgb
    assert (gray_jpg[:, :, 0] == gray_jpg[:, :, 2]).all()
    assert _mean_abs_diff(gray_jpg[:, :, 0], grey) < 3
    assert _mean_abs_diff(decode_image(bad["palette.png"]).rgb, face_rgb) < 8


def test_bilevel_image(tmp_path: Path) -> None:
    bilevel = Image.fromarray(np.array([[0, 255, 0]], dtype=np.uint8)).convert("1")
    decoded = decode_image(_save(tmp_path / "b.png", bilevel, "PNG"))
    assert decoded.source_mode == "1"
    np.testing.assert_array_equal(decoded.rgb[0, :, 0], [0, 255, 0])


def test_noface_gradient(bad: dict[str, Path]) -> None:
    decoded = decode_image(bad["noface.jpg"])
    _assert_rgb(decoded, 240, 320)
    assert decoded.rgb[120, 2, 0] < 10 < 245 < decoded.rgb[120, -3, 0]


def test_huge_decodes_in_full_within_default_limit(bad: dict[str, Path]) -> None:
    decoded = decode_image(bad["huge.jpg"])
    _assert_rgb(decoded, HUGE_SIZE[1], HUGE_SIZE[0])
    assert decoded.notes == ()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_gives_first_frame(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], **extra)
    decoded = decode_image(path)
    np.testing.assert_array_equal(decoded.rgb[0, 0], [255, 0, 0])
    assert "first frame of animated image used" in decoded.notes


# ----------------------------------------------------------------------------- orientation

# How each EXIF orientation stores an upright image (the inverse of what a viewer applies).
_STORED: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda up: up,
    2: lambda up: up[:, ::-1],
    3: lambda up: up[::-1, ::-1],
    4: lambda up: up[::-1],
    5: lambda up: up.transpose(1, 0, 2),
    6: lambda up: np.rot90(up, 1),
    7: lambda up: np.rot90(up, 2).transpose(1, 0, 2),
    8: lambda up: np.rot90(up, -1),
}


@pytest.mark.parametrize("orientation", sorted(_STORED))
def test_every_exif_orientation_is_made_upright(tmp_path: Path, orientation: int) -> None:
    upright = _pattern()
    stored = Image.fromarray(np.ascontiguousarray(_STORED[orientation](upright)))
    path = _save(tmp_path / "o.png", stored, "PNG", exif=_with_orientation(orientation))
    decoded = decode_image(path)
    np.testing.assert_array_equal(decoded.rgb, upright)
    assert decoded.exif_orientation == orientation
    applied = () if orientation == 1 else (f"EXIF orientation {orientation} applied",)
    assert decoded.notes == applied


def test_exif_rotated_fixture_is_upright(bad: dict[str, Path], face_rgb: np.ndarray) -> None:
    decoded = decode_image(bad["exif_rotated.jpg"])
    assert decoded.exif_orientation == 6
    assert _mean_abs_diff(decoded.rgb, face_rgb) < 3
    assert _mean_abs_diff(decoded.rgb, np.rot90(face_rgb, 1)) > 3 * _mean_abs_diff(
        decoded.rgb, face_rgb
    )


@pytest.mark.parametrize("value", [0, 9, 300])
def test_invalid_orientation_values_are_ignored(tmp_path: Path, value: object) -> None:
    upright = _pattern()
    path = _save(tmp_path / "o.png", Image.fromarray(upright), "PNG", exif=_with_orientation(value))
    decoded = decode_image(path)
    np.testing.assert_array_equal(decoded.rgb, upright)
    assert decoded.exif_orientation == 1
    assert decoded.notes == (f"invalid EXIF orientation {value!r} ignored",)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_garbage_exif_segment_still_decodes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (40, 80, 120)).save(buffer, "JPEG")
    payload = b"Exif\x00\x00II\x2a\x00\xff\xff\xff\x00" + b"\xee" * 20
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    path = tmp_path / "garbage_exif.jpg"
    path.write_bytes(buffer.getvalue()[:2] + segment + buffer.getvalue()[2:])
    decoded = decode_image(path)
    _assert_rgb(decoded, 6, 8)
    assert decoded.exif_orientation == 1


def test_exif_that_cannot_be_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken_getexif(self: Image.Image) -> Image.Exif:
        raise SyntaxError("not a TIFF file")

    path = _save(tmp_path / "o.png", Image.fromarray(_pattern()), "PNG")
    monkeypatch.setattr(Image.Image, "getexif", broken_getexif)
    decoded = decode_image(path)
    np.testing.assert_array_equal(decoded.rgb, _pattern())
    assert decoded.exif_orientation == 1
    assert decoded.notes == ("unreadable EXIF ignored (SyntaxError)",)


def test_orientation_that_cannot_be_applied(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken_transpose(image: Image.Image) -> Image.Image:
        raise ValueError("bad XMP")

    stored = np.ascontiguousarray(_STORED[6](_pattern()))
    path = _save(tmp_path / "o.png", Image.fromarray(stored), "PNG", exif=_with_orientation(6))
    monkeypatch.setattr(ImageOps, "exif_transpose", broken_transpose)
    decoded = decode_image(path)
    np.testing.assert_array_equal(decoded.rgb, stored)
    assert decoded.notes == ("EXIF orientation 6 not applied (ValueError)",)


# ----------------------------------------------------------------------------- draft


def test_draft_on_huge_jpeg_uses_dct_scaling(bad: dict[str, Path]) -> None:
    decoded = decode_image(bad["huge.jpg"], draft_size=(224, 224))
    _assert_rgb(decoded, 500, 750)
    assert decoded.notes == ("JPEG decoded at 1/8 scale (draft)",)


@pytest.mark.parametrize("orientation", [1, 6])
def test_draft_never_undershoots(tmp_path: Path, orientation: int) -> None:
    stored = Image.new("RGB", (803, 611), (90, 120, 150))
    path = _save(tmp_path / "d.jpg", stored, "JPEG", exif=_with_orientation(orientation))
    full_w, full_h = (803, 611) if orientation == 1 else (611, 803)
    rng = np.random.default_rng(3)
    targets = [(1, 1), (100, 76), (101, 77), (350, 100), (611, 803), (900, 900)]
    targets += [tuple(int(v) for v in rng.integers(1, 820, 2)) for _ in range(12)]
    for want_w, want_h in targets:
        decoded = decode_image(path, draft_size=(want_w, want_h))
        assert decoded.width >= min(want_w, full_w), (want_w, want_h, decoded.width)
        assert decoded.height >= min(want_h, full_h), (want_w, want_h, decoded.height)
        assert decoded.width <= full_w and decoded.height <= full_h


def test_draft_respects_rotation(tmp_path: Path) -> None:
    """Stored 800x600 shown as 600x800: asking for 350 wide must not decode at 1/2 (300 wide)."""
    stored = Image.new("RGB", (800, 600), (90, 120, 150))
    path = _save(tmp_path / "r.jpg", stored, "JPEG", exif=_with_orientation(6))
    decoded = decode_image(path, draft_size=(350, 100))
    assert (decoded.width, decoded.height) == (600, 800)
    decoded = decode_image(path, draft_size=(100, 350))
    assert (decoded.width, decoded.height) == (300, 400)
    assert decoded.notes == ("JPEG decoded at 1/2 scale (draft)", "EXIF orientation 6 applied")


def test_draft_is_ignored_for_png(tmp_path: Path) -> None:
    path = _save(tmp_path / "p.png", Image.new("RGB", (64, 48)), "PNG")
    decoded = decode_image(path, draft_size=(8, 8))
    _assert_rgb(decoded, 48, 64)
    assert decoded.notes == ()


# ----------------------------------------------------------------------------- misc


def test_image_extensions() -> None:
    assert frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"}) == IMAGE_EXTENSIONS
    assert all(ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_returned_image_is_frozen(bad: dict[str, Path]) -> None:
    decoded = decode_image(bad["gray.jpg"])
    with pytest.raises(AttributeError):
        decoded.width = 1  # type: ignore[misc]
    assert not hasattr(decoded, "__dict__")


def test_accepts_str_paths(bad: dict[str, Path], face_rgb: np.ndarray) -> None:
    decoded = decode_image(str(bad["gray.jpg"]))  # type: ignore[arg-type]
    assert decoded.rgb.shape == face_rgb.shape


def test_plain_jpegs_take_the_fast_decoder_and_match_pillow(face_chips, monkeypatch):
    """RGB and grey JPEGs go through libjpeg-turbo (simplejpeg, warnings kept): pixel for
    pixel what Pillow gives, full size and drafted, with nothing noted beyond Pillow's notes."""
    calls: list[int] = []
    real = jpeg_decode.decode_turbo
    monkeypatch.setattr(
        jpeg_decode, "decode_turbo", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    for path in face_chips:
        decoded = decode_image(path)
        with Image.open(path) as image:
            assert np.array_equal(decoded.rgb, np.asarray(image.convert("RGB")))
        assert decoded.notes == () and decoded.full_size == (200, 200) and decoded.scale == 1
    assert len(calls) == len(face_chips)
    for size, scale in (((64, 64), 2), ((50, 50), 4), ((25, 25), 8)):
        small = decode_image(face_chips[0], draft_size=size)
        with Image.open(face_chips[0]) as image:
            image.draft("RGB", size)
            assert np.array_equal(small.rgb, np.asarray(image.convert("RGB")))
        assert small.scale == scale and small.notes == (f"JPEG decoded at 1/{scale} scale (draft)",)
    assert len(calls) == len(face_chips) + 3


def test_grey_and_rotated_jpegs_match_pillow(face_rgb: np.ndarray, tmp_path: Path) -> None:
    grey = _save(tmp_path / "g.jpg", Image.fromarray(face_rgb).convert("L"), "JPEG")
    decoded = decode_image(grey)
    with Image.open(grey) as image:
        assert np.array_equal(decoded.rgb, np.asarray(image.convert("RGB")))
    assert decoded.notes == ("L converted to RGB",)
    for orientation in range(2, 9):
        path = tmp_path / f"o{orientation}.jpg"
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        Image.fromarray(face_rgb[:, :150]).save(path, "JPEG", exif=exif.tobytes())
        decoded = decode_image(path)
        with Image.open(path) as image:
            expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        assert np.array_equal(decoded.rgb, expected), orientation
        assert decoded.notes == (f"EXIF orientation {orientation} applied",)


# --- header sizes read without Pillow -----------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("JPEG", "RGB", {"quality": 90}),
        ("JPEG", "RGB", {"progressive": True}),
        ("JPEG", "L", {}),
        ("JPEG", "CMYK", {}),
        ("JPEG", "RGB", {"exif": _with_orientation(6)}),
        ("PNG", "RGBA", {}),
        ("WEBP", "RGB", {}),
        ("BMP", "RGB", {}),
    ],
)
def test_header_pixels_agrees_with_pillow(tmp_path: Path, fmt: str, mode: str, options: dict):
    """The runner's pixel budget reads JPEG and PNG headers itself (Pillow's open costs three
    times as much); other formats, and anything odd, still go through Pillow."""
    path = tmp_path / f"image.{fmt.lower()}"
    Image.new(mode, (321, 123), 0).save(path, fmt, **options)
    assert imageio.header_pixels(path) == 321 * 123


def test_header_pixels_of_the_real_chips_and_odd_files(face_chips: list[Path], tmp_path: Path):
    for chip in face_chips:
        with Image.open(chip) as image:
            assert imageio.header_pixels(chip) == image.width * image.height
    (tmp_path / "cut.jpg").write_bytes(face_chips[0].read_bytes()[:40])  # header cut short
    (tmp_path / "text.jpg").write_text("not an image")
    assert imageio.header_pixels(tmp_path / "cut.jpg") == 0
    assert imageio.header_pixels(tmp_path / "text.jpg") == 0
