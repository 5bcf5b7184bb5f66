"""Manifest validation: every mistake is caught at load time with the key that is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from agebench.core.errors import IntegrityError, ManifestError
from agebench.models.manifest import load_manifest, spec_to_dict
from agebench.models.predictor import Predictor, choose_providers
from tests.fixtures.tiny_models import DLIB_MANIFEST, write_manifest


def test_default_model_manifest_is_valid_and_complete():
    spec = load_manifest(DLIB_MANIFEST)
    assert spec.name == "dlib-age-v1"
    assert (spec.input.height, spec.input.width, spec.input.color) == (64, 64, "RGB")
    assert spec.crop.policy == "align" and spec.crop.padding == 0.2
    assert spec.age_head.decoder == "expectation"
    assert len(spec.age_head.params["bins"]) == 81
    assert spec.license == "CC0-1.0"
    assert spec.weights_present
    assert spec_to_dict(spec)["sha256"] == spec.sha256


def test_valid_tiny_manifest(tmp_path: Path):
    spec = load_manifest(write_manifest(tmp_path))
    assert spec.file == (tmp_path / "tiny.onnx").resolve()
    assert spec.input.mean == (0.0, 0.0, 0.0)


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    path = write_manifest(tmp_path)
    text = path.read_text()
    assert re.search(old, text, flags=re.M), old
    path.write_text(re.sub(old, new, text, count=1, flags=re.M))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (r'^name = "tiny"\n', "", "'name' is required"),
        (r'^sha256 = "\w+"', 'sha256 = "abc"', "'sha256' must be 64 hex digits"),
        (r'layout = "NCHW"', 'layout = "CHWN"', "'layout' must be one of NCHW, NHWC"),
        (r'color = "RGB"', 'color = "RGBA"', "'color' must be one of"),
        (r"size = \[8, 8\]", "size = [8]", "'size' must be"),
        (r"std = 1.0", "std = 0.0", "'std' must be positive"),
        (r"mean = 0.0", "mean = [1.0, 2.0]", "'mean' needs 1 or 3 values"),
        (r'policy = "box"', 'policy = "crop"', "'policy' must be one of align, box, none"),
        (r'policy = "box"', 'policy = "align"', "'template' is required"),
        (
            r'policy = "box"',
            'policy = "align"\ntemplate = "dlib-chp"',
            "did you mean 'dlib-chip-mtcnn'",
        ),
        (r'decoder = "regression"', 'decoder = "regresion"', "did you mean 'regression'"),
        (r'name = "age"', 'name = "years"', "needs a head named 'age'"),
        (r"scale = 1.0", 'scale = "big"', "decoder 'regression': could not convert"),
        (r'license = "CC0-1.0"', "", "'license' is required"),
        (r"^schema_version = 1", "schema_version = 9", "reads 1"),
        (r"^\[input\]", "[input", "not valid TOML"),
        (r"margin = 0.4", "margin = true", "'margin' must be a number"),
    ],
)
def test_invalid_manifests_name_the_problem(tmp_path: Path, old: str, new: str, message: str):
    path = _broken(tmp_path, old, new)
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_manifest(tmp_path: Path):
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope.toml")


def test_sha256_mismatch_stops_the_predictor(tmp_path: Path):
    spec = load_manifest(write_manifest(tmp_path, sha="0" * 64))
    with pytest.raises(IntegrityError, match="does not match"):
        Predictor(spec, device="cpu")


def test_manifest_input_must_match_graph(tmp_path: Path):
    write_manifest(tmp_path, size=8)
    path = _broken(tmp_path, r"size = \[8, 8\]", "size = [16, 16]")
    with pytest.raises(ManifestError, match="graph's 'images'"):
        Predictor(load_manifest(path), device="cpu")


def test_head_output_must_exist(tmp_path: Path):
    path = _broken(tmp_path, r'output = "scores"', 'output = "logits"')
    with pytest.raises(ManifestError, match="reads output 'logits'"):
        Predictor(load_manifest(path), device="cpu")


@pytest.mark.parametrize(("layout", "color"), [("NCHW", "RGB"), ("NHWC", "RGB"), ("NCHW", "BGR")])
def test_preprocessing_follows_manifest(tmp_path: Path, layout: str, color: str):
    spec = load_manifest(write_manifest(tmp_path, layout=layout, color=color))
    predictor = Predictor(spec, device="cpu")
    faces = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    faces[..., 0] = 10  # red
    faces[..., 2] = 200  # blue
    # the graph's single output is the mean of the first input channel
    expected = 10.0 if color == "RGB" else 200.0
    assert predictor.predict(faces).fields["age"] == pytest.approx([expected, expected])


def test_provider_choice():
    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert (
        choose_providers("auto", ["CPUExecutionProvider", "CUDAExecutionProvider"])[0]
        == "CUDAExecutionProvider"
    )
    with pytest.raises(Exception, match="no CUDA provider"):
        choose_providers("cuda", ["CPUExecutionProvider"])
