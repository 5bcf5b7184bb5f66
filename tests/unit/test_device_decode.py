"""Device-side decode and warp (``agebench.runner.device_decode``) against the host path, on CPU.

Measured with torchvision 0.29.1 and OpenCV 5.0: on the 48 shared chips ``decode_jpegs`` equals
``decode_image`` exactly (max 0 grey levels); on 16 of them ``warp_batch`` against
``agebench.faces.align.warp``, max / mean |difference| in grey levels:

| matrix | k | max | mean |
| --- | --- | --- | --- |
| downscale 200 -> 64 | 3 | 1 | 2.0e-3 |
| rotation + scale similarity | 2 | 1 | 2.0e-5 |
| box + 0.4 margin, outside the photo | 6 | 1 | 3.1e-4 |
| 1:1 translation | 1 | 0 | 0 |

The bounds below (``DECODE_MAX``, ``WARP_MAX``, ``WARP_MEAN``) leave room for other IDCTs and
OpenCV builds.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agebench.faces.align import box_matrix, resize_matrix, similarity_transform, warp
from agebench.runner.device_decode import decode_jpegs, supersampling, warp_batch
from agebench.runner.imageio import ImageDecodeError, decode_image

DECODE_MAX = 2
DECODE_MEAN = 0.5
WARP_MAX = 1
WARP_MEAN = 0.01
SIZE = (64, 64)
#: eyes, nose, mouth corners of a 200 x 200 chip, and where an aligner puts them
LANDMARKS = np.array([[70.0, 80.0], [130.0, 78.0], [100.0, 110.0], [75.0, 140.0], [125.0, 138.0]])
TEMPLATE = np.array([[20.0, 25.0], [44.0, 25.0], [32.0, 38.0], [22.0, 50.0], [42.0, 50.0]])


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.fixture(scope="module")
def chips(face_chips: list[Path]) -> list[np.ndarray]:
    """Every third chip, decoded on the host (all 200 x 200)."""
    return [decode_image(p).rgb for p in face_chips[::3]]


def test_decode_jpegs_matches_decode_image_on_the_chips(face_chips: list[Path]):
    datas = [p.read_bytes() for p in face_chips]
    decoded = decode_jpegs(datas, "cpu")
    assert len(decoded) == len(datas)
    worst, means = 0, []
    for path, data, tensor in zip(face_chips, datas, decoded, strict=True):
        assert tensor.dtype == torch.uint8 and tensor.device.type == "cpu"
        diff = _diff(tensor.numpy(), decode_image(path, data=data).rgb)
        worst, means = max(worst, int(diff.max())), [*means, float(diff.mean())]
    print(f"\ndecode_jpegs vs decode_image: max {worst}, mean {np.mean(means):.2e} grey levels")
    assert worst <= DECODE_MAX and np.mean(means) <= DECODE_MEAN


def _jpeg(image: Image.Image, orientation: int = 1, mode: str = "RGB") -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _gradient(width: int = 48, height: int = 32) -> Image.Image:
    """Smooth and asymmetric: every flip and rotation changes it."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 5, y * 7, (x + 2 * y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_decode_image_does(orientation: int):
    data = _jpeg(_gradient(), orientation)
    (tensor,) = decode_jpegs([data])
    expected = decode_image(Path("x.jpg"), data=data).rgb
    assert tuple(tensor.shape) == expected.shape
    assert _diff(tensor.numpy(), expected).max() <= DECODE_MAX


def test_other_files_take_the_host_path_and_bad_ones_are_named():
    png = io.BytesIO()
    _gradient().save(png, "PNG")
    cmyk, grey = _jpeg(_gradient(), mode="CMYK"), _jpeg(_gradient(), mode="L")
    datas = [png.getvalue(), cmyk, grey]
    decoded = decode_jpegs(datas, names=["a.png", "b.jpg", "c.jpg"])
    for data, tensor in zip(datas, decoded, strict=True):
        expected = decode_image(Path("x"), data=data).rgb
        assert _diff(tensor.numpy(), expected).max() <= DECODE_MAX
    with pytest.raises(ImageDecodeError, match=r"broken\.jpg"):
        decode_jpegs([grey, b"\xff\xd8\xff not a jpeg"], names=["fine.jpg", "broken.jpg"])
    # a sound header over truncated data: the batched decoder fails, the file is found alone
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg: .*truncated"):
        decode_jpegs([grey, grey[: len(grey) // 2]], names=["fine.jpg", "cut.jpg"])


def _cases(height: int, width: int) -> dict[str, np.ndarray]:
    return {
        "downscale": resize_matrix((height, width), SIZE),
        "similarity": similarity_transform(LANDMARKS, TEMPLATE),
        "outside": box_matrix((0.0, 0.0, float(width), float(height)), 0.4, True, SIZE),
        "one-to-one": np.array([[1.0, 0.0, -60.0], [0.0, 1.0, -70.0]]),
    }


@pytest.mark.parametrize("case", ["downscale", "similarity", "outside", "one-to-one"])
def test_warp_batch_matches_warp(case: str, chips: list[np.ndarray]):
    matrix = _cases(*chips[0].shape[:2])[case]
    expected = np.stack([warp(rgb, matrix, SIZE) for rgb in chips])
    images = [torch.from_numpy(rgb.copy()) for rgb in chips]
    got = warp_batch(images, [matrix] * len(images), SIZE)
    assert got.dtype == torch.uint8 and tuple(got.shape) == (len(chips), *SIZE, 3)
    diff = _diff(got.numpy(), expected)
    print(f"\n{case} (k={supersampling(matrix)}): max {diff.max()}, mean {diff.mean():.1e} levels")
    assert diff.max() <= WARP_MAX and diff.mean() <= WARP_MEAN
    if case == "outside":  # the margin beyond the photo is black in both
        assert (expected[:, :4] == 0).all() and (got.numpy()[:, :4] == 0).all()
    if case == "one-to-one":
        assert diff.max() == 0


def test_mixed_sizes_and_factors_come_back_in_order(chips: list[np.ndarray]):
    small = [np.ascontiguousarray(rgb[20:140, 30:190]) for rgb in chips[:3]]  # 120 x 160
    images = [chips[0], small[0], chips[1], small[1], small[2]]
    matrices = [
        _cases(200, 200)["downscale"],
        _cases(120, 160)["outside"],
        _cases(200, 200)["one-to-one"],
        _cases(120, 160)["similarity"],
        _cases(120, 160)["downscale"],
    ]
    assert len({supersampling(m) for m in matrices}) > 2
    got = warp_batch([torch.from_numpy(i.copy()) for i in images], matrices, SIZE).numpy()
    for index, (image, matrix) in enumerate(zip(images, matrices, strict=True)):
        assert _diff(got[index], warp(image, matrix, SIZE)).max() <= WARP_MAX, index


def test_warp_batch_edge_cases():
    assert tuple(warp_batch([], [], SIZE).shape) == (0, *SIZE, 3)
    with pytest.raises(ValueError, match="matrices"):
        warp_batch([torch.zeros((8, 8, 3), dtype=torch.uint8)], [], SIZE)
    with pytest.raises(ValueError, match="uint8"):
        warp_batch([torch.zeros((8, 8, 3))], [np.eye(2, 3)], SIZE)
