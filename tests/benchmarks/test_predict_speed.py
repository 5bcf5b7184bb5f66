"""Speed of the predict path, as pytest-benchmark groups whose members are compared as ratios.

CI runs these once as plain tests (``--benchmark-disable`` in pyproject); to measure:
``.venv/bin/python -m pytest tests/benchmarks --benchmark-enable --benchmark-group-by=group``.
No test here asserts a time: these machines are too noisy for that.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agebench.core.config import ExecutionConfig
from agebench.faces.align import crop_matrix, warp
from agebench.models.catalog import ModelCatalog
from agebench.models.predictor import Predictor
from agebench.runner.config import PredictConfig
from agebench.runner.imageio import decode_image
from agebench.runner.pipeline import run_predict


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(ModelCatalog().get("dlib-age-v1"), device="cpu")


@pytest.fixture(scope="module")
def crops(face_chips: list[Path]) -> np.ndarray:
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in face_chips]
    small = [cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in images]
    return np.stack((small * 2)[:64])


@pytest.mark.benchmark(group="model: 64 faces")
def test_batched_inference(benchmark, predictor: Predictor, crops: np.ndarray):
    result = benchmark(predictor.predict, crops)
    assert result.fields["age"].shape == (64,)


@pytest.mark.benchmark(group="model: 64 faces")
def test_per_face_inference_baseline(benchmark, predictor: Predictor, crops: np.ndarray):
    """The per-face call most wrappers make: what batching is measured against."""
    ages = benchmark(lambda: [predictor.predict(c[None]).fields["age"][0] for c in crops])
    assert len(ages) == 64


@pytest.mark.benchmark(group="crop: one face")
def test_align_crop(benchmark, face_chips: list[Path], predictor: Predictor):
    rgb = decode_image(face_chips[0]).rgb
    landmarks = np.array([[70.0, 90], [130, 90], [100, 120], [75, 150], [125, 150]])
    spec = predictor.spec

    def cut() -> np.ndarray:
        m = crop_matrix(
            spec.crop,
            (64, 64),
            image_size=rgb.shape[:2],
            box=(40, 40, 160, 180),
            landmarks=landmarks,
        )
        return warp(rgb, m, (64, 64))

    assert benchmark(cut).shape == (64, 64, 3)


@pytest.mark.benchmark(group="decode: one 200x200 chip")
def test_decode_full(benchmark, face_chips: list[Path]):
    assert benchmark(decode_image, face_chips[0]).width == 200


@pytest.mark.benchmark(group="decode: one 200x200 chip")
def test_decode_draft_for_64px(benchmark, face_chips: list[Path]):
    assert benchmark(decode_image, face_chips[0], draft_size=(64, 64)).width >= 64


@pytest.mark.benchmark(group="end to end: 48 chips")
def test_predict_ready_crops(benchmark, shared_faces: Path, tmp_path: Path):
    def run() -> dict:
        return run_predict(
            PredictConfig(
                input=shared_faces,
                out=tmp_path / "none",
                faces="none",
                resume=False,
                execution=ExecutionConfig(device="cpu"),
            )
        ).summary

    assert benchmark.pedantic(run, rounds=1, iterations=1)["counts"]["faces"] == 48
