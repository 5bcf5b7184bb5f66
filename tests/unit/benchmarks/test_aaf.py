"""All-Age-Faces loader on a tree laid out as "All-Age-Faces Dataset/" is published."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agebench.benchmarks.aaf import SPEC
from agebench.benchmarks.spec import BenchmarkError, LabelProblem, LoadOptions, Record
from tests.fixtures.bench_layouts import make_aaf

TRAIN = [("00000A02.jpg", 0), ("07381A30.jpg", 1)]
VAL: list[tuple[str, int] | str] = [
    ("00001A02.jpg", 0),  # line 1
    ("13321A80.jpg", 1),  # line 2
    ("07382A45", 1),  # line 3: the authors' README format, without .jpg
    "00002A03.jpg",  # line 4: no gender
    "0003A03.jpg 0",  # line 5: four-digit serial
    ("00004A05.jpg", 2),  # line 6: gender 2
    ("00001A02.jpg", 0),  # line 7: repeats line 1
    ("00005A10.jpg", 0),  # line 8: aligned image missing
]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = tmp_path / "All-Age-Faces Dataset"
    make_aaf(
        root,
        TRAIN,
        VAL,
        images={"aglined faces/09999A50.jpg": None},
        missing={"aglined faces/00005A10.jpg"},
    )
    return root


def test_val_records_in_list_order(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root))
    assert data.records == [
        Record(
            image="aglined faces/00001A02.jpg",
            age=2.0,
            source="image sets/val.txt:1",
            subject="00001",
            split="val",
            attributes={"gender": "female"},
        ),
        Record(
            image="aglined faces/13321A80.jpg",
            age=80.0,
            source="image sets/val.txt:2",
            subject="13321",
            split="val",
            attributes={"gender": "male"},
        ),
        Record(
            image="aglined faces/07382A45.jpg",
            age=45.0,
            source="image sets/val.txt:3",
            subject="07382",
            split="val",
            attributes={"gender": "male"},
        ),
        Record(
            image="aglined faces/00005A10.jpg",
            age=10.0,
            source="image sets/val.txt:8",
            subject="00005",
            split="val",
            attributes={"gender": "female"},
        ),
    ]
    assert data.label_files == [root / "image sets/val.txt", root / "image sets/train.txt"]


def test_problems(root: Path) -> None:
    problems = SPEC.load(LoadOptions(root=root)).problems
    expected = [
        ("image sets/val.txt", 4, "1 fields, expected '<image> <gender>'"),
        ("image sets/val.txt", 5, "'0003A03.jpg' does not match NNNNNAyy.jpg"),
        ("image sets/val.txt", 6, "gender '2' is not 0 (female) or 1 (male)"),
        ("image sets/val.txt", 7, "00001A02.jpg repeats line 1"),
        ("image sets/val.txt", 8, "aglined faces/00005A10.jpg, but the image is missing"),
        ("aglined faces/09999A50.jpg", None, "image has no label"),
    ]
    assert len(problems) == len(expected)
    for problem, (file, line, reason) in zip(problems, expected, strict=True):
        assert (problem.file, problem.line) == (file, line)
        assert reason in problem.reason


def test_train_split(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root, split="train"))
    assert [(r.image, r.age, r.attributes["gender"]) for r in data.records] == [
        ("aglined faces/00000A02.jpg", 2.0, "female"),
        ("aglined faces/07381A30.jpg", 30.0, "male"),
    ]
    assert data.problems == [LabelProblem("aglined faces/09999A50.jpg", None, "image has no label")]


def test_crop_original(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root, options={"crop": "original"}))
    assert [r.image for r in data.records] == [
        "original images/00001A02.jpg",
        "original images/13321A80.jpg",
        "original images/07382A45.jpg",
        "original images/00005A10.jpg",
    ]
    assert [p.line for p in data.problems] == [4, 5, 6, 7]


def test_readme_spelling_of_the_aligned_folder(root: Path) -> None:
    (root / "aglined faces").rename(root / "aligned faces")
    data = SPEC.load(LoadOptions(root=root))
    assert data.records[0].image == "aligned faces/00001A02.jpg"
    shutil.rmtree(root / "aligned faces")
    with pytest.raises(BenchmarkError, match="aglined faces: AAF aligned faces folder not found"):
        SPEC.load(LoadOptions(root=root))


def test_without_the_other_list_unlabelled_images_are_not_judged(tmp_path: Path) -> None:
    make_aaf(tmp_path, val=[("00001A02.jpg", 0)], images={"aglined faces/00000A02.jpg": None})
    data = SPEC.load(LoadOptions(root=tmp_path))
    assert [r.image for r in data.records] == ["aglined faces/00001A02.jpg"]
    assert data.problems == []
    assert data.label_files == [tmp_path / "image sets/val.txt"]


def test_missing_list_is_fatal(tmp_path: Path) -> None:
    make_aaf(tmp_path, train=TRAIN)
    with pytest.raises(BenchmarkError, match=r"val\.txt: AAF val list not found"):
        SPEC.load(LoadOptions(root=tmp_path))
    with pytest.raises(BenchmarkError, match="unknown split 'test'; splits: val, train"):
        SPEC.load(LoadOptions(root=tmp_path, split="test"))


def test_spec() -> None:
    assert SPEC.name == "aaf"
    assert SPEC.default_split == "val"
    # not tight: the authors' aligned faces keep about a 0.38 margin around the face box
    assert (SPEC.crops.kind, SPEC.crops.aligned) == ("margin", True)
    assert SPEC.crops.margin == pytest.approx(0.38)
    assert SPEC.default_faces == "none"
    assert SPEC.ready_crop({}) == SPEC.crops
    assert SPEC.faces_for({"crop": "aligned"}) == "none"
    assert SPEC.ready_crop({"crop": "original"}).kind == "photo"
    assert SPEC.faces_for({"crop": "original"}) == "detect"
    assert set(SPEC.options) == {"crop"}
