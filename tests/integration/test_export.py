"""Tabular results: ``predictions.csv`` beside ``predictions.jsonl`` after predict and eval
(rebuilt on resume), and ``agebench export`` (CSV; parquet only with pyarrow)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import agebench
from agebench.cli import main
from tests.conftest import chip_age

pytestmark = pytest.mark.slow

RUNS = Path(__file__).resolve().parents[1] / "data" / "runs" / "current"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _csv(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "predictions.csv")


def test_predict_writes_csv_with_the_jsonl_rows_and_rebuilds_it_on_resume(
    face_chips: list[Path], tmp_path: Path
):
    images = tmp_path / "images"
    images.mkdir()
    for chip in face_chips[:6]:
        shutil.copy(chip, images / chip.name)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", str(images), "--out", str(out), "--faces", "none"]
    )
    assert result.exit_code == 0, result.output
    rows = _jsonl(out / "predictions.jsonl")
    table = _csv(out)
    assert list(table["image"]) == [r["image"] for r in rows]
    assert list(table["age"]) == [r["age"] for r in rows]
    # lists stay whole, as JSON a spreadsheet or json.loads reads
    assert [json.loads(box) for box in table["box"]] == [r["box"] for r in rows]
    # a resumed run (two more images) rebuilds it: one row per line of the new jsonl
    for chip in face_chips[6:8]:
        shutil.copy(chip, images / chip.name)
    (out / "predictions.csv").write_text("stale\n")
    result = CliRunner().invoke(
        main, ["predict", str(images), "--out", str(out), "--faces", "none"]
    )
    assert result.exit_code == 0, result.output
    rows = _jsonl(out / "predictions.jsonl")
    table = _csv(out)
    assert len(rows) == 8 and list(table["age"]) == [r["age"] for r in rows]
    assert not list(out.glob(".*.tmp"))


def test_eval_writes_csv_with_attributes_flattened(face_chips: list[Path], tmp_path: Path):
    root = tmp_path / "utk"
    (root / "UTKFace").mkdir(parents=True)
    for chip in face_chips[:8]:
        shutil.copy(chip, root / "UTKFace" / chip.name)
    run = agebench.evaluate("utkface", root, out=tmp_path / "eval", n_boot=100, faces="none")
    rows = _jsonl(run.out / "predictions.jsonl")
    table = _csv(run.out)
    assert list(table["image"]) == [r["image"] for r in rows]
    assert list(table["pred_age"]) == [r["pred_age"] for r in rows]
    assert list(table["age"]) == [chip_age(Path(r["image"])) for r in rows]
    assert list(table["attributes.gender"]) == [r["attributes"]["gender"] for r in rows]
    # the same columns as the API's table
    assert list(table.columns) == list(run.to_pandas().columns)
    # a reused run that lacks it (finished by an older agebench) gets it back
    (run.out / "predictions.csv").unlink()
    again = agebench.evaluate("utkface", root, out=tmp_path / "eval", n_boot=100, faces="none")
    assert again.reused and len(_csv(run.out)) == 8


def test_export_writes_any_run_as_csv(tmp_path: Path):
    (compare,) = RUNS.glob("compare-*")
    for folder, column in (
        (RUNS / "eval-none", "pred_age"),
        (compare, "dlib-age-v1 [none].pred_age"),
    ):
        out = tmp_path / f"{folder.name}.csv"
        result = CliRunner().invoke(main, ["export", str(folder), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(out)
        assert list(pd.read_csv(out)[column]) == [14.163, 9.573, 18.827]


def test_export_parquet_without_pyarrow_is_one_line(tmp_path: Path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
    )
    out = tmp_path / "t.parquet"
    result = CliRunner().invoke(
        main, ["export", str(RUNS / "predict"), "--format", "parquet", "--out", str(out)]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: --format parquet needs pyarrow: pip install pyarrow"
    ]
    assert not out.exists()
