"""The training crop cache holds exactly eval's crops, is built once, and lists what it lacks."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agebench.benchmarks.registry import get_benchmark
from agebench.benchmarks.spec import LoadOptions
from agebench.core.config import ExecutionConfig
from agebench.models.catalog import resolve_model
from agebench.runner.config import DetectConfig
from agebench.runner.stack import PredictStack
from agebench.training import crops as crops_module
from agebench.training.crops import CropSource, crop_cache
from tests.fixtures.tiny_models import REPO

SHARED_FGNET = Path(os.environ.get("AGEBENCH_TEST_FGNET") or REPO.parent / "shared" / "fgnet")
EXECUTION = ExecutionConfig(device="cpu", backend="onnxruntime", tuning="manifest", workers=2)


@pytest.fixture(scope="module")
def fgnet_root() -> Path:
    if not SHARED_FGNET.is_dir():
        message = f"the real FG-NET not found at {SHARED_FGNET}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the real-data tests")  # never skip them there
        pytest.skip(message)
    return SHARED_FGNET


def _source(bench_name: str, root: Path, every: int = 1, **options) -> CropSource:
    bench = get_benchmark(bench_name)
    data = bench.load(LoadOptions(root=root, **options))
    data = replace(data, records=data.records[::every][:20])
    return CropSource(bench, data, root, resolve_model("dlib-age-v1"))


def _eval_crops(source: CropSource) -> list[np.ndarray | None]:
    """What eval's preparer gives each record, one image at a time (eval's settings)."""
    stack = PredictStack.build(
        source.spec,
        source.faces_mode,
        EXECUTION,
        detect=DetectConfig(min_face_size=20, max_faces=1),
        ready_crop=source.bench.ready_crop({}),
        source=source.bench.name,
    )
    out = []
    for record in source.data.records:
        item = stack.preparer(source.root / record.image, Path(record.image), record.box)
        out.append(item.crops[0] if item.status == "ok" and item.crops is not None else None)
    return out


def _check_and_reuse(source: CropSource, root: Path, monkeypatch) -> crops_module.CropCache:
    cache = crop_cache(source, execution=EXECUTION, root=root)
    assert cache.built and cache.crops.shape == (20, 64, 64, 3) and cache.crops.dtype == np.uint8
    assert [r["image"] for r in cache.records] == [r.image for r in source.data.records]
    assert [r["age"] for r in cache.records] == [r.age for r in source.data.records]
    for i, expected in enumerate(_eval_crops(source)):
        if expected is None:
            assert cache.records[i]["status"] != "ok" and not cache.crops[i].any()
        else:
            assert cache.records[i]["status"] == "ok"
            assert np.array_equal(cache.crops[i], expected), cache.records[i]["image"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(crops_module.PredictStack, "build", no_rebuild)
    again = crop_cache(source, execution=EXECUTION, root=root)
    assert not again.built and again.path == cache.path
    assert np.array_equal(np.asarray(again.crops), np.asarray(cache.crops))
    assert again.records == cache.records
    assert sorted(p.name for p in root.iterdir()) == [cache.path.name]  # no temporary left
    return cache


@pytest.mark.slow
def test_fgnet_crops_are_evals_detected_crops_and_built_once(
    fgnet_root: Path, tmp_path: Path, monkeypatch
):
    """20 real FG-NET photos (every 50th), faces detected as eval detects them."""
    source = _source("fgnet", fgnet_root, every=50, protocol="lopo")
    assert source.faces_mode == "detect"
    cache = _check_and_reuse(source, tmp_path, monkeypatch)
    assert len(cache.usable) >= 18  # FG-NET's scans: a face is found in nearly every one
    assert {r["subject"] for r in cache.records} == {r.subject for r in source.data.records}
    assert all(len(r["sha256"]) == 64 for r in cache.records if r["status"] == "ok")
    print(f"fgnet: 20 crops built in {cache.build_seconds:.1f} s")


def test_utkface_chips_are_evals_ready_crops(face_chips, shared_faces, tmp_path, monkeypatch):
    source = _source("utkface", shared_faces, every=2)
    assert source.faces_mode == "none"
    cache = _check_and_reuse(source, tmp_path, monkeypatch)
    assert len(cache.usable) == 20 and cache.missing == []


def test_the_key_follows_the_data_and_the_crop(shared_faces):
    source = _source("utkface", shared_faces)
    assert source.key() == _source("utkface", shared_faces).key()
    fewer = replace(source, data=replace(source.data, records=source.data.records[:19]))
    assert fewer.key() != source.key()
    assert replace(source, faces="detect").key() != source.key()
    other_crop = replace(source.spec, crop=replace(source.spec.crop, padding=0.3))
    assert replace(source, spec=other_crop).key() != source.key()


def test_records_without_a_face_are_listed(shared_faces, tmp_path: Path):
    """A missing image keeps its row, zero pixels and its reason."""
    source = _source("utkface", shared_faces)
    gone = replace(source.data.records[3], image="gone/1_0_0_x.jpg.chip.jpg")
    records = [*source.data.records[:3], gone, *source.data.records[4:]]
    source = replace(source, data=replace(source.data, records=records))
    cache = crop_cache(source, execution=EXECUTION, root=tmp_path)
    assert [r["image"] for r in cache.missing] == ["gone/1_0_0_x.jpg.chip.jpg"]
    assert cache.missing[0]["status"] == "missing" and cache.missing[0]["error"]
    assert 3 not in cache.usable and not cache.crops[3].any() and len(cache.usable) == 19
