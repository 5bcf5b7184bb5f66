"""Every registered benchmark, under every protocol and split its spec declares, loads a tree in
its published layout (``tests/fixtures/bench_trees.py``).

The parameters are read from the registry when the tests are collected, so a newly registered
benchmark is tested here without a line added, and fails until it has a tree.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agebench.benchmarks.registry import benchmarks, get_benchmark
from agebench.benchmarks.spec import BenchmarkSpec, Record
from tests.fixtures.bench_trees import TREES, BenchTree

NAMES = benchmarks().names()
#: the plausible span of a human age in years, for every age-like target
AGE_SPAN = (0.0, 120.0)


def _loads(name: str) -> list[tuple[str, str, str | None]]:
    """(benchmark, protocol, split) for every protocol and split the spec declares."""
    spec = get_benchmark(name)
    return [
        (name, protocol, split)
        for protocol in spec.protocols
        for split in (
            [None] if protocol in spec.unsplit_protocols or not spec.splits else spec.splits
        )
    ]


LOADS = [load for name in NAMES for load in _loads(name)]


def _target(record: Record, target: str) -> object:
    if target == "age":
        return record.age
    if target == "age_group":
        return record.age_group
    return record.targets.get(target)


def _check_targets(spec: BenchmarkSpec, record: Record) -> None:
    """The headline target (the first) is on every record; the others (APPA-REAL's real age
    beside the apparent one, FaceBase's apparent age for ChaLearn only) where the data has
    them, and every one is in range."""
    headline = spec.targets[0]
    assert _target(record, headline) is not None, f"{record.source}: no {headline}"
    for target in spec.targets:
        value = _target(record, target)
        if value is None:
            continue
        if target == "age_group":
            assert value in spec.groups, f"{record.source}: {value} is not one of {spec.groups}"
            continue
        assert isinstance(value, float) and math.isfinite(value), f"{record.source}: {value!r}"
        assert AGE_SPAN[0] <= value <= AGE_SPAN[1], f"{record.source}: {target} {value}"


def _tree(name: str) -> BenchTree:
    if name not in TREES:
        pytest.fail(f"benchmark {name!r} has no tree in tests/fixtures/bench_trees.py")
    return TREES[name]


def test_every_registered_benchmark_has_a_tree():
    """A benchmark registered without a fixture tree fails here (and a tree for a benchmark
    that is gone is dead code)."""
    assert set(TREES) == set(NAMES)


@pytest.mark.parametrize(("name", "protocol", "split"), LOADS)
def test_every_protocol_and_split_loads_its_tree(
    name: str, protocol: str, split: str | None, tmp_path: Path
):
    spec, tree = get_benchmark(name), _tree(name)
    tree.build(tmp_path)
    data = spec.load(tree.load_options(tmp_path, protocol, split))

    assert data.records, "the tree has a record in every split"
    assert data.problems == [], [str(p) for p in data.problems]
    assert (data.protocol, data.split) == (protocol, split)
    # the same tree gives the same records in the same order (records are an eval's identity)
    assert spec.load(tree.load_options(tmp_path, protocol, split)).records == data.records
    for path in data.label_files:
        assert Path(path).is_file(), path
    for record in data.records:
        assert not Path(record.image).is_absolute() and "\\" not in record.image, record.image
        assert (tmp_path / record.image).is_file(), record.image
        assert record.split == data.split, record
        _check_targets(spec, record)
        if record.age_std is not None:
            assert math.isfinite(record.age_std) and record.age_std >= 0, record
        for field in tree.carries:
            assert getattr(record, field), f"{record.source}: no {field}"


@pytest.mark.parametrize("name", NAMES)
def test_no_protocol_or_split_loads_the_defaults(name: str, tmp_path: Path):
    """What ``agebench eval`` without --protocol and --split reads."""
    spec, tree = get_benchmark(name), _tree(name)
    tree.build(tmp_path)
    data = spec.load(tree.load_options(tmp_path, None, None))
    assert data.records
    assert (data.protocol, data.split) == (spec.default_protocol, spec.default_split)
