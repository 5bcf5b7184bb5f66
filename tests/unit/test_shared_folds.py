"""Folds shared by eval and train on every benchmark: the generic ``kfold``/``lopo`` of
``agebench.benchmarks.spec`` on a benchmark without folds of its own (the real UTKFace chips),
FG-NET's own, and ``agebench eval`` reading exactly the folds ``agebench train`` trains by."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from agebench.benchmarks.registry import bench_infos, get_benchmark
from agebench.benchmarks.spec import BenchmarkError, LoadOptions
from agebench.cli import main
from agebench.runner.evaluate import EvalConfig, EvalRun
from agebench.training.protocol import plan_folds
from agebench.training.run import TrainConfig, training_data
from tests.fixtures.tiny_models import REPO

SHARED = REPO.parent / "shared"
CHIPS = Path(os.environ.get("AGEBENCH_TEST_CHIPS") or SHARED / "faces" / "utkface-48")
FGNET = Path(os.environ.get("AGEBENCH_TEST_FGNET") or SHARED / "fgnet")


def _need(path: Path) -> Path:
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data not found at {path}: CI must run the real-data tests")
        pytest.skip(f"real data not found at {path}")
    return path


def test_every_benchmark_offers_the_generic_protocols_after_its_own():
    for info in bench_infos():
        assert {"kfold", "lopo"} <= set(info.protocols), info.name
        assert info.protocols[0] == info.spec.default_protocol  # its own default stays first
    fgnet = get_benchmark("fgnet")
    assert fgnet.all_protocols["kfold"] == fgnet.protocols["kfold"]  # its own wins


def test_generic_kfold_on_the_utkface_chips_is_seeded_and_lopo_needs_subjects():
    root = _need(CHIPS)
    bench = get_benchmark("utkface")
    load = lambda **kw: bench.load(LoadOptions(root=root, **kw))  # noqa: E731
    data = load(protocol="kfold", folds=4, seed=2)
    assert data.protocol == "kfold" and len(data.records) == 48
    folds = [r.fold for r in data.records]
    assert sorted(folds.count(str(k)) for k in range(4)) == [12] * 4  # record by record
    assert folds == [r.fold for r in load(protocol="kfold", folds=4, seed=2).records]
    assert folds != [r.fold for r in load(protocol="kfold", folds=4, seed=3).records]
    assert all(r.fold is None for r in load().records)  # its own protocol: no folds
    with pytest.raises(BenchmarkError, match="lopo needs a subject for every record"):
        load(protocol="lopo")
    with pytest.raises(BenchmarkError, match=r"unknown protocol 'holdout'.*kfold, lopo"):
        load(protocol="holdout")


@pytest.mark.parametrize(
    ("bench", "root", "faces"), [("utkface", CHIPS, None), ("fgnet", FGNET, None)]
)
def test_eval_and_train_see_the_same_fold_for_every_record(
    bench: str, root: Path, faces: str | None
):
    root = _need(root)
    evaluated = EvalRun(
        EvalConfig(bench=bench, root=root, protocol="kfold", folds=3, seed=5, faces=faces)
    ).data.records
    config = TrainConfig(
        bench=bench, root=root, backbone="dlib-age-v1", loss="dex", name="x", protocol="kfold",
        folds=3, seed=5,
    )  # fmt: skip
    trained = training_data(config).records
    assert [(r.image, r.fold) for r in evaluated] == [(r.image, r.fold) for r in trained]
    plan = plan_folds(bench, trained, protocol="kfold", seed=5)
    assert [f.name for f in plan] == ["0", "1", "2"]
    for fold in plan:  # each model's test part is exactly the records eval gives it
        assert {trained[i].image for i in fold.test} == {
            r.image for r in evaluated if r.fold == fold.name
        }


def test_benches_list_and_info_show_the_generic_protocols():
    runner = CliRunner()
    listed = runner.invoke(main, ["benches", "list", "--wide"], terminal_width=400)
    assert listed.exit_code == 0, listed.output
    utk = next(line for line in listed.output.splitlines() if line.strip().startswith("utkface"))
    assert "all, kfold, lopo" in utk
    shown = runner.invoke(main, ["benches", "info", "utkface"], terminal_width=400)
    assert shown.exit_code == 0, shown.output
    assert "kfold: generic k folds" in shown.output and "lopo: generic leave one" in shown.output
