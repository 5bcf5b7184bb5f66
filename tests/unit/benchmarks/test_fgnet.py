"""FG-NET loader on a tree laid out as FGNET/images/ is published (labels in the names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.benchmarks.common import subject_kfold
from agebench.benchmarks.fgnet import SPEC
from agebench.benchmarks.spec import BenchmarkError, LoadOptions, Record
from tests.fixtures.bench_layouts import make_fgnet

NAMES = [
    "001A02.JPG",
    "001A02.jpg",  # same photo as 001A02.JPG apart from case: counted once
    "001A05.jpg",
    "001A2.JPG",  # one-digit age: does not match
    "001a10.JPG",  # lower-case a
    "002A16.JPG",
    "010A07a.JPG",  # a second photo at the same age
    "010A07b.JPG",
    "082A69.JPG",
    "readme.jpg",
]
RECORDED = [
    ("images/001A02.JPG", 2.0, "001"),
    ("images/001A05.jpg", 5.0, "001"),
    ("images/001a10.JPG", 10.0, "001"),
    ("images/002A16.JPG", 16.0, "002"),
    ("images/010A07a.JPG", 7.0, "010"),
    ("images/010A07b.JPG", 7.0, "010"),
    ("images/082A69.JPG", 69.0, "082"),
]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = tmp_path / "FGNET"
    make_fgnet(root, NAMES)
    return root


def test_lopo_records_sorted_by_path_fold_is_subject(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root))
    assert [(r.image, r.age, r.subject) for r in data.records] == RECORDED
    assert data.records[4] == Record(
        image="images/010A07a.JPG",
        age=7.0,
        source="images/010A07a.JPG",
        subject="010",
        fold="010",
    )
    assert all(r.fold == r.subject for r in data.records)
    assert data.label_files == []


def test_bad_and_duplicate_names_are_problems(root: Path) -> None:
    problems = SPEC.load(LoadOptions(root=root)).problems
    assert [(p.file, p.line) for p in problems] == [
        ("images/001A02.jpg", None),
        ("images/001A2.JPG", None),
        ("images/readme.jpg", None),
    ]
    assert "same name as images/001A02.JPG" in problems[0].reason
    assert problems[1].reason.startswith("name does not match NNNAyy[a-z]")
    assert problems[2].reason.startswith("name does not match NNNAyy[a-z]")


def test_kfold_is_subject_disjoint_and_seeded(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root, protocol="kfold", folds=2, seed=3))
    expected = subject_kfold(["001", "002", "010", "082"], 2, 3)
    assert [r.fold for r in data.records] == [str(expected[s]) for _, _, s in RECORDED]
    assert {r.fold for r in data.records} == {"0", "1"}
    again = SPEC.load(LoadOptions(root=root, protocol="kfold", folds=2, seed=3))
    assert again.records == data.records
    with pytest.raises(BenchmarkError, match="cannot make 5 subject-disjoint folds from 4"):
        SPEC.load(LoadOptions(root=root, protocol="kfold"))


def test_images_directly_in_the_root(tmp_path: Path) -> None:
    make_fgnet(tmp_path, ["003A03.JPG", "004A40.jpg"], folder="", images={"other/005A05.JPG": None})
    data = SPEC.load(LoadOptions(root=tmp_path))
    assert [r.image for r in data.records] == ["003A03.JPG", "004A40.jpg"]
    assert data.problems == []


def test_no_images_is_fatal(tmp_path: Path) -> None:
    make_fgnet(tmp_path / "FGNET", ["001A02.JPG"])
    with pytest.raises(BenchmarkError, match="no FG-NET images found in images/ or in the root"):
        SPEC.load(LoadOptions(root=tmp_path))


def test_unknown_protocol_is_refused(root: Path) -> None:
    with pytest.raises(BenchmarkError, match="unknown protocol 'loso'; protocols: lopo, kfold"):
        SPEC.load(LoadOptions(root=root, protocol="loso"))


def test_spec() -> None:
    assert SPEC.name == "fgnet"
    assert SPEC.default_protocol == "lopo"
    assert SPEC.splits == ()
    assert SPEC.crops.kind == "photo"
    assert SPEC.default_faces == "detect"
    assert SPEC.faces_for({}) == "detect"
