"""A training run owns ``reports/train/NAME/``: a second concurrent run of that name is refused
naming the first, a rerun without --resume is refused, and --resume with other settings names
what differs. Each refusal comes before any data is read (the --root here does not exist)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agebench.core.errors import AgebenchError
from agebench.runner.ownership import FolderBusyError, IdentityMismatchError, owned_folder
from agebench.training.run import TrainConfig, TrainRun


def _config(tmp_path: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        bench="fgnet",
        root=tmp_path / "no-such-root",
        backbone="dlib-age-v1",
        loss="dex",
        name="tiny",
        protocol="kfold",
        folds=3,
        epochs=1,
        out_root=tmp_path / "reports",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_second_concurrent_run_of_the_name_is_refused_naming_the_first(tmp_path: Path):
    config = _config(tmp_path)
    busy = pytest.raises(FolderBusyError, match=r"in use by agebench run pid \d+")
    with owned_folder(config.out), busy:  # the first run holds the folder
        TrainRun(config).run()


def test_a_rerun_needs_resume_and_resume_needs_the_same_settings(tmp_path: Path):
    config = _config(tmp_path)
    with pytest.raises(AgebenchError, match="benchmark root not found"):
        TrainRun(config).run()  # claims the folder (run.json), then fails on the data
    assert (config.out / "run.json").is_file()
    with pytest.raises(AgebenchError, match="--resume continues it"):
        TrainRun(config).run()
    other = _config(tmp_path, resume=True, epochs=4, seed=2)
    with pytest.raises(IdentityMismatchError) as refused:
        TrainRun(other).run()
    assert "config.epochs: 1 there, 4 here" in str(refused.value)
    assert "config.seed: 0 there, 2 here" in str(refused.value)
    with pytest.raises(AgebenchError, match="benchmark root not found"):
        TrainRun(replace(config, resume=True)).run()  # the same settings: resumed
