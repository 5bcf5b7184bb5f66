"""The conversion gate on tiny graphs: what passes, what fails, what it records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomli_w
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from agebench.build.gate import (
    METADATA_KEY,
    GateReport,
    gate_summary,
    preprocessing_metadata,
    read_metadata,
    run_gate,
)
from agebench.cli import main
from agebench.models.hashing import sha256_file
from agebench.models.manifest import load_manifest
from tests.fixtures.tiny_models import write_manifest

#: the chips are the whole face: no margin to restore, so their mean colour is kept
WHOLE = '[crop]\npolicy = "none"\n'


def channel_mean_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """What the tiny channel-mean graph computes, in numpy: the red channel's mean."""
    return {"scores": x.mean(axis=(2, 3))[:, :1].astype(np.float32)}


def solid_chips(folder: Path, ages: list[int]) -> Path:
    """Face 'chips' named like UTKFace whose red level equals the label: the tiny model,
    which predicts the mean red level, then scores a known MAE (0, up to JPEG rounding)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, age in enumerate(ages):
        Image.new("RGB", (40, 40), (age, 90, 30)).save(folder / f"{age}_0_0_{i}.jpg", quality=95)
    (folder / "unlabelled.jpg").write_bytes((folder / f"{ages[0]}_0_0_0.jpg").read_bytes())
    return folder


@pytest.fixture
def tiny(tmp_path: Path):
    return load_manifest(write_manifest(tmp_path, crop_block=WHOLE))


def test_faithful_graph_passes_and_records_everything(tmp_path: Path, tiny):
    faces = solid_chips(tmp_path / "chips", [20, 35, 50, 70])
    before = sha256_file(tiny.file)
    report = run_gate(
        tiny, channel_mean_reference, faces_dir=faces, tolerance=1e-4, age_tolerance=1e-3
    )
    assert report.passed, report.failures
    assert report.max_abs_diff["random"]["scores"] < 1e-4
    assert report.max_abs_diff["real"]["scores"] < 1e-4
    assert report.max_abs_diff_age["real"] < 1e-3
    assert {"onnx.checker", "batch sizes 1, 3"} <= set(report.checks)
    assert report.real_faces["n"] == 5 and report.real_faces["labelled"] == 4
    assert report.real_faces["mae"] < 1.5 and report.real_faces["cs5"] == 1.0
    # the preprocessing now travels inside the graph, and the sha256 says so
    assert read_metadata(tiny.file) == json.loads(preprocessing_metadata(tiny))
    assert report.sha256 == sha256_file(tiny.file) != before


def test_gate_table_round_trips_through_the_manifest(tmp_path: Path, tiny):
    report = run_gate(
        tiny, channel_mean_reference, faces_dir=None, tolerance=1e-4, age_tolerance=1e-3
    )
    table = report.to_manifest()
    assert table["passed"] is True and table["real_faces"] == {"n": 0, "dir": "none"}
    manifest = tiny.manifest_path
    assert manifest is not None
    text = manifest.read_text().replace(tiny.sha256, report.sha256)
    manifest.write_text(text + "\n" + tomli_w.dumps({"gate": table}))
    spec = load_manifest(manifest)
    assert spec.extra["gate"] == table  # parsed untouched into ModelSpec.extra
    assert gate_summary(spec.extra).endswith("/ -")


def test_a_reference_that_disagrees_fails(tiny):
    def off(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"scores": channel_mean_reference(x)["scores"] + 0.01}

    report = run_gate(tiny, off, faces_dir=None, tolerance=1e-4, age_tolerance=1e-3)
    assert not report.passed
    assert any("output 'scores' differs by 0.01" in f for f in report.failures)
    assert any("decoded age differs" in f for f in report.failures)


def test_reference_missing_an_output_or_raising_fails(tiny):
    report = run_gate(
        tiny, lambda x: {"other": x}, faces_dir=None, tolerance=1e-4, age_tolerance=1e-3
    )
    assert any("gives no output 'scores'" in f for f in report.failures)

    def broken(x: np.ndarray) -> dict[str, np.ndarray]:
        raise ZeroDivisionError

    report = run_gate(tiny, broken, faces_dir=None, tolerance=1e-4, age_tolerance=1e-3)
    assert any("raised ZeroDivisionError" in f for f in report.failures)


def test_fixed_batch_dimension_fails(tmp_path: Path):
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        ],
        "fixed",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(np.array([[1.0], [0.0], [0.0]], np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    spec = load_manifest(write_manifest(tmp_path))
    report = run_gate(
        spec, channel_mean_reference, faces_dir=None, tolerance=1e-4, age_tolerance=1e-3
    )
    assert not report.passed
    assert any("fixed batch dimension (1)" in f for f in report.failures)
    assert any("batch sizes" in f for f in report.failures)


def test_mean_statistic_and_ungated_random_set(tmp_path: Path, tiny):
    """Quantized variants: the mean age difference on real faces decides; noise is reported."""
    faces = solid_chips(tmp_path / "chips", [20, 60])

    def noisy(x: np.ndarray) -> dict[str, np.ndarray]:
        out = channel_mean_reference(x)["scores"]
        return {"scores": out + np.where(out > 100, 5.0, 0.2).astype(np.float32)}

    report = run_gate(
        tiny,
        noisy,
        faces_dir=faces,
        tolerance=None,
        age_tolerance=0.5,
        age_statistic="mean",
        gate_random=False,
    )
    assert report.passed, report.failures
    assert report.gated_sets == ("real",)
    assert report.max_abs_diff_age["random"] >= 5.0 - 1e-3  # reported, not gated
    table = report.to_manifest()
    assert "tolerance" not in table and table["age_statistic"] == "mean"


def test_relative_tolerance_scales_with_the_output(tiny):
    def off(x: np.ndarray) -> dict[str, np.ndarray]:
        out = channel_mean_reference(x)["scores"]
        return {"scores": out * np.float32(1.0 + 1e-3)}  # outputs ~128: 0.13 absolute

    absolute = run_gate(tiny, off, faces_dir=None, tolerance=1e-2, age_tolerance=1.0)
    relative = run_gate(
        tiny, off, faces_dir=None, tolerance=1e-2, age_tolerance=1.0, tolerance_relative=True
    )
    assert not absolute.passed and relative.passed


def test_gate_summary_format():
    gate = {"max_abs_diff": {"random": {"p": 2.5e-7}, "real": {"p": 1.1e-6}}}
    assert gate_summary({"gate": {**gate, "real_faces": {"mae": 8.7123}}}) == "1e-6 / 8.71"
    assert gate_summary({}) == "-"


def test_models_list_and_info_show_the_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    weights = home / "weights"
    weights.mkdir(parents=True)
    spec = load_manifest(write_manifest(weights, name="gated", crop_block=WHOLE))
    report = run_gate(
        spec,
        channel_mean_reference,
        faces_dir=solid_chips(tmp_path / "chips", [30]),
        tolerance=1e-4,
        age_tolerance=1e-3,
    )
    manifest = weights / "gated.toml"
    text = manifest.read_text().replace(spec.sha256, report.sha256)
    manifest.write_text(text + "\n" + tomli_w.dumps({"gate": report.to_manifest()}))
    monkeypatch.setenv("AGEBENCH_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "250")
    listing = CliRunner().invoke(main, ["models", "list", "--wide"])
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.output.splitlines() if "gated" in line)
    assert gate_summary(load_manifest(manifest).extra) in row
    assert "/ 0." in row or "/ 1." in row
    info = CliRunner().invoke(main, ["models", "info", "gated", "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["gate"]["passed"] is True


def test_report_defaults_are_toml_ready():
    """No None anywhere: tomli-w refuses it, and a manifest must always be writable."""
    table = GateReport(model="m", tolerance=None, age_tolerance=1e-3).to_manifest()
    assert "tolerance" not in table
    assert tomli_w.dumps({"gate": table})
    assert METADATA_KEY == "agebench.manifest"
