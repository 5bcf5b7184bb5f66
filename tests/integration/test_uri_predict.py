"""``agebench predict file://...``: the same predictions as the plain folder, with both
executors; a missing or over-size object fails alone with its reason."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import agebench
from agebench.runner import pipeline
from agebench.runner.uri import iter_objects


@pytest.fixture(scope="module")
def chips_tree(tmp_path_factory, face_chips: list[Path]) -> Path:
    """A copy of the shared chips, half of them one folder down (the tree is mirrored)."""
    root = tmp_path_factory.mktemp("uri") / "chips"
    for index, chip in enumerate(face_chips):
        target = root / ("sub" if index % 2 else "") / chip.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chip, target)
    return root


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _same_predictions(folder: Path, by_uri: Path) -> None:
    assert _rows(by_uri) == _rows(folder)  # images, boxes, landmarks, ages: row for row
    assert len(_rows(folder)) >= 40


@pytest.fixture(scope="module")
def folder_run(chips_tree: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folder") / "out"
    agebench.predict(chips_tree, out, workers=1)
    return out


@pytest.mark.slow
def test_file_uri_equals_the_folder_local_executor(chips_tree, folder_run, tmp_path):
    result = agebench.predict(chips_tree.as_uri() + "/", tmp_path / "o", workers=1)
    _same_predictions(folder_run, tmp_path / "o")
    summary = result.summary
    assert summary["input"] == chips_tree.as_uri() + "/"
    assert summary["settings"]["input"] == chips_tree.as_uri() + "/"
    chip = next((chips_tree / "sub").iterdir())
    record = json.loads((tmp_path / "o" / "sub" / f"{chip.name}.json").read_text())
    assert record["path"] == chip.as_uri()
    assert record["image"] == f"sub/{chip.name}"
    assert record["source"]["size"] == chip.stat().st_size
    again = agebench.predict(chips_tree.as_uri() + "/", tmp_path / "o", workers=1)
    assert again.summary["counts"]["skipped_resumed"] == summary["counts"]["images"]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_file_uri_equals_the_folder_ray_executor(chips_tree, folder_run, tmp_path, local_ray):
    agebench.predict(chips_tree.as_uri(), tmp_path / "o", executor="ray")
    _same_predictions(folder_run, tmp_path / "o")


@pytest.mark.slow
def test_missing_and_too_large_objects_fail_alone(chips_tree, tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    shutil.copytree(chips_tree, tree)
    names = sorted(p.name for p in tree.glob("*.jpg"))[:2]

    def listing(given: str, *, recursive: bool = True):
        for obj in iter_objects(given, recursive=recursive):
            if obj.relative.name == names[0]:
                obj = dataclasses.replace(obj, path=obj.path + ".gone")  # deleted once listed
            if obj.relative.name == names[1]:
                obj = dataclasses.replace(obj, size=2**40)  # a 1 TiB object
            yield obj

    monkeypatch.setattr(pipeline, "iter_objects", listing)
    result = agebench.predict(tree.as_uri(), tmp_path / "o", workers=1)
    failures = {f["image"]: f["error"] for f in result.summary["failures"]}
    assert failures[names[0]] == "file not found"
    assert failures[names[1]].startswith("file too large: 1,099,511,627,776 bytes exceeds")
    assert len(failures) == 2 and result.exit_code == pipeline.EXIT_PARTIAL
    assert result.summary["counts"]["images_ok"] == result.summary["counts"]["images"] - 2
