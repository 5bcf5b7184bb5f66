"""IMDB-WIKI loader on .mat files written as the authors publish them (scipy savemat)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.benchmarks.imdb_wiki import SPEC, datenum, dex_age, matlab_year
from agebench.benchmarks.spec import BenchmarkError, LabelProblem, LoadOptions, Record
from tests.fixtures.bench_layouts_b import WIKI_ENTRIES, make_imdb_wiki

FILTERED = [
    LabelProblem("wiki_crop/wiki.mat", None, f"filtered: 1 of 7 entries: {reason}")
    for reason in (
        "face_score below 1 (min_face_score)",
        "a second face detected (allow_second_face=false)",
        "no gender (require_gender=true)",
        "age outside 0..100 (min_age, max_age)",
    )
]


@pytest.fixture()
def wiki(tmp_path: Path) -> Path:
    make_imdb_wiki(tmp_path, omit=["48/10000548_1925-08-01_1964.jpg"])
    return tmp_path


def test_matlab_dates_follow_datevec() -> None:
    assert datenum(1981, 5, 5) == 723671  # wiki.mat's first entry
    assert matlab_year(1) == 0  # datenum 1 is 0000-01-01: Matlab has a year 0
    assert matlab_year(366) == 0  # year 0 is a leap year
    assert matlab_year(367) == 1
    assert matlab_year(0) == -1  # datevec(0) is -0001-12-31
    assert matlab_year(723671.75) == 1981


def test_age_is_the_year_of_the_day_difference() -> None:
    assert dex_age(2009, datenum(1981, 5, 5)) == 28
    assert dex_age(1964, datenum(1925, 8, 1)) == 38  # born after 1 July
    assert dex_age(2000, datenum(1990, 6, 30)) == 10
    # the rule's quirk: 3653 days (exactly ten years) is the last day of Matlab's year 9
    assert dex_age(2000, datenum(1990, 7, 1)) == 9


def test_crop_records_pass_the_usual_filters(wiki: Path) -> None:
    data = SPEC.load(LoadOptions(root=wiki))
    assert data.records == [
        Record(
            image="wiki_crop/17/10000217_1981-05-05_2009.jpg",
            age=28.0,
            source="wiki_crop/wiki.mat#0",
            subject="10000217",
            attributes={
                "dob": "1981-05-05",
                "photo_taken": "2009",
                "face_score": "4.3",
                "gender": "male",
                "name": "Sami Jauhojarvi",
            },
        ),
        Record(
            image="wiki_crop/48/10000548_1925-08-01_1964.jpg",
            age=38.0,
            source="wiki_crop/wiki.mat#1",
            subject="10000548",
            attributes={
                "dob": "1925-08-01",
                "photo_taken": "1964",
                "face_score": "2.5",
                "gender": "female",
                "name": "Ana Mara",
            },
        ),
    ]
    assert data.problems == [
        LabelProblem("wiki_crop/wiki.mat#6", None, "dob 0 is not a Matlab date number"),
        *FILTERED,
        LabelProblem(
            "wiki_crop/wiki.mat#1",
            None,
            "label for wiki_crop/48/10000548_1925-08-01_1964.jpg, but the image is missing",
        ),
    ]
    assert data.label_files == [wiki / "wiki_crop" / "wiki.mat"]


def test_filters_are_options(wiki: Path) -> None:
    kept = SPEC.load(
        LoadOptions(root=wiki, options={"allow_second_face": "true", "require_gender": "false"})
    )
    assert [(r.source, r.age, r.attributes.get("gender")) for r in kept.records] == [
        ("wiki_crop/wiki.mat#0", 28.0, "male"),
        ("wiki_crop/wiki.mat#1", 38.0, "female"),
        ("wiki_crop/wiki.mat#3", 31.0, "male"),
        ("wiki_crop/wiki.mat#4", 41.0, None),
    ]

    options = {
        "allow_second_face": "true",
        "require_gender": "false",
        "max_age": "30",
        "min_face_score": "3",
    }
    data = SPEC.load(LoadOptions(root=wiki, options=options))
    # Ana and the no-face entry score below 3; two-faces (31), no-gender (41) and the unborn
    # (-1) now pass their own filters but not the ages
    assert [r.source for r in data.records] == ["wiki_crop/wiki.mat#0"]
    reasons = [p.reason for p in data.problems if p.reason.startswith("filtered")]
    assert reasons == [
        "filtered: 2 of 7 entries: face_score below 3 (min_face_score)",
        "filtered: 3 of 7 entries: age outside 0..30 (min_age, max_age)",
    ]


def test_full_variant_reads_the_photos_with_0_based_boxes(tmp_path: Path) -> None:
    make_imdb_wiki(tmp_path, variant="full")
    data = SPEC.load(LoadOptions(root=tmp_path, options={"variant": "full"}))
    assert [(r.image, r.box) for r in data.records] == [
        ("wiki/17/10000217_1981-05-05_2009.jpg", (110.29, 110.29, 252.67, 252.67)),
        ("wiki/48/10000548_1925-08-01_1964.jpg", (19.0, 29.0, 120.0, 140.0)),
    ]
    assert SPEC.ready_crop({"variant": "full"}).kind == "photo"
    assert SPEC.ready_crop({}).kind == "margin"
    assert SPEC.faces_for({"variant": "full"}) == "detect"


def test_crop_variant_missing_points_at_the_full_photos(tmp_path: Path) -> None:
    make_imdb_wiki(tmp_path, variant="full")
    expected = r"\(expected imdb_crop/imdb\.mat or wiki_crop/wiki\.mat\); the original photos"
    with pytest.raises(BenchmarkError, match=expected + " are here: use --option variant=full"):
        SPEC.load(LoadOptions(root=tmp_path))


def test_imdb_subjects_are_the_person_ids_and_both_databases_need_a_choice(
    tmp_path: Path,
) -> None:
    entries = [
        {**WIKI_ENTRIES[0], "full_path": "01/nm0000001_rm124825600_1899-5-10_1968.jpg"},
        {**WIKI_ENTRIES[1], "full_path": "02/nm0000002_rm1_1925-8-1_1964.jpg"},
    ]
    make_imdb_wiki(tmp_path, entries, db="imdb")
    make_imdb_wiki(tmp_path)
    with pytest.raises(BenchmarkError, match="both IMDB and WIKI are here"):
        SPEC.load(LoadOptions(root=tmp_path))
    data = SPEC.load(LoadOptions(root=tmp_path, options={"db": "imdb"}))
    assert [(r.image, r.subject, r.source) for r in data.records] == [
        (
            "imdb_crop/01/nm0000001_rm124825600_1899-5-10_1968.jpg",
            "nm0000001",
            "imdb_crop/imdb.mat#0",
        ),
        ("imdb_crop/02/nm0000002_rm1_1925-8-1_1964.jpg", "nm0000002", "imdb_crop/imdb.mat#1"),
    ]
    assert data.problems == []


def test_labels_option_reads_another_mat(wiki: Path) -> None:
    (wiki / "wiki_crop" / "wiki.mat").rename(wiki / "wiki_crop" / "subset.mat")
    data = SPEC.load(LoadOptions(root=wiki, labels=Path("wiki_crop/subset.mat")))
    assert [r.source for r in data.records] == ["wiki_crop/subset.mat#0", "wiki_crop/subset.mat#1"]
    assert data.records[0].image == "wiki_crop/17/10000217_1981-05-05_2009.jpg"


def test_nothing_there_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="IMDB-WIKI metadata not found"):
        SPEC.load(LoadOptions(root=tmp_path))


def test_a_mat_without_the_fields_is_fatal(tmp_path: Path) -> None:
    from scipy.io import savemat

    (tmp_path / "wiki_crop").mkdir()
    savemat(tmp_path / "wiki_crop" / "wiki.mat", {"wiki": {"dob": [[1.0]]}})
    with pytest.raises(BenchmarkError, match=r"missing field.*photo_taken"):
        SPEC.load(LoadOptions(root=tmp_path))


@pytest.mark.parametrize(
    ("key", "value"),
    [("min_face_score", "high"), ("allow_second_face", "maybe"), ("db", "lfw"), ("variant", "x")],
)
def test_bad_options_are_fatal(wiki: Path, key: str, value: str) -> None:
    with pytest.raises(BenchmarkError, match=f"{key}={value}"):
        SPEC.load(LoadOptions(root=wiki, options={key: value}))
