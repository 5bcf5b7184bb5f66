"""Face detection speed on the 48 shared chips: facenet-pytorch per image vs our batched cascade.

Both do what ``FaceDetector.detect`` promises: detect on the chip, and again on it framed in
black when no face is found or a face crosses the edge (every tight chip). Measure with
``.venv/bin/python -m pytest tests/benchmarks/test_detect_speed.py --benchmark-enable``;
no test here asserts a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agebench.faces.detect import FaceDetector
from tests.fixtures.facenet_reference import facenet_mtcnn


@pytest.fixture(scope="module")
def chips(face_chips: list[Path]) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in face_chips]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(device="cpu")


def _facenet_detect(nets: list, detect_face, rgb: np.ndarray) -> np.ndarray:
    """The previous FaceDetector.detect: one ``detect_face`` call per image, padded retry."""
    with torch.inference_mode():
        boxes = detect_face(rgb[None], 20, *nets, [0.6, 0.7, 0.7], 0.709, "cpu")[0][0]
    height, width = rgb.shape[:2]
    edge = [b for b in boxes if b[0] < 0 or b[1] < 0 or b[2] > width or b[3] > height]
    if len(boxes) and not edge:
        return boxes
    pad = round(height * 0.2), round(width * 0.2)
    framed = np.pad(rgb, ((pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
    with torch.inference_mode():
        again = detect_face(framed[None], 20, *nets, [0.6, 0.7, 0.7], 0.709, "cpu")[0][0]
    return again if len(again) else boxes


@pytest.mark.benchmark(group="detect: 48 chips")
def test_facenet_per_image_baseline(benchmark, chips: list[np.ndarray]):
    pnet, rnet, onet, detect_face = facenet_mtcnn()
    nets = [cls().eval() for cls in (pnet, rnet, onet)]
    found = benchmark.pedantic(
        lambda: [_facenet_detect(nets, detect_face, c) for c in chips], rounds=3, warmup_rounds=1
    )
    assert sum(len(b) for b in found) >= len(chips)


@pytest.mark.benchmark(group="detect: 48 chips")
def test_detect_per_image(benchmark, detector: FaceDetector, chips: list[np.ndarray]):
    """Our cascade, one image per call: what the batching is measured against."""
    found = benchmark.pedantic(
        lambda: [detector.detect(c) for c in chips], rounds=3, warmup_rounds=1
    )
    assert sum(len(f) for f in found) >= len(chips)


@pytest.mark.benchmark(group="detect: 48 chips")
def test_detect_many(benchmark, detector: FaceDetector, chips: list[np.ndarray]):
    found = benchmark.pedantic(detector.detect_many, (chips,), rounds=5, warmup_rounds=1)
    assert sum(len(f) for f in found) >= len(chips)


@pytest.mark.benchmark(group="detect: 48 chips")
def test_detect_many_in_dlibs_range(benchmark, chips: list[np.ndarray]):
    """The range ``agebench bench`` (f) compares with dlib's: faces from 70 px up."""
    from agebench.speed.measure import BASELINE_MIN_FACE

    detector = FaceDetector(device="cpu", min_face_size=BASELINE_MIN_FACE)
    found = benchmark.pedantic(detector.detect_many, (chips,), rounds=5, warmup_rounds=1)
    assert all(len(f) >= 1 for f in found)
