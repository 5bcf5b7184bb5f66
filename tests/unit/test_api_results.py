"""``agebench.load_run`` on saved folders of every schema version (``tests/data/runs``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import agebench
from agebench.api_results import CompareResult, EvalResult, PredictResult

RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"
SHA = "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
CHIPS = [
    "11_1_4_20170109201611941.jpg.chip.jpg",
    "12_0_4_20170103200626630.jpg.chip.jpg",
    "12_1_3_20161220222343139.jpg.chip.jpg",
]


@pytest.mark.parametrize("version", ["current", "v0"])
def test_predict_folders_of_every_version(version: str):
    result = agebench.load_run(RUNS / version / "predict")
    assert isinstance(result, PredictResult)
    assert result.model == agebench.ModelRef("dlib-age-v1", SHA)
    assert (result.counts.images, result.counts.faces, result.counts.images_failed) == (3, 3, 0)
    assert result.faces_mode == "none" and result.exit_code == 0 and result.report is None
    # what agebench predict prints in its table's title and last column
    assert (result.provider, result.images_per_second) == ("CPUExecutionProvider", 103.84)
    table = result.to_pandas()
    assert len(table) == 3 and list(table["image"]) == CHIPS
    assert list(table["age"]) == [14.163, 9.573, 18.827]  # dlib-age-v1, tight chips
    # the same object from the summary file itself
    assert agebench.load_run(RUNS / version / "predict" / "summary.json") == result


@pytest.mark.parametrize("version", ["current", "v0"])
def test_eval_folders_of_every_version(version: str):
    result = agebench.load_run(RUNS / version / "eval-none")
    assert isinstance(result, EvalResult)
    assert (result.benchmark, result.faces_mode, result.model.sha256) == ("utkface", "none", SHA)
    assert result.counts.records == result.counts.scored == 3
    age = result.metrics["age"]
    assert age.mae == pytest.approx(4.139) and age.coverage == 1.0 and age.mae_ci is not None
    # what agebench eval prints below its table: none here (no groups, problems or findings)
    assert (result.group_metrics, result.problems, result.findings) == (None, (), ())
    table = result.to_pandas()
    assert len(table) == 3
    # attributes flattened; columns an earlier schema lacked are there, empty
    assert list(table["attributes.gender"]) == ["female", "male", "female"]
    assert {"notes", "run", "pred_age", "age"} <= set(table.columns)
    if version == "v0":
        assert list(table["notes"]) == [[], [], []] and table["run"].isna().all()
    assert list(table["pred_age"]) == [14.163, 9.573, 18.827]


def test_compare_folder_and_its_runs():
    (folder,) = (RUNS / "current").glob("compare-*")
    result = agebench.load_run(folder)
    assert isinstance(result, CompareResult)
    assert result.target == "age" and result.benchmark == "utkface"
    assert [r.label for r in result.ranking] == ["dlib-age-v1 [detect]", "dlib-age-v1 [none]"]
    assert [r.rank for r in result.ranking] == [1, 2] and result.n_scored_by_all == 3
    assert result.reused == (None, None)  # read back: how each run was obtained is not known
    # recorded relative to the compare command's folder: found beside the compare folder
    assert {label: p.name for label, p in result.run_paths.items()} == {
        "dlib-age-v1 [none]": "eval-none",
        "dlib-age-v1 [detect]": "eval-detect",
    }
    table = result.to_pandas()
    assert len(table) == 3
    assert list(table["dlib-age-v1 [none].pred_age"]) == [14.163, 9.573, 18.827]
    assert (table["dlib-age-v1 [detect].status"] == "ok").all()


def test_not_a_run_is_one_line(tmp_path: Path):
    with pytest.raises(agebench.AgebenchError, match="no such run folder"):
        agebench.load_run(tmp_path / "absent")
    with pytest.raises(agebench.AgebenchError, match="not a finished run"):
        agebench.load_run(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"schema": "agebench.other/9"}))
    with pytest.raises(agebench.AgebenchError, match=r"agebench\.other/9"):
        agebench.load_run(tmp_path)


def test_an_eval_folder_without_its_rows_is_named(tmp_path: Path):
    shutil.copytree(RUNS / "current" / "eval-none", tmp_path / "run")
    (tmp_path / "run" / "predictions.jsonl").unlink()
    result = agebench.load_run(tmp_path / "run")  # the summary alone is readable
    assert result.counts.records == 3
    with pytest.raises(agebench.AgebenchError, match=r"no predictions\.jsonl"):
        result.to_pandas()
