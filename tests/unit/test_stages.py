"""The batched runner: every job back once, in order, with the right face's prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agebench.faces.detect import Face
from agebench.models.manifest import load_manifest
from agebench.models.predictor import Predictor
from agebench.runner.config import DetectConfig
from agebench.runner.faces import FacePreparer, Job, PreparedImage
from agebench.runner.reconcile import TIGHT, plan_ready_crops
from agebench.runner.stages import BatchRunner, chunked
from tests.fixtures.tiny_models import write_manifest


@pytest.fixture()
def tiny(tmp_path: Path) -> Predictor:
    """The channel-mean graph read as 'age = mean red level' of the whole image (crop policy
    none): each face's answer is known."""
    manifest = write_manifest(tmp_path, crop_block='[crop]\npolicy = "none"\n')
    return Predictor(load_manifest(manifest), device="cpu", tuning="auto")


def _solid(path: Path, red: int, size: int = 24) -> Path:
    Image.fromarray(np.full((size, size, 3), (red, 10, 20), np.uint8)).save(path)
    return path


def _ready_preparer(predictor: Predictor) -> FacePreparer:
    """Tight ready crops (--faces none) for ``predictor``'s model."""
    spec = predictor.spec
    plan = plan_ready_crops(TIGHT, spec.crop)
    return FacePreparer(spec.crop, predictor.input_size, "none", DetectConfig(), None, plan)


def _jobs(paths: list[Path]) -> list[Job]:
    return [Job(p, Path(p.name), key=i) for i, p in enumerate(paths)]


def _run(runner: BatchRunner, jobs: list[Job]) -> list[PreparedImage]:
    done: list[PreparedImage] = []
    runner.run(jobs, done.append)
    return done


def test_chunked_keeps_order_and_remainder():
    assert [len(c) for c in chunked(range(10), 4)] == [4, 4, 2]
    assert [x for c in chunked(range(10), 4) for x in c] == list(range(10))


