"""``agebench eval`` end to end on real faces laid out as two benchmarks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agebench.cli import main
from agebench.core.config import ExecutionConfig
from agebench.runner import stack
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

    monkeypatch.setattr(stack, "Predictor", no_inference)
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


def test_given_boxes_with_several_faces_per_photo(face_chips: list[Path], tmp_path: Path):
    """LAGENDA-style: one photo, several labelled faces, each scored at its own box."""
    from PIL import Image

    from tests.fixtures.bench_layouts_b import MIVOLO_HEADER, make_lagenda

    picks = [min(face_chips, key=lambda p: abs(chip_age(p) - age)) for age in (4, 30, 70)]
    canvas = Image.new("RGB", (1200, 600), (120, 120, 120))
    rows = []
    for chip, (x, y, size) in zip(
        picks, [(50, 150, 240), (450, 100, 300), (860, 180, 260)], strict=True
    ):
        canvas.paste(Image.open(chip).convert("RGB").resize((size, size)), (x, y))
        rows.append(("group.jpg", chip_age(chip), "F", x, y, x + size, y + size, -1, -1, -1, -1))
    buffer = tmp_path / "group.jpg"
    canvas.save(buffer, quality=95)
    root = tmp_path / "lag"
    make_lagenda(root, rows, header=MIVOLO_HEADER, faces={"group.jpg": buffer})
    outcome = run_eval(EvalConfig(bench="lagenda", root=root, out_root=tmp_path / "r", n_boot=200))
    rows_out = _rows(outcome.out)
    assert len(rows_out) == 3 and all(r["status"] == "ok" for r in rows_out)
    assert outcome.summary["faces"]["mode"] == "box"
    # each labelled face got the detection inside its own box, and ages keep their order
    for row, (_, _, _, x1, y1, x2, y2, *_rest) in zip(rows_out, rows, strict=True):
        bx1, by1, bx2, by2 = row["face_box"]
        assert x1 <= (bx1 + bx2) / 2 <= x2 and y1 <= (by1 + by2) / 2 <= y2
    preds = [r["pred_age"] for r in rows_out]
    assert preds[0] < preds[1] < preds[2]


def test_interrupted_eval_resumes(face_chips: list[Path], tmp_path: Path):
    root = _utkface_tree(face_chips[:12], tmp_path / "utk")
    config = EvalConfig(
        bench="utkface",
        root=root,
        out_root=tmp_path / "r",
        n_boot=200,
        execution=ExecutionConfig(batch_size=4, workers=1),
    )
    advanced = 0

    def stop_after_six(event: str, amount: int) -> None:
        nonlocal advanced
        if event == "advance":
            advanced += amount
            if advanced >= 6:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_eval(config, progress=stop_after_six)
    resumed = run_eval(config)
    assert not resumed.reused
    assert 0 < resumed.summary["counts"]["processed_this_run"] < 12
    assert not (resumed.out / "predictions.partial.jsonl").exists()
    fresh = run_eval(EvalConfig(bench="utkface", root=root, out=tmp_path / "fresh", n_boot=200))
    for a, b in zip(_rows(resumed.out), _rows(fresh.out), strict=True):
        assert a["image"] == b["image"] and a["pred_age"] == pytest.approx(b["pred_age"], abs=1e-3)
