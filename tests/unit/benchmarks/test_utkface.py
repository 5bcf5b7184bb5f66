"""UTKFace loader on a tree laid out as published (labels in the names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.benchmarks.spec import BenchmarkError, LoadOptions, Record
from agebench.benchmarks.utkface import SPEC, parse_name
from tests.conftest import chip_age
from tests.fixtures.bench_layouts import make_utkface

CHIPS = [
    "1_0_0_20161219140623097.jpg.chip.jpg",
    "26_1_3_20170104235421282.jpg.chip.jpg",
    "90_0_4_20170111222307351.jpg.chip.jpg",
    "116_1_0_20170120134921760.jpg.chip.jpg",
    # published without race: malformed, never guessed
    "39_1_20170116174525125.jpg.chip.jpg",
    "61_1_20170109150557335.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    # a dot missing before jpg
    "55_0_0_20170116232725357jpg.chip.jpg",
    # out-of-range codes
    "25_2_0_20170116174525125.jpg.chip.jpg",
    "25_0_5_20170116174525125.jpg.chip.jpg",
]
PHOTOS = ["1_0_0_20161219140623097.jpg", "30_1_2_20170116191212121.jpg"]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    make_utkface(tmp_path, CHIPS)
    make_utkface(tmp_path, CHIPS[:1], folder="crop_part1")  # a copy of part of UTKFace/
    make_utkface(tmp_path, PHOTOS, folder="part1")
    (tmp_path / "landmark_list_part1.txt").write_text("1_0_0_20161219140623097.jpg 1 2\n")
    return tmp_path


def test_chips_by_default_sorted_by_path(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root))
    assert [(r.image, r.age) for r in data.records] == [
        ("UTKFace/116_1_0_20170120134921760.jpg.chip.jpg", 116.0),
        ("UTKFace/1_0_0_20161219140623097.jpg.chip.jpg", 1.0),
        ("UTKFace/26_1_3_20170104235421282.jpg.chip.jpg", 26.0),
        ("UTKFace/90_0_4_20170111222307351.jpg.chip.jpg", 90.0),
    ]
    assert data.records[2] == Record(
        image="UTKFace/26_1_3_20170104235421282.jpg.chip.jpg",
        age=26.0,
        source="UTKFace/26_1_3_20170104235421282.jpg.chip.jpg",
        attributes={"gender": "female", "race": "indian"},
    )
    assert data.records[3].attributes == {"gender": "male", "race": "others"}
    assert data.label_files == []


def test_malformed_names_are_problems_not_records(root: Path) -> None:
    problems = SPEC.load(LoadOptions(root=root)).problems
    expected = [
        ("UTKFace/25_0_5_20170116174525125.jpg.chip.jpg", "race 5 is not 0-4"),
        ("UTKFace/25_2_0_20170116174525125.jpg.chip.jpg", "gender 2 is not 0 (male) or 1"),
        ("UTKFace/39_1_20170116174525125.jpg.chip.jpg", "malformed label: 3 underscore"),
        ("UTKFace/55_0_0_20170116232725357jpg.chip.jpg", "name does not match"),
        ("UTKFace/61_1_20170109142408075.jpg.chip.jpg", "malformed label: 3 underscore"),
        ("UTKFace/61_1_20170109150557335.jpg.chip.jpg", "malformed label: 3 underscore"),
        (
            "crop_part1/1_0_0_20161219140623097.jpg.chip.jpg",
            "copy of UTKFace/1_0_0_20161219140623097.jpg.chip.jpg; counted once",
        ),
    ]
    assert len(problems) == len(expected)
    for problem, (file, reason) in zip(problems, expected, strict=True):
        assert (problem.file, problem.line) == (file, None)
        assert reason in problem.reason


def test_photos_and_all_subsets(root: Path) -> None:
    photos = SPEC.load(LoadOptions(root=root, options={"subset": "photos"}))
    assert photos.records == [
        Record(
            image="part1/1_0_0_20161219140623097.jpg",
            age=1.0,
            source="part1/1_0_0_20161219140623097.jpg",
            attributes={"gender": "male", "race": "white"},
        ),
        Record(
            image="part1/30_1_2_20170116191212121.jpg",
            age=30.0,
            source="part1/30_1_2_20170116191212121.jpg",
            attributes={"gender": "female", "race": "asian"},
        ),
    ]
    assert photos.problems == []
    both = SPEC.load(LoadOptions(root=root, options={"subset": "all"}))
    assert len(both.records) == 6
    assert len(both.problems) == 7


def test_photos_without_chips_are_refused_by_default(tmp_path: Path) -> None:
    make_utkface(tmp_path, PHOTOS, folder="part1")
    with pytest.raises(BenchmarkError, match=r"found 2 other images\. For the in-the-wild"):
        SPEC.load(LoadOptions(root=tmp_path))
    with pytest.raises(BenchmarkError, match=r"photos pass --option subset=photos$"):
        SPEC.load(LoadOptions(root=tmp_path / "part1", options={"subset": "chips"}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkError, match="no UTKFace images found"):
        SPEC.load(LoadOptions(root=tmp_path / "empty", options={"subset": "photos"}))


def test_unknown_subset_is_fatal(root: Path) -> None:
    with pytest.raises(BenchmarkError, match="--option subset=crops: expected one of"):
        SPEC.load(LoadOptions(root=root, options={"subset": "crops"}))


def test_parse_name() -> None:
    assert parse_name("8_1_2_20161219163612574.jpg.chip.jpg") == {
        "age": "8",
        "gender": "female",
        "race": "asian",
        "datetime": "20161219163612574",
    }


def test_real_chips_in_the_published_layout(tmp_path: Path, face_chips: list[Path]) -> None:
    make_utkface(tmp_path, images={f"UTKFace/{chip.name}": chip for chip in face_chips})
    data = SPEC.load(LoadOptions(root=tmp_path))
    assert data.problems == []
    assert len(data.records) == len(face_chips) == 48
    ages = {Path(r.image).name: r.age for r in data.records}
    assert ages == {chip.name: float(chip_age(chip)) for chip in face_chips}


def test_spec() -> None:
    assert SPEC.name == "utkface"
    assert (SPEC.crops.kind, SPEC.crops.aligned) == ("tight", True)
    assert SPEC.default_faces == "none"
    assert SPEC.ready_crop({}) == SPEC.crops
    assert SPEC.faces_for({"subset": "chips"}) == "none"
    assert SPEC.ready_crop({"subset": "photos"}).kind == "photo"
    assert SPEC.faces_for({"subset": "photos"}) == "detect"
    assert SPEC.faces_for({"subset": "All"}) == "detect"
    assert set(SPEC.options) == {"subset"}
