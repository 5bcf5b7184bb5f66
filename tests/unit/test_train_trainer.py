"""The training loop on real UTKFace chips: it overfits a handful (the whole backbone trains),
and a run interrupted after an epoch resumes to exactly the uninterrupted run's weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agebench.benchmarks.registry import get_benchmark
from agebench.benchmarks.spec import LoadOptions
from agebench.models.catalog import resolve_model
from agebench.training.backbone import load_backbone
from agebench.training.batches import augment
from agebench.training.crops import CropCache, CropSource, crop_cache
from agebench.training.losses import build_loss
from agebench.training.trainer import CHECKPOINT, EpochMetrics, Trainer, TrainOptions


@pytest.fixture(scope="module")
def chips(shared_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> CropCache:
    """8 real chips (ages 1 to 17) cut as eval cuts them for dlib-age-v1."""
    bench = get_benchmark("utkface")
    data = bench.load(LoadOptions(root=shared_faces))
    data = replace(data, records=data.records[:8])
    source = CropSource(bench, data, shared_faces, resolve_model("dlib-age-v1"))
    return crop_cache(source, root=tmp_path_factory.mktemp("crops"))


def _trainer(loss_name: str, checkpoints: Path | None = None, **options) -> Trainer:
    torch.manual_seed(0)  # the new head's initial weights
    backbone = load_backbone("dlib-age-v1")
    loss = build_loss(loss_name)
    settings = {"batch_size": 4, "seed": 0, "threads": 1, "weight_decay": 0.0, **options}
    return Trainer(
        backbone, loss.head(backbone.dim), loss, TrainOptions(**settings), checkpoints=checkpoints
    )


def test_the_whole_model_overfits_eight_chips(chips: CropCache):
    every = np.arange(8)
    trainer = _trainer("dex", epochs=15, lr=2e-3, augment=False, patience=100, batch_size=8)
    result = trainer.fit(chips.crops, chips.ages, every, every)
    print(f"overfit: MAE {result.start_val_mae:.2f} -> {result.best_val_mae:.2e}")
    assert result.start_val_mae > 10  # an untrained head: the mean of a flat softmax
    assert result.best_val_mae < 0.5 and result.best_val_mae < result.start_val_mae / 20
    assert [m.epoch for m in result.history] == list(range(1, 16))
    assert result.history[-1].train_loss < result.history[0].train_loss / 10
    assert all(m.images_per_second > 0 for m in result.history)


def test_a_frozen_backbone_trains_only_the_head(chips: CropCache):
    trainer = _trainer("dex", epochs=30, lr=1e-2, batch_size=8, patience=100, freeze_backbone=True)
    before = {k: v.clone() for k, v in trainer.backbone.state_dict().items()}
    every = np.arange(8)
    result = trainer.fit(chips.crops, chips.ages, every, every)
    assert result.best_val_mae < result.start_val_mae / 10
    after = trainer.backbone.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []


class Interrupted(Exception):
    pass


def test_resume_after_an_interrupt_gives_the_uninterrupted_result(chips: CropCache, tmp_path):
    """3 epochs with augmentation (the random states matter), interrupted after epoch 1."""
    train, val = np.arange(6), np.arange(6, 8)
    options = {"epochs": 3, "lr": 1e-3, "augment": True}
    whole = _trainer("mean-variance", tmp_path / "whole", **options)
    expected = whole.fit(chips.crops, chips.ages, train, val)

    def stop_after_first(metrics: EpochMetrics) -> None:
        if metrics.epoch == 1:
            raise Interrupted

    first = _trainer("mean-variance", tmp_path / "cut", **options)
    with pytest.raises(Interrupted):
        first.fit(chips.crops, chips.ages, train, val, on_epoch=stop_after_first)
    assert (tmp_path / "cut" / CHECKPOINT).is_file()
    resumed = _trainer("mean-variance", tmp_path / "cut", resume=True, **options)
    got = resumed.fit(chips.crops, chips.ages, train, val)
    assert got.resumed_from == 1 and expected.resumed_from == 0
    strip = [{**vars(m), "seconds": 0, "images_per_second": 0} for m in got.history]
    assert strip == [{**vars(m), "seconds": 0, "images_per_second": 0} for m in expected.history]
    assert got.best_val_mae == expected.best_val_mae
    for module in ("backbone", "head"):
        a = getattr(whole, module).state_dict()
        b = getattr(resumed, module).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), module


def test_augmentation_keeps_shape_and_range_and_follows_the_generator():
    pixels = torch.rand(4, 64, 64, 3) * 255
    a = augment(pixels, torch.Generator().manual_seed(1))
    b = augment(pixels, torch.Generator().manual_seed(1))
    c = augment(pixels, torch.Generator().manual_seed(2))
    assert a.shape == pixels.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 255
