"""The GPU paths, on a machine whose torch sees CUDA (none in CI: these skip there and say so).

Run on a GPU machine with ``.venv/bin/python -m pytest tests/gpu -v``. They check what the CPU
tests cannot: the torch engine on CUDA against onnxruntime on the CPU, nvJPEG decoding against
the host decoder, the whole ready-crop runner on the device against the host runner, and MTCNN
on the device against MTCNN on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agebench.models.catalog import ModelCatalog
from agebench.models.predictor import Predictor
from agebench.runner.config import DetectConfig
from agebench.runner.faces import FacePreparer, Job
from agebench.runner.imageio import decode_image
from agebench.runner.reconcile import TIGHT, plan_ready_crops
from agebench.runner.stages import BatchRunner

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")


@pytest.fixture(scope="module")
def spec():
    return ModelCatalog().get("dlib-age-v1")


def test_torch_cuda_matches_onnxruntime_cpu(spec, face_chips: list[Path]):
    import cv2

    faces = np.stack(
        [
            cv2.resize(decode_image(p).rgb, (64, 64), interpolation=cv2.INTER_AREA)
            for p in face_chips
        ]
    )
    reference = Predictor(spec, device="cpu").predict(faces).fields["age"]
    gpu = Predictor(spec, device="cuda", backend="torch", precision="fp32")
    assert gpu.provider == "torch-cuda"
    # TF32 convolutions: looser than the CPU parity bound, still far below a year
    assert np.abs(gpu.predict(faces).fields["age"] - reference).max() < 0.05


def test_nvjpeg_decodes_as_the_host_does(face_chips: list[Path]):
    from agebench.runner.device_decode import decode_jpegs

    images = decode_jpegs([p.read_bytes() for p in face_chips], "cuda")
    for path, image in zip(face_chips, images, strict=True):
        host = decode_image(path).rgb.astype(int)
        assert np.abs(image.cpu().numpy().astype(int) - host).max() <= 3


def test_ready_crop_runner_on_the_device_matches_the_host(spec, face_chips: list[Path]):
    plan = plan_ready_crops(TIGHT, spec.crop)
    results = {}
    for device_decode in (False, True):
        predictor = Predictor(spec, device="cuda", backend="torch", precision="fp32")
        preparer = FacePreparer(spec.crop, predictor.input_size, "none", DetectConfig(), None, plan)
        runner = BatchRunner(
            preparer, predictor, batch_size=16, workers=2, device_decode=device_decode
        )
        done: list = []
        runner.run([Job(p, Path(p.name), key=i) for i, p in enumerate(face_chips)], done.append)
        results[device_decode] = [item.faces[0]["age"] for item in done]
    assert np.abs(np.array(results[True]) - np.array(results[False])).max() < 0.1


def test_mtcnn_on_cuda_finds_the_faces_the_cpu_finds(face_chips: list[Path]):
    """The cascade on the device: summed-area tables in torch, channels-last nets, torchvision's
    NMS loaded without its package. TF32 convolutions move boxes by float rounding only."""
    from agebench.faces.detect import FaceDetector

    photos = [decode_image(p).rgb for p in face_chips]
    cpu = FaceDetector(device="cpu").detect_many(photos)
    gpu = FaceDetector(device="cuda").detect_many(photos)
    assert [len(f) for f in gpu] == [len(f) for f in cpu]
    for ours, theirs in zip(gpu, cpu, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert np.abs(np.array(a.box) - np.array(b.box)).max() < 0.5
            assert np.abs(a.landmarks - b.landmarks).max() < 0.5
