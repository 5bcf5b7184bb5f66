"""Adience loader on a tree laid out as published: five tab-separated folds, aligned/, faces/."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from agebench.benchmarks.adience import GROUPS, SPEC, AgeLabelError, age_group
from agebench.benchmarks.spec import BenchmarkError, LoadOptions, Record
from tests.fixtures.bench_layouts import AdienceRow, adience_image, make_adience

A = "30601258@N03"
B = "7153718@N04"
C = "113445054@N07"
D = "10044155@N06"
E = "64504106@N06"
NO_IMAGE = AdienceRow(D, "9457330069_4c0e9fb8d0_o.jpg", 1, "(0, 2)", "f")
FOLDS: list[list[AdienceRow | str]] = [
    [
        AdienceRow(A, "10399646885_67c7d20df9_o.jpg", 1, "(25, 32)", "f"),  # line 2
        AdienceRow(A, "10424815813_e94629b1ec_o.jpg", 2, "(38, 42)", "m"),  # line 3
        AdienceRow(A, "10437979845_5985be4b26_o.jpg", 1, "None", "u"),  # line 4
    ],
    [
        AdienceRow(B, "11598013005_240a6b9ec6_o.jpg", 3, "35", "f"),  # line 2: tie
        AdienceRow(B, "11598166203_d4dd2c0b2c_o.jpg", 4, "(8, 23)", ""),  # line 3: two groups
        AdienceRow(B, "11597890355_e3f8e4a2f1_o.jpg", 5, "13", "u"),  # line 4
    ],
    [
        AdienceRow(C, "11763777465_11d01c34ce_o.jpg", 1, "(60, 100)", "m"),  # line 2
        f"{C}\t11763777466_aa_o.jpg\t2",  # line 3: 3 fields
        AdienceRow(C, "11763777467_bb_o.jpg", 3, "(4, 6)", "x"),  # line 4: odd gender
    ],
    [NO_IMAGE],  # line 2: its aligned image is missing
    [
        AdienceRow(E, "12089485665_0c4b8e3d6b_o.jpg", 2, "(48, 53)", "m"),  # line 2
        AdienceRow(E, "12089485665_0c4b8e3d6b_o.jpg", 2, "(48, 53)", "m"),  # line 3: repeat
    ],
]
MISSING = adience_image(NO_IMAGE, "aligned")
STRAY = f"aligned/{E}/landmark_aligned_face.9.1_o.jpg"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    make_adience(tmp_path, FOLDS, images={STRAY: None}, missing={MISSING})
    return tmp_path


def test_records_follow_the_folds(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root))
    assert [(r.fold, r.age_group, r.attributes.get("gender")) for r in data.records] == [
        ("0", (25, 32), "female"),
        ("0", (38, 43), "male"),
        ("1", (8, 12), "unknown"),
        ("2", (60, 100), "male"),
        ("2", (4, 6), None),
        ("3", (0, 2), "female"),
        ("4", (48, 53), "male"),
    ]
    assert data.records[1] == Record(
        image=f"aligned/{A}/landmark_aligned_face.2.10424815813_e94629b1ec_o.jpg",
        age=None,
        source="fold_0_data.txt:3",
        age_group=(38.0, 43.0),
        subject=A,
        fold="0",
        attributes={"age_label": "(38, 42)", "gender": "male"},
    )
    assert data.records[2] == Record(
        image=f"aligned/{B}/landmark_aligned_face.5.11597890355_e3f8e4a2f1_o.jpg",
        age=None,
        source="fold_1_data.txt:4",
        age_group=(8.0, 12.0),
        subject=B,
        fold="1",
        attributes={"age_label": "13", "gender": "unknown"},
    )
    assert all(r.box is None and r.age is None for r in data.records)
    assert data.label_files == [root / f"fold_{k}_data.txt" for k in range(5)]


def test_problems(root: Path) -> None:
    problems = SPEC.load(LoadOptions(root=root)).problems
    expected = [
        ("fold_0_data.txt", 4, "age is None"),
        ("fold_1_data.txt", 2, "age '35' is equally near groups 25-32 and 38-43"),
        ("fold_1_data.txt", 3, "age '(8, 23)' spans groups 8-12 and 15-20"),
        ("fold_2_data.txt", 3, "3 fields, header has 12"),
        ("fold_2_data.txt", 4, "gender 'x' is not m, f or u"),
        ("fold_4_data.txt", 3, "repeats fold_4_data.txt:2"),
        ("fold_3_data.txt", 2, f"label for {MISSING}, but the image is missing"),
        (STRAY, None, "image has no label"),
    ]
    assert len(problems) == len(expected)
    for problem, (file, line, reason) in zip(problems, expected, strict=True):
        assert (problem.file, problem.line) == (file, line)
        assert reason in problem.reason


def test_faces_folder(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root, options={"images": "faces"}))
    assert data.records[0].image == (
        f"faces/{A}/coarse_tilt_aligned_face.1.10399646885_67c7d20df9_o.jpg"
    )
    assert not [p for p in data.problems if p.line is None or "missing" in p.reason]
    shutil.rmtree(root / "aligned")
    auto = SPEC.load(LoadOptions(root=root))
    assert [r.image for r in auto.records] == [r.image for r in data.records]
    with pytest.raises(BenchmarkError, match="Adience aligned image folder not found"):
        SPEC.load(LoadOptions(root=root, options={"images": "aligned"}))
    shutil.rmtree(root / "faces")
    with pytest.raises(BenchmarkError, match=r"no Adience image folder \(aligned/ or faces/\)"):
        SPEC.load(LoadOptions(root=root))


def test_irregular_drop_keeps_only_the_published_groups(root: Path) -> None:
    data = SPEC.load(LoadOptions(root=root, options={"irregular": "drop"}))
    assert [r.attributes["age_label"] for r in data.records] == [
        "(25, 32)",
        "(60, 100)",
        "(4, 6)",
        "(0, 2)",
        "(48, 53)",
    ]
    reasons = [p.reason for p in data.problems if p.file == "fold_0_data.txt"]
    assert "age '(38, 42)' is not one of the 8 groups (--option irregular=drop)" in reasons


@pytest.mark.parametrize(
    ("label", "group"),
    [
        ("(0, 2)", (0, 2)),
        ("(8, 12)", (8, 12)),
        ("(60, 100)", (60, 100)),
        ("(38, 42)", (38, 43)),
        ("(27, 32)", (25, 32)),
        ("2", (0, 2)),
        ("13", (8, 12)),
        ("22", (15, 20)),
        ("23", (25, 32)),
        ("29", (25, 32)),
        ("32", (25, 32)),
        ("34", (25, 32)),
        ("36", (38, 43)),
        ("42", (38, 43)),
        ("45", (38, 43)),
        ("46", (48, 53)),
        ("55", (48, 53)),
        ("56", (48, 53)),
        ("57", (60, 100)),
        ("58", (60, 100)),
    ],
)
def test_age_group_mapping(label: str, group: tuple[float, float]) -> None:
    assert age_group(label) == group


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("None", "age is None"),
        ("", "age is None"),
        ("3", "equally near groups 0-2 and 4-6"),
        ("35", "equally near groups 25-32 and 38-43"),
        ("(8, 23)", "spans groups 8-12 and 15-20"),
        ("(38, 48)", "spans groups 38-43 and 48-53"),
        ("(30, 20)", "low above high"),
        ("adult", "neither '(low, high)' nor a number"),
    ],
)
def test_age_labels_that_map_to_no_group(label: str, reason: str) -> None:
    with pytest.raises(AgeLabelError, match=re.escape(reason)):
        age_group(label)


def test_missing_fold_is_fatal(root: Path) -> None:
    (root / "fold_4_data.txt").unlink()
    with pytest.raises(BenchmarkError, match=r"fold_4_data\.txt: Adience fold 4 labels not found"):
        SPEC.load(LoadOptions(root=root))


def test_spec() -> None:
    assert SPEC.name == "adience"
    assert SPEC.groups == GROUPS
    assert len(SPEC.groups) == 8
    assert SPEC.default_protocol == "5fold"
    assert SPEC.default_faces == "detect"
    assert SPEC.faces_for({"images": "faces"}) == "detect"
    assert set(SPEC.options) == {"images", "irregular"}
