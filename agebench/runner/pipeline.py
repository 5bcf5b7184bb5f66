"""The predict run: walk -> decode/detect/crop (worker threads) -> batched model -> sink.

Pure: no click, no printing. Progress is reported through a callback so that the CLI can
draw a bar and tests can stay quiet.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from agebench.benchmarks.spec import ReadyCrop
from agebench.core.config import ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.core.provenance import provenance
from agebench.core.tables import write_predictions_csv
from agebench.core.types import FacesMode
from agebench.faces.detect import FaceDetector
from agebench.models.catalog import resolve_model
from agebench.models.manifest import ModelSpec, spec_digest
from agebench.models.predictor import Predictor, available_cores
from agebench.runner import sink
from agebench.runner.config import DetectConfig, PredictConfig
from agebench.runner.faces import FacePreparer, Job, PreparedImage, needs_detector
from agebench.runner.imageio import has_decoder_warning
from agebench.runner.ownership import RunIdentity, claim, owned_folder
from agebench.runner.reconcile import plan_ready_crops
from agebench.runner.stages import BatchRunner
from agebench.runner.walk import count_images, iter_images

ProgressCallback = Callable[[str, int], None]  # (event, amount): "total", "advance"
Notify = Callable[[str], None]  # one line for the user: what a waiting run waits for

#: exit status of a run in which some images failed or had no face
EXIT_PARTIAL = 3
#: ready crops cut tight around the face (UTKFace chips): ``--faces none``'s default
TIGHT_CROPS = ReadyCrop(kind="tight")


@dataclass
class RunOutcome:
    summary: dict[str, Any]
    out: Path

    @property
    def exit_code(self) -> int:
        counts = self.summary["counts"]
        return EXIT_PARTIAL if counts["images_failed"] or counts["images_no_face"] else 0


def torch_device(device: str) -> str:
    import torch

    if device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise AgebenchError("--device cuda: torch sees no CUDA GPU for face detection")
    return "cpu"


def share_cores_with_workers(workers: int) -> None:
    """One torch thread per detection worker: on 2 cores, 2 workers x 1 thread ran MTCNN
    20% faster than 2 x 2 (oversubscribed) and 60% faster than 1 x 2."""
    import torch

    torch.set_num_threads(max(1, available_cores() // workers))


class BackgroundWriter:
    """Writes image records on one thread so file-system latency overlaps inference.

    A failed write is not swallowed: it is raised in the run's thread at the next submit
    or at close, and the run fails.
    """

    def __init__(self, max_pending: int = 256) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agebench-write")
        self._pending: deque[Future[None]] = deque()
        self._max_pending = max_pending

    def submit(self, path: Path, record: dict[str, Any]) -> None:
        self._pending.append(self._pool.submit(sink.write_json_atomic, path, record))
        while self._pending and (self._pending[0].done() or len(self._pending) > self._max_pending):
            self._pending.popleft().result()

    def close(self, *, raise_errors: bool = True) -> None:
        """Wait for every pending write; ``raise_errors=False`` when the run is failing
        already, so that its own error is the one reported."""
        self._pool.shutdown(wait=True)
        while self._pending:
            future = self._pending.popleft()
            if raise_errors:
                future.result()


def _image_record(
    item: PreparedImage,
    config: PredictConfig,
    model: dict[str, str],
    run: str,
    source: dict[str, int] | None,
) -> dict[str, Any]:
    return {
        "schema": sink.PREDICTION_SCHEMA,
        "image": item.relative.as_posix(),
        "path": str(item.path),
        "width": item.width,
        "height": item.height,
        "status": item.status,
        "error": item.error,
        "notes": item.notes,
        "faces_mode": config.faces,
        "model": model,
        "run": run,
        "source": source,
        "faces": item.faces,
    }


def _source_stat(path: Path) -> dict[str, int] | None:
    """The input file's size and mtime as the record was made: a resume redoes an image whose
    file changed since, instead of keeping an age computed from other pixels."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _matches(
    record: dict[str, Any] | None, run: str, path: Path | None
) -> TypeGuard[dict[str, Any]]:
    """Whether a record on disk is this run's: same identity digest (model, manifest,
    settings) and, when its input is known, the same input file. (A TypeGuard: a record
    that matches is one that was read, so callers use it without another None check.)"""
    if record is None or record.get("run") != run:
        return False
    return path is None or record.get("source") == _source_stat(path)


def _relative(path: Path, root: Path) -> Path:
    # a root that is no folder (a file, a FIFO, a link named on the command line) is its image
    return Path(path.name) if not root.is_dir() else path.relative_to(root)