@pytest.mark.parametrize(("batch_size", "workers"), [(1, 1), (3, 2), (64, 2)])
def test_ready_crops_come_back_in_order_with_their_own_age(
    tiny: Predictor, tmp_path: Path, batch_size: int, workers: int
):
    reds = [(i * 37) % 256 for i in range(23)]
    paths = [_solid(tmp_path / f"{i:02d}.png", red) for i, red in enumerate(reds)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths.insert(5, tmp_path / "broken.png")
    preparer = _ready_preparer(tiny)
    runner = BatchRunner(preparer, tiny, batch_size=batch_size, workers=workers)
    done = _run(runner, _jobs(paths))
    assert [item.key for item in done] == list(range(len(paths)))
    assert done[5].status == "failed" and done[5].faces == []
    ok = [item for item in done if item.status == "ok"]
    assert [item.faces[0]["age"] for item in ok] == pytest.approx(reds, abs=1e-3)
    assert all(item.crops is None for item in done)  # freed once in the input tensor
    assert all(face["model_sha256"] == tiny.sha256 for item in ok for face in item.faces)


class _CountingDetector:
    """Stands in for MTCNN: ``n`` faces per image (from the file name), batched calls seen."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def detect_many(self, images: list[np.ndarray]) -> list[list[Face]]:
        self.batches.append(len(images))
        return [self.detect(rgb) for rgb in images]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        count = int(rgb[0, 0, 1]) // 50  # green level encodes the number of faces
        marks = np.array([[6, 8], [14, 8], [10, 12], [7, 16], [13, 16]], dtype=np.float64)
        return [
            Face((2.0 + k, 2.0, 18.0 + k, 18.0), marks + k, 0.99 - 0.01 * k) for k in range(count)
        ]


def test_detected_faces_spread_over_batches_keep_their_images(tiny: Predictor, tmp_path: Path):
    counts = [0, 1, 3, 2, 0, 4, 1, 1, 2, 3, 1]
    paths = []
    for i, n in enumerate(counts):
        rgb = np.full((20, 20, 3), (10 * i + 5, 50 * n, 0), np.uint8)
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(rgb).save(path)
        paths.append(path)
    detector = _CountingDetector()
    preparer = FacePreparer(tiny.spec.crop, tiny.input_size, "detect", DetectConfig(), detector)
    runner = BatchRunner(preparer, tiny, batch_size=2, workers=2)  # batches cut images apart
    done = _run(runner, _jobs(paths))
    assert [len(item.faces) for item in done] == counts
    assert [item.status for item in done] == ["no_face" if n == 0 else "ok" for n in counts]
    for i, item in enumerate(done):
        # the crop is inside the solid image, so every face of image i reads its own red level
        assert [f["age"] for f in item.faces] == pytest.approx([10 * i + 5] * counts[i], abs=1e-3)
    # detection ran once per chunk of images, not once per image
    assert detector.batches and max(detector.batches) > 1
    assert sum(detector.batches) == len(paths)


def test_a_detection_failure_fails_its_image_only(tiny: Predictor, tmp_path: Path):
    class Flaky(_CountingDetector):
        def detect_many(self, images: list[np.ndarray]) -> list[list[Face]]:
            raise RuntimeError("batch broke")

        def detect(self, rgb: np.ndarray) -> list[Face]:
            if rgb[0, 0, 0] == 99:
                raise RuntimeError("this one is cursed")
            return super().detect(rgb)

    paths = []
    for i, red in enumerate([10, 99, 30]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 20, 3), (red, 50, 0), np.uint8)).save(path)
        paths.append(path)
    preparer = FacePreparer(tiny.spec.crop, tiny.input_size, "detect", DetectConfig(), Flaky())
    done = _run(BatchRunner(preparer, tiny, batch_size=8, workers=1), _jobs(paths))
    assert [item.status for item in done] == ["ok", "failed", "ok"]
    assert "this one is cursed" in (done[1].error or "")


def test_hashing_reads_once_and_records_the_content_hash(tiny: Predictor, tmp_path: Path):
    import hashlib

    path = _solid(tmp_path / "a.png", 100)
    preparer = _ready_preparer(tiny)
    (item,) = preparer.prepare_many([Job(path, Path("a.png"), hash_content=True)])
    assert item.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    (missing,) = preparer.prepare_many(
        [Job(tmp_path / "gone.png", Path("gone.png"), hash_content=True)]
    )
    assert missing.status == "failed" and missing.sha256 is None
    assert "not found" in (missing.error or "")


def test_runner_describes_its_shape(tiny: Predictor):
    preparer = FacePreparer(
        tiny.spec.crop, tiny.input_size, "detect", DetectConfig(), _CountingDetector()
    )
    shape = BatchRunner(preparer, tiny, batch_size=64, workers=2).describe()
    assert shape["chunk_images"] == 8  # photos are large: detection chunks stay small
    assert shape["inference_lanes"] == tiny.lanes >= 1


def test_device_decoding_gives_the_host_paths_results(face_chips: list[Path], tmp_path: Path):
    """The GPU path (files read on the host, JPEG decode, cut and normalisation on the device)
    run on the CPU: the same statuses, boxes and ages as the host path, within what one grey
    level of warp rounding moves (measured: under 0.02 year on these chips)."""
    from agebench.models.catalog import ModelCatalog

    spec = ModelCatalog().get("dlib-age-v1")
    paths = list(face_chips[:10])
    png = tmp_path / "chip.png"
    Image.open(face_chips[10]).save(png)  # not a JPEG: decoded on the host, same chunk
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(face_chips[11].read_bytes()[:1500])
    paths[3:3] = [png, truncated]
    results = {}
    for device_decode in (False, True):
        predictor = Predictor(spec, device="cpu", backend="torch")
        preparer = _ready_preparer(predictor)
        runner = BatchRunner(
            preparer, predictor, batch_size=4, workers=2, device_decode=device_decode
        )
        assert runner.describe()["decode"].startswith("device" if device_decode else "host")
        jobs = [Job(p, Path(p.name), key=i, hash_content=True) for i, p in enumerate(paths)]
        results[device_decode] = _run(runner, jobs)
    host, device = results[False], results[True]
    assert [i.status for i in device] == [i.status for i in host]
    assert device[4].status == "failed" and "truncated" in (device[4].error or "")
    assert [i.sha256 for i in device] == [i.sha256 for i in host]
    for a, b in zip(host, device, strict=True):
        assert (a.width, a.height) == (b.width, b.height)
        if a.status == "ok":
            assert b.faces[0]["box"] == a.faces[0]["box"]
            assert b.faces[0]["age"] == pytest.approx(a.faces[0]["age"], abs=0.05)
    assert "decoded on the device" in device[0].notes and device[3].notes == host[3].notes
