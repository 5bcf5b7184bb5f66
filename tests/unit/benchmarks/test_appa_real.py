"""APPA-REAL loader on a tree laid out as appa-real-release/ is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.benchmarks.appa_real import SPEC
from agebench.benchmarks.spec import BenchmarkError, LabelProblem, LoadOptions, Record
from tests.fixtures.bench_layouts import AppaRow, make_appa_real

TEST_ROWS: list[AppaRow | str] = [
    AppaRow("005613.jpg", 43, 39.394737, 5.349889),  # line 2
    AppaRow("005614.jpg", 4, 5.0, 1.146423, num_ratings=36),  # line 3
    AppaRow("005615.jpg", 25, 26.5, 3.2),  # line 4: images missing
    "005616.jpg,38,abc,1.0,30",  # line 5: not a number
    "005613.jpg,38,40.0,5.0,43",  # line 6: repeats line 2
    "005617.jpg,38,30.0",  # line 7: too few fields
    AppaRow("005618.jpg", 61, 58.75, 7.5),  # line 8
]
CATEGORIES: list[list[str] | str] = [
    ["005613.jpg", "male", "caucasian", "no", "modern", "neutral"],  # line 2
    "005614.jpg,female,asian,,,",  # line 3: empty values are left out
    ["000001.jpg", "female", "asian", "no", "modern", "happy"],  # line 4: no gt_avg row
]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = tmp_path / "appa-real-release"
    make_appa_real(
        root,
        {
            "test": TEST_ROWS,
            "valid": [AppaRow("004113.jpg", 30, 31.25, 4.0)],
        },
        categories={"test": CATEGORIES},
        images={"test/009999.jpg": None, "test/009999.jpg_face.jpg": None},
        missing={"test/005615.jpg", "test/005615.jpg_face.jpg"},
    )
    return root


def test_records_are_the_label_rows_in_file_order(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root))
    assert [r.image for r in data.records] == [
        "test/005613.jpg_face.jpg",
        "test/005614.jpg_face.jpg",
        "test/005615.jpg_face.jpg",
        "test/005618.jpg_face.jpg",
    ]
    assert data.records[0] == Record(
        image="test/005613.jpg_face.jpg",
        age=43.0,
        source="gt_avg_test.csv:2",
        targets={"apparent_age": 39.394737},
        age_std=5.349889,
        split="test",
        attributes={
            "gender": "male",
            "race": "caucasian",
            "makeup": "no",
            "time": "modern",
            "happiness": "neutral",
        },
    )
    assert data.records[1] == Record(
        image="test/005614.jpg_face.jpg",
        age=4.0,
        source="gt_avg_test.csv:3",
        targets={"apparent_age": 5.0},
        age_std=1.146423,
        split="test",
        attributes={"gender": "female", "race": "asian"},
    )
    assert data.records[3] == Record(
        image="test/005618.jpg_face.jpg",
        age=61.0,
        source="gt_avg_test.csv:8",
        targets={"apparent_age": 58.75},  # never rounded
        age_std=7.5,
        split="test",
    )
    assert data.label_files == [root / "gt_avg_test.csv", root / "allcategories_test.csv"]


def test_problems_name_file_line_and_reason(root: Path) -> None:
    problems = SPEC.load(LoadOptions(root=root)).problems
    expected = [
        ("gt_avg_test.csv", 5, "apparent_age_avg 'abc' is not a number"),
        ("gt_avg_test.csv", 6, "005613.jpg repeats line 2"),
        ("gt_avg_test.csv", 7, "3 fields, header has 5"),
        ("allcategories_test.csv", 4, "attributes for 000001.jpg, which has no gt_avg row"),
        ("gt_avg_test.csv", 4, "test/005615.jpg_face.jpg, but the image is missing"),
        ("test/009999.jpg_face.jpg", None, "image has no label"),
    ]
    assert len(problems) == len(expected)
    for problem, (file, line, reason) in zip(problems, expected, strict=True):
        assert (problem.file, problem.line) == (file, line)
        assert reason in problem.reason


def test_crop_original_scores_the_photos(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root, options={"crop": "original"}))
    assert [r.image for r in data.records] == [
        "test/005613.jpg",
        "test/005614.jpg",
        "test/005615.jpg",
        "test/005618.jpg",
    ]
    assert data.problems[-2:] == [
        LabelProblem("gt_avg_test.csv", 4, "label for test/005615.jpg, but the image is missing"),
        LabelProblem("test/009999.jpg", None, "image has no label"),
    ]


def test_other_split_and_no_categories(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root, split="valid"))
    assert data.records == [
        Record(
            image="valid/004113.jpg_face.jpg",
            age=30.0,
            source="gt_avg_valid.csv:2",
            targets={"apparent_age": 31.25},
            age_std=4.0,
            split="valid",
        )
    ]
    assert data.problems == []
    assert data.label_files == [root / "gt_avg_valid.csv"]


def test_categories_in_the_download_folder(tmp_path: Path) -> None:
    make_appa_real(
        tmp_path,
        {"test": [AppaRow("000000.jpg", 20, 22.0, 2.0)]},
        categories={"test": [["000000.jpg", "female", "afroamerican", "yes", "modern", "happy"]]},
        categories_folder="allcategories_trainvalidtest_split",
    )
    data = SPEC.load(LoadOptions(root=tmp_path))
    assert data.records[0].attributes["race"] == "afroamerican"
    assert data.label_files[1] == (
        tmp_path / "allcategories_trainvalidtest_split" / "allcategories_test.csv"
    )


def test_missing_label_file_folder_or_column_is_fatal(tmp_path: Path) -> None:
    make_appa_real(tmp_path, {"valid": [AppaRow("000000.jpg", 20, 22.0, 2.0)]})
    with pytest.raises(BenchmarkError, match=r"gt_avg_test\.csv: APPA-REAL test labels"):
        SPEC.load(LoadOptions(root=tmp_path))
    (tmp_path / "gt_avg_train.csv").write_text("file_name,real_age\n000000.jpg,20\n")
    (tmp_path / "train").mkdir()
    with pytest.raises(BenchmarkError, match=r"missing column\(s\) apparent_age_avg"):
        SPEC.load(LoadOptions(root=tmp_path, split="train"))
    (tmp_path / "gt_avg_test.csv").write_text((tmp_path / "gt_avg_valid.csv").read_text())
    with pytest.raises(BenchmarkError, match="APPA-REAL test image folder not found"):
        SPEC.load(LoadOptions(root=tmp_path))


def test_unknown_crop_is_fatal(root: Path) -> None:
    with pytest.raises(BenchmarkError, match="--option crop=photo: expected one of face, original"):
        SPEC.load(LoadOptions(root=root, options={"crop": "photo"}))


def test_spec_describes_the_face_crops() -> None:
    assert SPEC.name == "appa-real"
    assert SPEC.default_split == "test"
    assert SPEC.targets == ("age", "apparent_age")
    assert (SPEC.crops.kind, SPEC.crops.margin) == ("margin", 0.4)
    assert SPEC.default_faces == "none"
    assert SPEC.ready_crop({"crop": "face"}) == SPEC.crops
    assert SPEC.faces_for({}) == "none"
    assert SPEC.ready_crop({"crop": "original"}).kind == "photo"
    assert SPEC.faces_for({"crop": "original"}) == "detect"
    assert set(SPEC.options) == {"crop"}