def build_predictor(
    spec: ModelSpec, execution: ExecutionConfig, *, verify: bool = True
) -> Predictor:
    """The model's predictor as ``execution`` says (device, backend, precision, tuning): the one
    place that maps an ``ExecutionConfig`` onto a ``Predictor``. ``verify=False`` skips the
    weights' sha256 check, for a caller that has just checked them itself."""
    return Predictor(
        spec,
        device=execution.device,
        tuning=execution.tuning,
        backend=execution.backend,
        precision=execution.precision,
        verify=verify,
    )


@dataclass
class PredictStack:
    """The model, detector and face preparer of a run, built in one place, so that predict,
    eval, the Python API (``agebench.load``), quantize's calibration and the bench prepare
    faces identically."""

    spec: ModelSpec
    predictor: Predictor
    preparer: FacePreparer
    workers: int
    #: where MTCNN runs (None: no detection)
    detector_device: str | None
    #: the sentence saying how ready crops become model input (None: not ``--faces none``)
    crop_plan: str | None

    @classmethod
    def build(
        cls,
        spec: ModelSpec,
        faces: FacesMode,
        execution: ExecutionConfig,
        *,
        detect: DetectConfig | None = None,
        ready_crop: ReadyCrop = TIGHT_CROPS,
        source: str = "input",
        strict: bool = False,
    ) -> PredictStack:
        """Load ``spec`` (its weights verified) and set up detection and cropping for
        ``faces``: a detector when the mode needs one (``needs_detector``), the ready-crop
        plan under ``--faces none`` (``ready_crop``: what the images are; ``source`` names
        them in the error when they are whole photos; ``detect``: the detector's settings,
        predict's defaults when None)."""
        return cls.around(
            build_predictor(spec, execution),
            faces,
            execution,
            detect=detect,
            ready_crop=ready_crop,
            source=source,
            strict=strict,
        )

    @classmethod
    def around(
        cls,
        predictor: Predictor,
        faces: FacesMode,
        execution: ExecutionConfig,
        *,
        detect: DetectConfig | None = None,
        ready_crop: ReadyCrop = TIGHT_CROPS,
        source: str = "input",
        strict: bool = False,
    ) -> PredictStack:
        """``build`` around a model loaded already: another faces mode over the same model
        (``AgeEstimator.predict_crops`` on a detecting load) costs no second load."""
        spec = predictor.spec
        detect = detect or DetectConfig()
        workers = execution.workers or available_cores()
        detector_device: str | None = None
        detector = None
        if needs_detector(faces, spec.crop):
            detector_device = torch_device(execution.device)
            share_cores_with_workers(workers)
            detector = FaceDetector(
                device=detector_device,
                min_face_size=detect.min_face_size,
                max_side=detect.max_side,
                retry_pad=detect.retry_pad,
            )
        ready = plan_ready_crops(ready_crop, spec.crop, bench=source) if faces == "none" else None
        preparer = FacePreparer(
            spec.crop, predictor.input_size, faces, detect, detector, ready, strict=strict
        )
        return cls(
            spec, predictor, preparer, workers, detector_device, ready.describe() if ready else None
        )

    @classmethod
    def for_predict(cls, config: PredictConfig) -> PredictStack:
        """The stack of a predict run (or ``agebench.load``): the model resolved and verified,
        then set up as ``config`` says (its input and output folders are not looked at)."""
        return cls.build(
            resolve_model(config.model, config.manifest),
            config.faces,
            config.execution,
            detect=config.detect,
            ready_crop=config.ready_crop,
            strict=config.strict,
        )


