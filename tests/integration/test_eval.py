"""``agebench eval`` end to end on real faces laid out as two benchmarks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agebench.cli import main
from agebench.runner import evaluate
from agebench.runner.evaluate import EvalConfig, run_eval
from tests.conftest import chip_age

pytestmark = pytest.mark.slow


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _utkface_tree(face_chips: list[Path], root: Path) -> Path:
    folder = root / "UTKFace"
    folder.mkdir(parents=True)
    for chip in face_chips:
        shutil.copy(chip, folder / chip.name)
    return root


def test_utkface_layout_scores_match_independent_recomputation(
    face_chips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = _utkface_tree(face_chips, tmp_path / "utk")
    config = EvalConfig(bench="utkface", root=root, out_root=tmp_path / "reports", n_boot=200)
    first = run_eval(config)
    assert not first.reused
    summary = first.summary
    assert summary["counts"]["records"] == 48 and summary["counts"]["scored"] == 48
    rows = _rows(first.out)
    # MAE from predictions.jsonl, and from the labels in the file names, independently
    from_rows = np.mean([abs(r["pred_age"] - r["age"]) for r in rows])
    by_name = {Path(r["image"]).name: r["pred_age"] for r in rows}
    from_labels = np.mean([abs(by_name[c.name] - chip_age(c)) for c in face_chips])
    assert summary["metrics"]["age"]["mae"] == pytest.approx(from_rows, abs=1e-9)
    assert summary["metrics"]["age"]["mae"] == pytest.approx(from_labels, abs=1e-9)
    assert summary["faces"]["mode"] == "none"
    assert summary["benchmark"]["files_sha256"] and summary["model"]["sha256"]
    assert {"gender", "race"} <= set(summary["metrics"]["age"]["by_attribute"])
    assert (first.out / "report.html").is_file() and (first.out / "report.md").is_file()

    # the second run reuses the first: no model is even loaded
    def no_inference(*args, **kwargs):
        raise AssertionError("a rerun must not run the model")

    monkeypatch.setattr(evaluate, "Predictor", no_inference)
    second = run_eval(config)
    assert second.reused and second.out == first.out
    assert second.summary["metrics"] == summary["metrics"]


def test_csv_layout_with_bad_rows(face_chips: list[Path], tmp_path: Path):
    root = tmp_path / "csvbench"
    (root / "imgs").mkdir(parents=True)
    lines = ["file,years,person"]
    for i, chip in enumerate(face_chips[:10]):
        shutil.copy(chip, root / "imgs" / f"face{i:02d}.jpg")
        lines.append(f"imgs/face{i:02d}.jpg,{chip_age(chip)},p{i}")
    lines.append("imgs/face99.jpg,30,p99")  # a label whose image is missing
    lines.append("imgs/face00.jpg,thirty,p0")  # an age that is not a number (line 13)
    shutil.copy(face_chips[20], root / "imgs" / "unlabelled.jpg")  # an image with no label
    (root / "labels.csv").write_text("\n".join(lines) + "\n")

    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--bench",
            "csv",
            "--root",
            str(root),
            "--labels",
            str(root / "labels.csv"),
            "--column",
            "path=file",
            "--column",
            "age=years",
            "--column",
            "subject=person",
            "--option",
            "crop=tight",
            "--out-root",
            str(tmp_path / "reports"),
            "--bootstrap",
            "200",
        ],
    )
    assert result.exit_code == 0, result.output
    out = next((tmp_path / "reports").rglob("summary.json")).parent
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(out)
    assert summary["counts"]["records"] == 11  # the label rows, the missing image included
    assert summary["counts"]["missing"] == 1 and summary["counts"]["scored"] == 10
    age = summary["metrics"]["age"]
    assert age["coverage"] == pytest.approx(10 / 11)
    ok = [r for r in rows if r["status"] == "ok"]
    assert age["mae"] == pytest.approx(np.mean([abs(r["pred_age"] - r["age"]) for r in ok]))
    problems = "\n".join(summary["problems"])
    assert "labels.csv:13" in problems and "thirty" in problems
    assert "face99.jpg" in problems
    assert "report:" in result.output and "label problem" in result.output


def test_photos_need_detection(face_chips: list[Path], tmp_path: Path):
    """A benchmark of whole photos refuses --faces none rather than scoring nonsense."""
    root = tmp_path / "fg" / "images"
    root.mkdir(parents=True)
    shutil.copy(face_chips[0], root / "001A02.JPG")
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--bench",
            "fgnet",
            "--root",
            str(root.parent),
            "--faces",
            "none",
            "--out-root",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 1 and "use --faces detect" in result.output
