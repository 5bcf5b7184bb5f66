"""fp16 and int8 variants of tiny models, gated against their float32 parent."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from agebench.build.pull import register_torch
from agebench.build.quantize import (
    GATES,
    calibration_crops,
    crops_from_dir,
    quantize,
    quantize_model,
)
from agebench.cli import main
from agebench.core.errors import AgebenchError
from agebench.models.catalog import ModelCatalog
from agebench.models.manifest import load_manifest
from tests.fixtures.bench_layouts import make_utkface
from tests.fixtures.tiny_models import write_manifest
from tests.unit.test_convert_torch import FACTORY, MANIFEST
from tests.unit.test_gate import solid_chips

#: inputs scaled to 0..1 and ages = 100 x the red level: outputs of order 1, as real nets have
SCALED = '[[heads]]\nname = "age"\noutput = "scores"\ndecoder = "regression"\n'
SCALED += "[heads.params]\nscale = 100.0\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGEBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def parent(home: Path):
    weights = home / "weights"
    weights.mkdir(parents=True)
    path = write_manifest(
        weights, name="tiny", decoder_block=SCALED, crop_block='[crop]\npolicy = "none"\n'
    )
    path.write_text(path.read_text().replace("std = 1.0", "std = 255.0"))
    return load_manifest(path)


@pytest.fixture
def chips(tmp_path: Path) -> Path:
    return solid_chips(tmp_path / "chips", [10, 40, 80, 120, 200])


def test_fp16_variant_is_gated_and_registered(parent, home, chips):
    result = quantize(parent, "fp16", faces_dir=chips)
    assert result.name == "tiny-fp16" and result.status == "quantized"
    report = result.report
    assert report is not None and report.passed, report.failures
    assert report.tolerance == GATES["fp16"].tolerance and report.tolerance_relative
    assert report.max_abs_diff_age["real"] <= 0.1
    spec = ModelCatalog().get("tiny-fp16")
    assert spec.provenance["parent"] == "tiny"
    assert spec.provenance["parent_sha256"] == parent.sha256
    assert spec.provenance["quantization"]["to"] == "fp16"
    assert spec.license == parent.license and spec.extra["gate"]["passed"]


def test_int8_dynamic_without_calibration(parent, home, chips):
    result = quantize(parent, "int8", faces_dir=chips)
    assert result.report is not None and result.report.passed, result.report.failures
    spec = load_manifest(result.manifest_path)
    assert spec.provenance["quantization"]["method"].startswith("int8 dynamic")
    gate = spec.extra["gate"]
    assert gate["age_statistic"] == "mean" and gate["gated_sets"] == ["real"]
    assert "tolerance" not in gate  # raw int8 outputs are reported, not bounded


def test_int8_static_with_calibration_crops(parent, home, chips):
    crops = crops_from_dir(parent, chips, limit=4)
    assert crops.shape == (4, 8, 8, 3) and crops.dtype == np.uint8
    result = quantize(
        parent, "int8", calibration=crops, calibration_source="chips", faces_dir=chips
    )
    assert result.report is not None and result.report.passed, result.report.failures
    quant = result.spec.provenance["quantization"]
    assert quant["method"].startswith("int8 static QDQ") and quant["calibration_images"] == 4
    assert result.report.mean_abs_diff_age["real"] <= GATES["int8"].age_tolerance


def test_quantize_a_converted_conv_net(home, tmp_path: Path, chips):
    """A real conv + batch norm graph (from PyTorch) through both variants."""
    manifest = tmp_path / "m.toml"
    manifest.write_text(MANIFEST)
    spec = register_torch(FACTORY, manifest=manifest, home=home, faces_dir=None).spec
    for to in ("fp16", "int8"):
        result = quantize(spec, to, faces_dir=chips)  # type: ignore[arg-type]
        assert result.report is not None and result.report.passed, (to, result.report.failures)


def test_calibration_from_a_benchmark(parent, tmp_path: Path):
    root = tmp_path / "utk"
    names = [f"{age}_0_0_2017010{i}.jpg.chip.jpg" for i, age in enumerate([5, 20, 35, 50, 65])]
    make_utkface(root, names)
    crops = calibration_crops(parent, "utkface", root, 3)
    assert crops.shape == (3, 8, 8, 3)
    with pytest.raises(AgebenchError, match="benchmark root not found"):
        calibration_crops(parent, "utkface", tmp_path / "missing", 3)


def _jpeg(red: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (red, 90, 30)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_cli_quantize(parent, home, tmp_path: Path, chips):
    args = ["models", "quantize", "tiny", "--to", "int8", "--faces-dir", str(chips)]
    # calibration images all of one colour: the ranges are wrong and the gate says so
    flat = tmp_path / "flat"
    make_utkface(flat, [f"{age}_1_0_20170101.jpg.chip.jpg" for age in (8, 30, 60)])
    result = CliRunner().invoke(main, [*args, "--calibrate-on", "utkface", "--root", str(flat)])
    assert result.exit_code == 1 and "failed the gate" in result.output
    assert "decoded age differs by" in result.output and "on average" in result.output
    assert not (home / "weights" / "tiny-int8.toml").exists()
    root = tmp_path / "utk"
    images = {
        f"UTKFace/{red}_1_0_2017010{i}.jpg.chip.jpg": _jpeg(red)
        for i, red in enumerate((5, 60, 120, 180, 250))
    }
    make_utkface(root, images=images)
    result = CliRunner().invoke(main, [*args, "--calibrate-on", "utkface", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "tiny-int8: quantized" in result.output
    spec = load_manifest(home / "weights" / "tiny-int8.toml")
    assert spec.provenance["quantization"]["calibration"].startswith("5 images of utkface")
    result = CliRunner().invoke(main, [*args, "--calibrate-on", "utkface"])
    assert result.exit_code == 1 and "--calibrate-on needs --root" in result.output
    result = CliRunner().invoke(main, ["models", "quantize", "tiny", "--to", "fp16", "--root", "x"])
    assert result.exit_code == 1 and "error:" in result.output


def test_argument_errors(parent, home):
    with pytest.raises(AgebenchError, match="calibration data is for int8 only"):
        quantize(parent, "fp16", calibration=np.zeros((1, 8, 8, 3), np.uint8), faces_dir=None)
    with pytest.raises(AgebenchError, match=r"must be \(N, 8, 8, 3\)"):
        quantize(parent, "int8", calibration=np.zeros((1, 4, 4, 3), np.uint8), faces_dir=None)
    with pytest.raises(AgebenchError, match="not pulled yet"):
        quantize_model("yu4u-wrn-16-8", "fp16", faces_dir=None)
    parent.file.write_bytes(b"changed")
    with pytest.raises(AgebenchError, match="does not match"):
        quantize(parent, "fp16", faces_dir=None)
