"""facebase loader on database JSONs laid out as Paplham et al. publish them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agebench.benchmarks.facebase import SPEC
from agebench.benchmarks.spec import BenchmarkError, LabelProblem, LoadOptions, Record
from tests.fixtures.bench_layouts_b import CLAP2016_ENTRIES, make_facebase

DB = "databases/AgeDB_aligned.json"


@pytest.fixture()
def faces(tmp_path: Path) -> Path:
    make_facebase(tmp_path, omit=["AgeDB/2_Jean_61_m.jpg"])
    return tmp_path


def test_split0_test_is_folders_8_and_9(faces: Path) -> None:
    data = SPEC.load(LoadOptions(root=faces, labels=Path(DB)))
    assert data.records == [
        Record(
            image="AgeDB/0_MariaCallas_35_f.jpg",
            age=35.0,
            source=f"{DB}#0",
            subject="101",
            fold="8",
            split="test",
            box=(-70.0, -96.0, 371.0, 345.0),  # hull of the corners, minus 1 (1-based)
            attributes={
                "gender": "female",
                "database": "AgeDB",
                "alignment_source": "in the wild",
                "aligned_bbox": "-57,-95,372,-83,360,346,-69,334",
            },
        ),
        Record(
            image="AgeDB/1_MariaCallas_40_f.jpg",
            age=40.0,
            source=f"{DB}#1",
            subject="101",
            fold="8",
            split="test",
            attributes={
                "gender": "female",
                "database": "AgeDB",
                "alignment_source": "file not found",
            },
        ),
        Record(
            image="AgeDB/2_Jean_61_m.jpg",
            age=61.0,
            source=f"{DB}#2",
            subject="7",
            fold="9",
            split="test",
            box=(-14.0, 68.0, 568.0, 651.0),
            attributes={
                "gender": "male",
                "database": "AgeDB",
                "alignment_source": "in the wild",
                "aligned_bbox": "21,69,569,103,535,652,-13,617",
            },
        ),
    ]
    assert data.problems == [
        LabelProblem(f"{DB}#4", None, "no age for AgeDB/4_Nobody_-1_m.jpg (age is -1)"),
        LabelProblem(f"{DB}#2", None, "label for AgeDB/2_Jean_61_m.jpg, but the image is missing"),
    ]
    assert data.label_files == [faces / DB]


def test_other_splits_and_protocols_pick_other_folders(faces: Path) -> None:
    train = SPEC.load(LoadOptions(root=faces, labels=Path(DB), protocol="split1", split="test"))
    assert [(r.source, r.box, r.attributes.get("gender")) for r in train.records] == [
        (f"{DB}#3", (0.0, 0.0, 10.0, 10.0), None)  # folder 0; gender U is left out
    ]
    assert SPEC.load(LoadOptions(root=faces, labels=Path(DB), split="val")).records == []
    everything = SPEC.load(LoadOptions(root=faces, labels=Path(DB), protocol="all"))
    assert [(r.source, r.fold, r.split) for r in everything.records] == [
        (f"{DB}#0", "8", None),
        (f"{DB}#1", "8", None),
        (f"{DB}#2", "9", None),
        (f"{DB}#3", "0", None),
    ]


def test_clap2016_keeps_its_own_split_and_apparent_age(tmp_path: Path) -> None:
    make_facebase(tmp_path, CLAP2016_ENTRIES, file="CLAP2016.json")
    test = SPEC.load(LoadOptions(root=tmp_path, labels=Path("CLAP2016.json"), protocol="split3"))
    assert test.records == [
        Record(
            image="ChaLearn2016/test/000021.jpg",
            age=1.0,
            source="CLAP2016.json#2",
            targets={"apparent_age": 1.0},
            age_std=0.0,
            fold="2",
            split="test",
            attributes={"database": "ChaLearn2016"},
        )
    ]
    train = SPEC.load(LoadOptions(root=tmp_path, labels=Path("CLAP2016.json"), split="train"))
    assert [(r.image, r.age, r.age_std) for r in train.records] == [
        ("ChaLearn2016/train/003856.jpg", 35.0, 4.60901893634)
    ]


def test_fg_net_folders_are_subjects_so_only_protocol_all(tmp_path: Path) -> None:
    entries = [
        {"img_path": "FG-NET/images/009A16b.jpg", "id_num": 9, "age": 16,
         "database": "FG-NET", "folder": 9, "aligned_bbox": [21, 69, 569, 103, 535, 652, -13, 617]},
        {"img_path": "FG-NET/images/034A25.JPG", "id_num": 34, "age": 25,
         "database": "FG-NET", "folder": 34, "aligned_bbox": []},
    ]  # fmt: skip
    make_facebase(tmp_path, entries, file="FG-Net_aligned.json")
    # no --protocol: FG-NET can only be scored with 'all', so that is what it gets
    default = SPEC.load(LoadOptions(root=tmp_path, labels=Path("FG-Net_aligned.json")))
    assert (default.protocol, default.split) == ("all", None)
    assert [(r.subject, r.fold) for r in default.records] == [("9", "9"), ("34", "34")]
    data = SPEC.load(LoadOptions(root=tmp_path, labels=Path("FG-Net_aligned.json"), protocol="all"))
    assert [(r.subject, r.fold) for r in data.records] == [("9", "9"), ("34", "34")]
    # a split protocol asked for explicitly is still refused, with the reason
    with pytest.raises(BenchmarkError, match=r"leave-one-person-out.*--protocol all"):
        SPEC.load(LoadOptions(root=tmp_path, labels=Path("FG-Net_aligned.json"), protocol="split0"))


def test_bad_entries_are_problems_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "db.json").write_text(
        json.dumps(
            [
                "not an entry",
                {"img_path": "a.jpg", "age": 30, "folder": "eight"},
                {"img_path": 5, "age": 30, "folder": 8},
                {"img_path": "b.jpg", "age": float("nan"), "folder": 8},  # written as NaN
            ]
        )
    )
    data = SPEC.load(LoadOptions(root=tmp_path, labels=Path("db.json")))
    assert data.records == []
    assert data.problems == [
        LabelProblem("db.json#0", None, "entry is a str, not an object"),
        LabelProblem("db.json#1", None, "folder 'eight' is not a number"),
        LabelProblem("db.json#2", None, "img_path 5 is not a path"),
        LabelProblem("db.json#3", None, "no age for b.jpg (age is nan)"),
    ]


def test_box_problems_keep_the_record(tmp_path: Path) -> None:
    entry = {"img_path": "b.jpg", "age": 30, "folder": 8, "aligned_bbox": [1, 2, 3]}
    make_facebase(tmp_path, [entry], file="db.json")
    data = SPEC.load(LoadOptions(root=tmp_path, labels=Path("db.json")))
    assert [(r.image, r.box) for r in data.records] == [("b.jpg", None)]
    assert data.problems == [
        LabelProblem(
            "db.json#0", None, "aligned_bbox [1, 2, 3] is not 8 numbers; record kept without a box"
        )
    ]


def test_labels_are_required_and_must_be_a_list(faces: Path) -> None:
    with pytest.raises(BenchmarkError, match=f"--labels is required.*found: {DB}"):
        SPEC.load(LoadOptions(root=faces))
    (faces / "dict.json").write_text('{"trn": []}')
    with pytest.raises(BenchmarkError, match="expected a JSON list of entries"):
        SPEC.load(LoadOptions(root=faces, labels=Path("dict.json")))
    (faces / "broken.json").write_text("[{")
    with pytest.raises(BenchmarkError, match="not a JSON database"):
        SPEC.load(LoadOptions(root=faces, labels=Path("broken.json")))


def test_protocol_all_takes_no_split(faces: Path) -> None:
    with pytest.raises(BenchmarkError, match="omit --split"):
        SPEC.load(LoadOptions(root=faces, labels=Path(DB), protocol="all", split="test"))


def test_spec_lists_the_papers_five_splits() -> None:
    assert list(SPEC.protocols) == ["split0", "split1", "split2", "split3", "split4", "all"]
    assert "train [0, 1, 2, 3, 4, 5], val [6, 7], test [8, 9]" in SPEC.protocols["split0"]
    assert SPEC.splits == ("test", "val", "train")
    assert SPEC.default_faces == "box"
