"""Training folds: the test fold is never trained or validated on (by subject and by image),
validation is carved from the training folds, and the folds are the ones the benchmark deals
(its own protocol's or a generic one's), which eval reads too."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agebench.benchmarks.registry import get_benchmark
from agebench.benchmarks.spec import LoadOptions, Record, deal_folds
from agebench.core.errors import AgebenchError
from agebench.training.protocol import Fold, carve_validation, plan_folds
from tests.fixtures.tiny_models import REPO

SHARED_FGNET = Path(os.environ.get("AGEBENCH_TEST_FGNET") or REPO.parent / "shared" / "fgnet")


def _records(n: int, subjects: int | None) -> list[Record]:
    return [
        Record(
            image=f"img{i:03d}.jpg",
            age=float(i % 60),
            source="test",
            subject=None if subjects is None else f"s{i % subjects}",
        )
        for i in range(n)
    ]


def _check_isolated(records: list[Record], fold: Fold) -> None:
    """Train, val and test are disjoint by image id and by subject, and cover the records."""
    parts = [fold.train, fold.val, fold.test]
    images = [{records[i].image for i in part} for part in parts]
    assert not images[0] & images[2] and not images[1] & images[2] and not images[0] & images[1]
    subjects = [{records[i].subject for i in part} for part in parts]
    if None not in subjects[0] | subjects[1] | subjects[2]:
        assert not subjects[2] & (subjects[0] | subjects[1])
        assert not subjects[0] & subjects[1]
    assert sorted(np.concatenate(parts).tolist()) == sorted(set(np.concatenate(parts).tolist()))


def test_subject_kfold_folds_are_isolated_and_cover_every_record():
    records = deal_folds(_records(200, subjects=40), "kfold", 5, 3, bench="utkface")
    plan = plan_folds("utkface", records, protocol="kfold", seed=3)
    assert [f.name for f in plan] == ["0", "1", "2", "3", "4"]
    for fold in plan:
        _check_isolated(records, fold)
        assert len(fold.train) + len(fold.val) + len(fold.test) == 200
        assert 0.05 < len(fold.val) / (len(fold.train) + len(fold.val)) < 0.2
    tested = np.concatenate([f.test for f in plan])
    assert sorted(tested.tolist()) == list(range(200))  # every record is tested exactly once
    again = plan_folds("utkface", records, protocol="kfold", seed=3)
    assert all(np.array_equal(a.val, b.val) for a, b in zip(plan, again, strict=True))


def test_records_without_subjects_are_dealt_by_the_seed():
    records = _records(50, subjects=None)
    labels = [r.fold for r in deal_folds(records, "kfold", 5, 0, bench="utkface")]
    assert sorted(labels.count(str(k)) for k in range(5)) == [10] * 5
    assert labels != [r.fold for r in deal_folds(records, "kfold", 5, 1, bench="utkface")]
    train, val = carve_validation(records, np.arange(50), seed=0)
    assert len(val) == 5 and not set(train) & set(val)


def test_lopo_needs_subjects_and_only_and_usable_limit_the_plan():
    records = deal_folds(_records(30, subjects=6), "lopo", 5, 0, bench="utkface")
    plan = plan_folds(
        "utkface", records, protocol="lopo", usable=np.arange(1, 30), only=["s2", "s4"]
    )
    assert [f.name for f in plan] == ["s2", "s4"]
    for fold in plan:
        _check_isolated(records, fold)
        assert 0 not in np.concatenate([fold.train, fold.val, fold.test])
        assert {records[i].subject for i in fold.test} == {fold.name}
    with pytest.raises(AgebenchError, match="lopo needs a subject"):
        deal_folds(_records(10, None), "lopo", 5, 0, bench="utkface")
    with pytest.raises(AgebenchError, match="--fold s9"):
        plan_folds("utkface", records, protocol="lopo", only=["s9"])
    with pytest.raises(AgebenchError, match="some records have no fold"):
        plan_folds("utkface", _records(10, 2), protocol="all")


def test_without_a_protocol_one_model_on_everything_given():
    records = _records(40, subjects=8)
    (fold,) = plan_folds("utkface", records, protocol=None)
    assert fold.name is None and fold.suffix == "" and len(fold.test) == 0
    assert len(fold.train) + len(fold.val) == 40
    _check_isolated(records, fold)


def test_real_fgnet_uses_its_own_folds_and_never_shows_the_test_subjects():
    if not SHARED_FGNET.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the real FG-NET not found at {SHARED_FGNET}")
        pytest.skip(f"the real FG-NET not found at {SHARED_FGNET}")
    bench = get_benchmark("fgnet")
    data = bench.load(LoadOptions(root=SHARED_FGNET, protocol="kfold", folds=5, seed=0))
    records = data.records
    plan = plan_folds(bench.name, records, protocol="kfold", seed=0)
    assert len(plan) == 5
    for fold in plan:
        assert {records[i].fold for i in fold.test} == {fold.name}  # the loader's own folds
        _check_isolated(records, fold)
        test_subjects = {records[i].subject for i in fold.test}
        seen = {records[i].subject for i in np.concatenate([fold.train, fold.val])}
        assert test_subjects and not test_subjects & seen
    assert sum(len(f.test) for f in plan) == len(records) == 1002