class PredictRun:
    """A predict run, set up (model verified, outputs checked) before any image is read.

    Setting up first means a bad model or folder fails before the progress bar starts.
    """

    def __init__(self, config: PredictConfig) -> None:
        if not config.input.exists():
            raise AgebenchError(f"{config.input}: input folder not found")
        self.config = config
        stack = PredictStack.for_predict(config)
        self.spec, self.predictor, self.preparer = stack.spec, stack.predictor, stack.preparer
        self.workers, self.detector_device = stack.workers, stack.detector_device
        self.crop_plan = stack.crop_plan
        self.model = {"name": self.spec.name, "sha256": self.predictor.sha256}
        self.identity = RunIdentity(
            "predict",
            {
                "model": {**self.model, "manifest_sha256": spec_digest(self.spec)},
                "settings": config.fingerprint(),
            },
        )

    def run(
        self, progress: ProgressCallback | None = None, notify: Notify | None = None
    ) -> RunOutcome:
        """Hold the output folder for the whole run (or refuse, or wait with
        ``config.wait``), then predict; ``notify`` hears who a waiting run waits for."""
        with owned_folder(self.config.out, wait=self.config.wait, on_wait=notify):
            return self._run(progress)

    def _run(self, progress: ProgressCallback | None) -> RunOutcome:
        config = self.config
        report = progress or (lambda event, amount: None)
        if not config.resume:
            sink.clear_run(config.out)
        sink.clear_temporaries(config.out)
        claim(
            config.out,
            self.identity,
            resume=config.resume,
            hint="use --overwrite to replace it or choose another --out",
        )
        run_id = self.identity.digest
        # counting a huge tree takes a while: let the bar learn its total while work starts
        threading.Thread(
            target=lambda: report("total", count_images(config.input, recursive=config.recursive)),
            name="agebench-count",
            daemon=True,
        ).start()
        counts = {"skipped_resumed": 0, "processed": 0}

        def todo() -> Iterator[tuple[Path, Path]]:
            for path in iter_images(config.input, recursive=config.recursive):
                relative = _relative(path, config.input)
                if config.resume and _matches(
                    sink.read_image_json(sink.image_json_path(config.out, relative)), run_id, path
                ):
                    counts["skipped_resumed"] += 1
                    report("advance", 1)
                    continue
                yield path, relative

        writer = BackgroundWriter()

        def done(item: PreparedImage) -> None:
            writer.submit(
                sink.image_json_path(config.out, item.relative),
                _image_record(item, config, self.model, run_id, _source_stat(item.path)),
            )
            counts["processed"] += 1
            report("advance", 1)

        runner = BatchRunner(
            self.preparer,
            self.predictor,
            batch_size=config.execution.batch_size,
            workers=self.workers,
            save_raw=config.save_raw,
        )
        started = time.perf_counter()
        jobs = (Job(path, relative) for path, relative in todo())
        try:
            runner.run(jobs, done)
        except BaseException:
            writer.close(raise_errors=False)  # finished images are kept even when interrupted
            raise
        writer.close()
        seconds = time.perf_counter() - started
        spec_info = {
            **self.model,
            "framework": self.spec.framework,
            "manifest": str(self.spec.manifest_path) if self.spec.manifest_path else None,
        }
        execution = {
            "device": config.execution.device,
            "onnx_provider": self.predictor.provider,
            "engine": self.predictor.execution,
            "detector_device": self.detector_device,
            **runner.describe(),
            "workers": self.workers,
            "ready_crops": self.crop_plan,
            "cores": available_cores(),
        }
        summary = _finish(
            config,
            run_id,
            spec_info=spec_info,
            execution=execution,
            counts=counts,
            seconds=seconds,
        )
        return RunOutcome(summary, config.out)


def run_predict(
    config: PredictConfig, progress: ProgressCallback | None = None, notify: Notify | None = None
) -> RunOutcome:
    """Predict ages for every image under ``config.input``; write and return the summary."""
    return PredictRun(config).run(progress, notify)


def _finish(
    config: PredictConfig,
    run_id: str,
    *,
    spec_info: dict[str, Any],
    execution: dict[str, Any],
    counts: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    """Rebuild predictions.jsonl from the per-image files (walk order) and write the summary."""
    tally = {
        "images": 0,
        "images_ok": 0,
        "images_no_face": 0,
        "images_failed": 0,
        "faces": 0,
        "images_decoder_warnings": 0,
    }
    failures: list[dict[str, Any]] = []

    def rows() -> Iterator[dict[str, Any]]:
        for path in iter_images(config.input, recursive=config.recursive):
            relative = _relative(path, config.input)
            record = sink.read_image_json(sink.image_json_path(config.out, relative))
            if not _matches(record, run_id, None):
                continue  # interrupted before this image: a resume will do it
            tally["images"] += 1
            tally[f"images_{record['status']}"] += 1
            tally["faces"] += len(record["faces"])
            tally["images_decoder_warnings"] += has_decoder_warning(record.get("notes"))
            if record["status"] != "ok":
                failures.append(
                    {"image": record["image"], "status": record["status"], "error": record["error"]}
                )
            yield from sink.face_rows(record)

    sink.write_lines_atomic(config.out / sink.PREDICTIONS_FILE, rows())
    write_predictions_csv(config.out)
    processed = counts["processed"]
    summary = {
        "schema": "agebench.predict-summary/1",
        "input": str(config.input.resolve()),
        "out": str(config.out.resolve()),
        "model": spec_info,
        "execution": execution,
        "faces_mode": config.faces,
        "settings": config.fingerprint(),
        "run": run_id,
        "counts": {
            **tally,
            "processed_this_run": processed,
            "skipped_resumed": counts["skipped_resumed"],
        },
        "timing": {
            "seconds": round(seconds, 3),
            "images_per_second": round(processed / seconds, 2) if seconds > 0 else None,
        },
        "failures": failures,
        "provenance": provenance(),
    }
    sink.write_json_atomic(config.out / sink.SUMMARY_FILE, summary, durable=True)
    return summary
