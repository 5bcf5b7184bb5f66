"""LAGENDA and MiVOLO-format CSVs: one row per annotated person, -1 for unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.benchmarks.lagenda import MIVOLO_CSV_SPEC, SPEC
from agebench.benchmarks.spec import BenchmarkError, LabelProblem, LoadOptions, Record
from tests.fixtures.bench_layouts_b import MIVOLO_HEADER, make_lagenda

CSV = "lagenda_annotation.csv"


@pytest.fixture()
def lagenda(tmp_path: Path) -> Path:
    root = tmp_path / "LAGENDA"
    make_lagenda(root, omit=["lag_benchmark/dddd0004.jpg"])
    return root


def test_labelled_faces_become_records_with_their_boxes(lagenda: Path) -> None:
    data = SPEC.load(LoadOptions(root=lagenda))
    assert data.records[0] == Record(
        image="lag_benchmark/aaaa0001.jpg",
        age=30.0,
        source=f"{CSV}:2",
        box=(10.0, 12.0, 50.0, 60.0),
        attributes={"gender": "female", "person_box": "5,8,90,200"},
    )
    assert data.records[1] == Record(
        image="lag_benchmark/aaaa0001.jpg",  # the same photo, another person
        age=41.0,
        source=f"{CSV}:4",
        box=(120.0, 15.0, 150.0, 55.0),
        attributes={"gender": "male"},
    )
    assert data.records[2] == Record(  # an age but no face box: kept, the runner detects
        image="lag_benchmark/bbbb0002.jpg",
        age=7.0,
        source=f"{CSV}:5",
        attributes={"gender": "male", "person_box": "20,20,80,150"},
    )
    assert data.records[3] == Record(  # an age range, as MiVOLO writes Adience classes
        image="lag_benchmark/cccc0003.jpg",
        age=None,
        source=f"{CSV}:7",
        age_group=(0.0, 2.0),
        box=(1.5, 2.5, 40.25, 44.0),
        attributes={"gender": "female"},
    )
    assert [r.source for r in data.records] == [f"{CSV}:{n}" for n in (2, 4, 5, 7, 8)]
    assert data.problems == [
        LabelProblem(CSV, 6, "no age (age is -1, gender F)"),
        LabelProblem(CSV, 9, "age 'old' is not a number"),
        LabelProblem(
            CSV,
            None,
            "skipped 1 row(s) with neither age nor gender (-1, -1): persons annotated for "
            "detection only",
        ),
        LabelProblem(CSV, 8, "label for lag_benchmark/dddd0004.jpg, but the image is missing"),
    ]
    assert data.label_files == [lagenda / CSV]


def test_broken_boxes_and_genders_are_reported_and_the_record_kept(tmp_path: Path) -> None:
    rows = [
        ("lag_benchmark/a.jpg", 20, "X", 10, -1, 30, 40, -1, -1, -1, -1),
        ("lag_benchmark/b.jpg", 21, "F", 50, 50, 40, 60, 1, 2, 3, -1),
        ("lag_benchmark/c.jpg", 22.5, "m", 1, 2, 3, 4, 0, 0, 10, 10),
    ]
    make_lagenda(tmp_path, rows)
    data = SPEC.load(LoadOptions(root=tmp_path))
    assert [(r.age, r.box, dict(r.attributes)) for r in data.records] == [
        (20.0, None, {}),
        (21.0, None, {"gender": "female"}),
        (22.5, (1.0, 2.0, 3.0, 4.0), {"gender": "male", "person_box": "0,0,10,10"}),
    ]
    assert data.problems == [
        LabelProblem(CSV, 2, "gender 'X' is not M, F or -1; ignored"),
        LabelProblem(
            CSV, 2, "face box (10, -1, 30, 40) is partly unknown; record kept without a box"
        ),
        LabelProblem(CSV, 3, "face box (50, 50, 40, 60) is empty; record kept without a box"),
        LabelProblem(CSV, 3, "person box (1, 2, 3, -1) is partly unknown; person box ignored"),
    ]


def test_mivolo_csv_needs_labels(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="--labels FILE is required"):
        MIVOLO_CSV_SPEC.load(LoadOptions(root=tmp_path))


def test_mivolo_csv_without_person_columns_and_an_images_folder(tmp_path: Path) -> None:
    header = MIVOLO_HEADER[:7]  # MiVOLO's "original" annotation type
    rows = [("0/a.jpg", 33, "M", 4, 5, 64, 75), ("0/b.jpg", 44, -1, -1, -1, -1, -1)]
    make_lagenda(tmp_path, rows, file="annotation/utk_test.csv", header=header, image_dir="images")
    data = MIVOLO_CSV_SPEC.load(
        LoadOptions(
            root=tmp_path, labels=Path("annotation/utk_test.csv"), options={"images": "images"}
        )
    )
    assert data.records == [
        Record(
            image="images/0/a.jpg",
            age=33.0,
            source="annotation/utk_test.csv:2",
            box=(4.0, 5.0, 64.0, 75.0),
            attributes={"gender": "male"},
        ),
        Record(image="images/0/b.jpg", age=44.0, source="annotation/utk_test.csv:3"),
    ]
    assert data.problems == []


def test_missing_annotation_file_and_column_are_fatal(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match=r"lagenda_annotation\.csv: LAGENDA labels"):
        SPEC.load(LoadOptions(root=tmp_path))
    (tmp_path / CSV).write_text("img_name,age,gender\na.jpg,3,M\n")
    with pytest.raises(BenchmarkError, match=r"missing column.*face_x0.*found img_name, age"):
        SPEC.load(LoadOptions(root=tmp_path))


def test_specs() -> None:
    assert SPEC.name == "lagenda" and MIVOLO_CSV_SPEC.name == "mivolo-csv"
    for spec in (SPEC, MIVOLO_CSV_SPEC):
        assert spec.default_faces == "box"
        assert spec.crops.kind == "photo"
        assert spec.splits == ()
    assert "lag_benchmark/" in SPEC.layout
