"""``agebench compare`` end to end: real models on the shared UTKFace chips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agebench.cli import main
from agebench.models.catalog import DEFAULT_MODEL, resolve_model
from agebench.runner import stack
from agebench.runner.compare import run_compare
from agebench.runner.evaluate import EvalConfig, run_eval
from tests.fixtures.tiny_models import write_manifest

pytestmark = pytest.mark.slow


def _utkface_tree(face_chips: list[Path], root: Path) -> Path:
    folder = root / "UTKFace"
    folder.mkdir(parents=True)
    for chip in face_chips:
        shutil.copy(chip, folder / chip.name)
    return root


def _no_inference(*args, **kwargs):
    raise AssertionError("a second compare must not run any model")


def test_two_models_compared_then_reused_without_inference(
    face_chips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = _utkface_tree(face_chips, tmp_path / "utk")
    (tmp_path / "models").mkdir()
    manifest = write_manifest(tmp_path / "models", name="tiny-age")
    reports = tmp_path / "reports"
    args = [
        "compare",
        DEFAULT_MODEL,
        str(manifest),
        "--bench",
        "utkface",
        "--root",
        str(root),
        "--faces",
        "none",
        "--out-root",
        str(reports),
        "--bootstrap",
        "200",
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "rank" in first.output and "tiny-age" in first.output
    assert DEFAULT_MODEL in first.output and "evaluated: tiny-age" in first.output
    assert "report:" in first.output
    out = next(reports.glob("compare-*"))
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["schema"] == "agebench.comparison/1"
    assert comparison["intersection"]["n_scored_by_all"] == len(face_chips) == 48
    assert [e["model"] for e in comparison["ranking"]["order"]] == [DEFAULT_MODEL, "tiny-age"]
    (pair,) = comparison["pairs"]
    assert pair["a"] == DEFAULT_MODEL and pair["mae_diff"] < 0 and pair["significant"] is True
    # every headline number matches the rows of the eval it came from
    models = {m["label"]: m for m in comparison["models"]}
    for run in comparison["runs"]:
        rows = [json.loads(line) for line in Path(run["predictions_path"]).read_text().splitlines()]
        mae = np.mean([abs(r["pred_age"] - r["age"]) for r in rows])
        assert models[run["label"]]["mae"] == pytest.approx(mae, abs=1e-9)
        assert models[run["label"]]["full_set"]["mae"] == pytest.approx(mae, abs=1e-9)
    sizes = {label: m["model_size_bytes"] for label, m in models.items()}
    assert sizes[DEFAULT_MODEL] == resolve_model(DEFAULT_MODEL).file.stat().st_size
    assert sizes["tiny-age"] == (tmp_path / "models" / "tiny.onnx").stat().st_size
    assert (out / "report.html").is_file() and (out / "report.md").is_file()

    # the same compare again: both evals are reused, no model is even loaded
    monkeypatch.setattr(stack, "Predictor", _no_inference)
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert f"reused: {DEFAULT_MODEL}" in second.output and "reused: tiny-age" in second.output
    assert "rank" in second.output
    again = json.loads((out / "comparison.json").read_text())
    assert list(reports.glob("compare-*")) == [out]
    assert again["pairs"] == comparison["pairs"] and again["models"] == comparison["models"]


def test_faces_none_against_detect_are_paired(face_chips: list[Path], tmp_path: Path):
    """The same model with two face pipelines over the same chips: different eval runs,
    comparable because the images and labels are the same."""
    root = _utkface_tree(face_chips[:16], tmp_path / "utk")
    reports = tmp_path / "reports"
    outs = [
        run_eval(
            EvalConfig(bench="utkface", root=root, faces=faces, out_root=reports, n_boot=100)
        ).out
        for faces in ("none", "detect")
    ]
    outcome = run_compare([str(o) for o in outs], out_root=reports, n_boot=200)
    c = outcome.comparison
    assert outcome.reused == [None, None]
    assert [m["label"] for m in c["models"]] == [
        f"{DEFAULT_MODEL} [none]",
        f"{DEFAULT_MODEL} [detect]",
    ]
    assert c["benchmark"]["faces_modes"] == ["detect", "none"]
    assert len(set(c["benchmark"]["fingerprints"])) == 2
    inter = c["intersection"]
    assert inter["n_records"] == 16
    assert inter["n_scored_by_all"] == 16 - inter["n_failed_records"]
    (pair,) = c["pairs"]
    assert pair["n"] == inter["n_scored_by_all"]
    assert pair["agreement"]["pearson_r"] is not None
    page = (outcome.out / "report.html").read_text()
    assert page.count("<svg") == 4 and "Bland-Altman" in page
