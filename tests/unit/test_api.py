"""The public Python API without running a model: cheap import, exports, argument checks,
and the in-memory inputs' normalisation (``agebench.api``, ``agebench.runner.imageio``)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import agebench
from agebench.api import Face, _job
from agebench.runner.imageio import ImageDecodeError, decode_image, decode_pillow, decoded_array
from tests.fixtures.tiny_models import REPO

HEAVY = ("torch", "onnxruntime", "cv2", "pandas", "matplotlib", "click", "rich")


def test_import_agebench_loads_no_model_runtime():
    """In a fresh interpreter: ``import agebench`` (and listing models and benchmarks)
    must not import torch, onnxruntime or OpenCV."""
    code = (
        "import sys, json, agebench\n"
        f"after_import = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "agebench.models.list(); agebench.benches.list()\n"
        f"after_list = [m for m in {HEAVY[:3]!r} if m in sys.modules]\n"
        "print(json.dumps([after_import, after_list, sorted(dir(agebench))]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    after_import, after_list, names = json.loads(result.stdout)
    assert after_import == []
    assert after_list == []
    assert {"load", "predict", "evaluate", "compare", "load_run", "models", "benches"} <= set(names)


def test_every_exported_name_resolves():
    for name in agebench.__all__:
        assert getattr(agebench, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_thing"):
        agebench.no_such_thing  # noqa: B018


@pytest.mark.parametrize(
    "call",
    [
        lambda: agebench.load(fcaes="none"),
        lambda: agebench.predict("photos", fcaes="none"),
        lambda: agebench.evaluate("utkface", "root", fcaes="none"),
        lambda: agebench.compare(["a", "b"], fcaes="none"),
    ],
)
def test_an_unknown_option_is_a_type_error_naming_it(call):
    with pytest.raises(TypeError, match="fcaes"):
        call()


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: agebench.load(faces="box"), "faces"),
        (lambda: agebench.load(min_face_size=4), "min_face_size"),
        (lambda: agebench.load(crop_margin=3.0), "crop_margin"),
        (lambda: agebench.predict("photos", device="tpu"), "device"),
        (lambda: agebench.evaluate("utkface", "root", n_boot=10), "n_boot"),
        (lambda: agebench.compare(["a", "b"], alpha=2.0), "alpha"),
    ],
)
def test_a_value_the_command_refuses_is_a_value_error_before_any_work(call, named):
    with pytest.raises(ValueError, match=named):
        call()


def test_compare_wants_a_list():
    with pytest.raises(TypeError, match="list"):
        agebench.compare("reports/eval/run")  # type: ignore[arg-type]


def test_models_and_benches_are_listed_as_data():
    models = agebench.models.list()
    default = next(m for m in models if m.name == "dlib-age-v1")
    assert default.weights_present and default.crop == "align" and len(default.sha256) == 64
    assert default.heads == ("age:expectation",)
    benches = {b.name: b for b in agebench.benches.list()}
    assert {"utkface", "fgnet", "appa-real", "csv"} <= benches.keys()
    assert benches["utkface"].crops == "tight" and "age" in benches["utkface"].targets
    assert agebench.benches.get("fgnet").name == "fgnet"
    with pytest.raises(agebench.AgebenchError, match="utkfce"):
        agebench.benches.get("utkfce")


def test_face_keeps_extra_heads_apart():
    face = Face.from_record(
        {
            "index": 1,
            "box": [1, 2, 3, 4],
            "landmarks": [[1, 2]] * 5,
            "score": 0.9,
            "model": "m",
            "model_sha256": "s",
            "age": 30.5,
            "age_std": 2.0,
            "gender": "female",
            "note": "detected on the image padded by a black frame",
        }
    )
    assert face.box == (1.0, 2.0, 3.0, 4.0) and face.landmarks == ((1.0, 2.0),) * 5
    assert dict(face.extra) == {
        "gender": "female",
        "note": "detected on the image padded by a black frame",
    }
    with pytest.raises(TypeError):
        face.extra["age"] = 1  # type: ignore[index]


def test_an_unsupported_input_is_a_type_error_naming_its_type():
    with pytest.raises(TypeError, match=r"image 2: .*got dict"):
        _job({}, 2, strict=False)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
    ],
)
def test_arrays_must_be_rgb_uint8(array):
    with pytest.raises(ImageDecodeError, match="<array 0>"):
        _job(array, 0, strict=False)


def test_an_array_is_taken_as_upright_rgb_pixels():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    image = decoded_array(rgb[:, ::-1], "a")  # not contiguous: copied, not refused
    assert image.rgb.flags.c_contiguous and (image.width, image.height) == (3, 2)
    np.testing.assert_array_equal(image.rgb, rgb[:, ::-1])


def _jpeg_with_orientation(orientation: int) -> bytes:
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_pillow_image_is_oriented_and_decoded_as_its_file(orientation: int):
    """The file's decode (libjpeg-turbo, EXIF rotation) and Pillow's, normalised by
    ``decode_pillow``, give the same upright pixels."""
    data = _jpeg_with_orientation(orientation)
    from_file = decode_image(Path("x.jpg"), data=data)
    from_pillow = decode_pillow(Image.open(io.BytesIO(data)), "x")
    assert from_pillow.exif_orientation == orientation
    assert from_pillow.rgb.shape == from_file.rgb.shape
    np.testing.assert_array_equal(from_pillow.rgb, from_file.rgb)
    if orientation in (6, 8):
        assert from_pillow.rgb.shape[:2] == (40, 24)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "CMYK"])
def test_a_pillow_image_of_any_mode_becomes_rgb_as_a_file_of_it_would(mode: str):
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8))
    image = rgb.convert("RGBA") if mode == "RGBA" else rgb.convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (10, 12), dtype=np.uint16))
    if mode == "RGBA":
        image.putalpha(Image.fromarray(rng.integers(0, 255, (10, 12), dtype=np.uint8)))
    buffer = io.BytesIO()
    image.save(buffer, "TIFF" if mode == "CMYK" else "PNG")
    from_file = decode_image(Path("x"), data=buffer.getvalue())
    from_pillow = decode_pillow(image, "x")
    assert from_pillow.rgb.dtype == np.uint8 and from_pillow.rgb.shape == (10, 12, 3)
    np.testing.assert_array_equal(from_pillow.rgb, from_file.rgb)


def test_compare_stays_the_api_function_once_the_core_is_imported():
    """The pairing and statistics over finished runs live in ``agebench.comparison``, so no
    submodule import can rebind ``agebench.compare``, the API function."""
    import agebench.comparison
    from agebench.api import compare

    assert agebench.compare is compare
    with pytest.raises(TypeError, match="fcaes"):
        agebench.compare(["a", "b"], fcaes="none")
    with pytest.raises(TypeError, match="list"):
        agebench.compare("reports/eval/run")  # type: ignore[arg-type]
