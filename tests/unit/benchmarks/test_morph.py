"""MORPH loader on the coral-cnn split CSVs (age column = real age - 16) and plain CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.benchmarks.morph import SPEC
from agebench.benchmarks.spec import BenchmarkError, LabelProblem, LoadOptions, Record
from tests.fixtures.bench_layouts_b import MORPH_ROWS, make_morph


@pytest.fixture()
def coral(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    make_morph(root, omit=["066525_3M45.jpg"])
    return root


def test_coral_csv_gives_real_ages_from_the_shifted_label(coral: Path) -> None:
    data = SPEC.load(LoadOptions(root=coral))
    assert data.records[0] == Record(
        image="morph2-aligned/273546_01M22.jpg",
        age=22.0,
        source="morph2_test.csv:2",
        subject="273546",
        split="test",
        attributes={"gender": "male", "race": "B"},
    )
    assert data.records[1] == Record(
        image="morph2-aligned/306329_00F32.jpg",
        age=32.0,
        source="morph2_test.csv:3",
        subject="306329",
        split="test",
        attributes={"gender": "female", "race": "B"},
    )
    assert [(r.image, r.age, r.subject) for r in data.records[2:]] == [
        ("morph2-aligned/066525_3M45.jpg", 45.0, "66525"),
        ("morph2-aligned/315507_00M27.jpg", 27.0, "315507"),
    ]
    assert data.problems == [
        LabelProblem(
            "morph2_test.csv",
            4,
            "label for morph2-aligned/066525_3M45.jpg, but the image is missing",
        )
    ]
    assert data.label_files == [coral / "morph2_test.csv"]


def test_the_csv_written_matches_coral_cnn_header(coral: Path) -> None:
    lines = (coral / "morph2_test.csv").read_text().splitlines()
    assert lines[0] == ",id_num,picture_num,race,Male,facial_hair,age,glasses,quality"
    assert lines[1] == "273546_01M22.jpg,273546,1,B,1,,6,,GOOD"


def test_explicit_offset_zero_keeps_the_column_and_reports_every_disagreement(coral: Path) -> None:
    data = SPEC.load(LoadOptions(root=coral, options={"age_offset": "0"}))
    assert [r.age for r in data.records] == [6.0, 16.0, 29.0, 11.0]
    disagreements = [p for p in data.problems if "file name says" in p.reason]
    assert [(p.file, p.line) for p in disagreements] == [
        ("morph2_test.csv", n) for n in (2, 3, 4, 5)
    ]
    assert disagreements[0].reason == "age 6 + offset 0 = 6, but the file name says 22; kept 6"


def test_plain_csv_with_real_ages_and_images_at_the_root(tmp_path: Path) -> None:
    make_morph(tmp_path, style="plain", image_dir="", split="valid")
    data = SPEC.load(LoadOptions(root=tmp_path, split="valid"))
    assert data.records[3] == Record(
        image="315507_00M27.jpg",
        age=27.0,
        source="morph2_valid.csv:5",
        subject="315507",
        split="valid",
        attributes={"gender": "male"},
    )
    assert [r.age for r in data.records] == [float(age) for _, age, _ in MORPH_ROWS]
    assert data.problems == []


def test_one_row_disagreeing_with_its_file_name_is_reported_and_kept(tmp_path: Path) -> None:
    rows = [*MORPH_ROWS, ("100001_02F40.jpg", 41, "W")]  # the column says 41 - 16
    make_morph(tmp_path, rows)
    data = SPEC.load(LoadOptions(root=tmp_path))
    assert data.records[-1].age == 41.0
    assert data.problems == [
        LabelProblem(
            "morph2_test.csv",
            6,
            "age 25 + offset 16 = 41, but the file name says 40; kept 41",
        )
    ]


def test_custom_columns_labels_file_and_image_folder(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "mine.csv").write_text(
        "img,years,person\n001_0M30.jpg,30,1\n002_1F45.jpg,x,2\n001_0M30.jpg,30,1\n"
    )
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "001_0M30.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    data = SPEC.load(
        LoadOptions(
            root=tmp_path,
            labels=Path("lists/mine.csv"),
            options={
                "path_column": "IMG",
                "age_column": "years",
                "id_column": "person",
                "images": "faces",
            },
        )
    )
    assert data.records == [
        Record(
            image="faces/001_0M30.jpg",
            age=30.0,
            source="lists/mine.csv:2",
            subject="1",
            split="test",
            attributes={"gender": "male"},
        )
    ]
    assert data.problems == [
        LabelProblem("lists/mine.csv", 3, "years 'x' is not a number"),
        LabelProblem("lists/mine.csv", 4, "faces/001_0M30.jpg repeats line 2; ignored"),
    ]


def test_missing_split_csv_is_fatal_and_names_it(tmp_path: Path) -> None:
    make_morph(tmp_path)
    with pytest.raises(BenchmarkError, match=r"morph2_valid\.csv: MORPH valid split CSV not found"):
        SPEC.load(LoadOptions(root=tmp_path, split="valid"))


def test_missing_age_column_is_fatal_and_lists_the_columns(tmp_path: Path) -> None:
    (tmp_path / "morph2_test.csv").write_text("file,years\na.jpg,3\n")
    with pytest.raises(BenchmarkError, match=r"no age column .* found file, years"):
        SPEC.load(LoadOptions(root=tmp_path))
    with pytest.raises(BenchmarkError, match=r"missing column ageX \(--option age_column\)"):
        SPEC.load(LoadOptions(root=tmp_path, options={"age_column": "ageX"}))


def test_bad_offset_option_is_fatal(coral: Path) -> None:
    with pytest.raises(BenchmarkError, match="age_offset=sixteen"):
        SPEC.load(LoadOptions(root=coral, options={"age_offset": "sixteen"}))


def test_spec_describes_the_layout() -> None:
    assert SPEC.name == "morph"
    assert SPEC.splits == ("test", "valid", "train")
    assert SPEC.default_faces == "none"
    assert SPEC.crops.aligned
    assert "facebase" in SPEC.notes
    assert set(SPEC.options) == {"age_offset", "images", "path_column", "age_column", "id_column"}
    assert "morph2-aligned/" in SPEC.layout
