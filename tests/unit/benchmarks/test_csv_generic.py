"""The generic csv benchmark: any CSV of image paths and ages, columns named by role."""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.benchmarks.csv_generic import SPEC, default_faces, ready_crop
from agebench.benchmarks.spec import (
    BenchmarkError,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
)
from tests.fixtures.bench_layouts_b import make_csv

COLUMNS = {
    "path": "file",
    "age": "years",
    "subject": "person",
    "x1": "x1",
    "y1": "y1",
    "x2": "x2",
    "y2": "y2",
}


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    make_csv(tmp_path, omit=["photos/d.jpg"])
    return tmp_path


def test_rows_become_records_by_role(root: Path) -> None:
    data = SPEC.load(
        LoadOptions(
            root=root,
            labels=Path("labels.csv"),
            columns=COLUMNS,
            options={"attributes": "sex"},
        )
    )
    assert data.records == [
        Record(
            image="photos/a.jpg",
            age=31.0,
            source="labels.csv:2",
            subject="p1",
            box=(10.0, 20.0, 110.0, 140.0),
            attributes={"sex": "female"},
        ),
        Record(image="photos/c.jpg", age=8.5, source="labels.csv:4", subject="p3"),
        Record(
            image="photos/d.jpg",
            age=70.0,
            source="labels.csv:5",
            box=(0.0, 0.0, 50.0, 60.0),
            attributes={"sex": "male"},
        ),
    ]
    assert data.problems == [
        LabelProblem("labels.csv", 3, "years 'thirty' is not a number"),
        LabelProblem("labels.csv", 4, "face box (5, 5, 5, 9) is empty; record kept without a box"),
        LabelProblem("labels.csv", 5, "label for photos/d.jpg, but the image is missing"),
    ]
    assert data.label_files == [root / "labels.csv"]


def test_default_columns_std_fold_split_and_tabs(tmp_path: Path) -> None:
    rows = [
        ("x/1.png", 20, 2.5, 0, "test"),
        ("x/1.png", 21, 2.5, 0, "test"),
        ("../out.png", 22, 1, 1, "test"),
        ("x/2.png", -3, 1, 1, "train"),
        ("x/3.png", 40, 1, 1),
    ]
    make_csv(
        tmp_path, rows, header=("path", "age", "sd", "k", "part"), file="t.tsv", delimiter="\t"
    )
    data = SPEC.load(
        LoadOptions(
            root=tmp_path,
            labels=Path("t.tsv"),
            columns={"std": "sd", "fold": "k", "split": "part"},
            options={"delimiter": "tab"},
        )
    )
    assert data.records == [
        Record(image="x/1.png", age=20.0, source="t.tsv:2", age_std=2.5, fold="0", split="test")
    ]
    assert data.problems == [
        LabelProblem("t.tsv", 3, "x/1.png repeats line 2; ignored"),
        LabelProblem("t.tsv", 4, "image path '../out.png' leaves the root"),
        LabelProblem("t.tsv", 5, "age -3 is below 0"),
        LabelProblem("t.tsv", 6, "4 fields, header has 5"),
    ]


def test_absolute_paths_inside_the_root_and_an_images_folder(tmp_path: Path) -> None:
    make_csv(
        tmp_path, [(str(tmp_path / "photos/a.jpg"), 30), ("b.jpg", 31)], header=("path", "age")
    )
    (tmp_path / "photos" / "b.jpg").write_bytes((tmp_path / "b.jpg").read_bytes())
    data = SPEC.load(
        LoadOptions(root=tmp_path, labels=Path("labels.csv"), options={"images": "photos"})
    )
    assert [r.image for r in data.records] == ["photos/a.jpg", "photos/b.jpg"]
    assert data.problems == []


def test_missing_column_is_fatal_and_lists_what_was_found(root: Path) -> None:
    with pytest.raises(
        BenchmarkError,
        match=r"labels\.csv: missing column\(s\) path, age; found file, years, person, sex",
    ):
        SPEC.load(LoadOptions(root=root, labels=Path("labels.csv")))


def test_labels_are_required(root: Path) -> None:
    with pytest.raises(BenchmarkError, match="--labels FILE is required"):
        SPEC.load(LoadOptions(root=root))


def test_bad_roles_and_partial_boxes_are_fatal(root: Path) -> None:
    with pytest.raises(BenchmarkError, match=r"unknown column role.*height"):
        SPEC.load(LoadOptions(root=root, labels=Path("labels.csv"), columns={"height": "h"}))
    with pytest.raises(BenchmarkError, match="needs all of x1, y1, x2, y2; got only x1"):
        SPEC.load(LoadOptions(root=root, labels=Path("labels.csv"), columns={"x1": "x1"}))


def test_ready_crop_says_what_the_images_are() -> None:
    assert ready_crop({}).kind == "photo"
    assert ready_crop({"crop": "tight"}) == ReadyCrop(
        "tight", description="tight face crops (--option crop=tight)"
    )
    assert ready_crop({"crop": "aligned"}).aligned
    crop = ready_crop({"crop": "margin:0.4"})
    assert (crop.kind, crop.margin) == ("margin", 0.4)
    assert SPEC.ready_crop({"crop": "margin:0.25"}).margin == 0.25
    for bad in ("margin:lots", "margin:-1", "box"):
        with pytest.raises(BenchmarkError, match="expected photo, tight, aligned or margin"):
            ready_crop({"crop": bad})


def test_default_faces_follow_the_columns_and_crop(tmp_path: Path) -> None:
    assert default_faces(LoadOptions(root=tmp_path)) == "detect"
    assert default_faces(LoadOptions(root=tmp_path, options={"crop": "tight"})) == "none"
    assert default_faces(LoadOptions(root=tmp_path, columns=COLUMNS)) == "box"


def test_unknown_option_is_rejected_by_the_spec(root: Path) -> None:
    with pytest.raises(BenchmarkError, match="unknown --option faces"):
        SPEC.load(LoadOptions(root=root, labels=Path("labels.csv"), options={"faces": "x"}))
