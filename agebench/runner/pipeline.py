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

from agebench.core.errors import AgebenchError
from agebench.core.provenance import provenance
from agebench.core.tables import write_predictions_csv
from agebench.models.manifest import spec_digest
from agebench.models.predictor import available_cores
from agebench.runner import sink
from agebench.runner.config import PredictConfig
from agebench.runner.executor import make_runner
from agebench.runner.faces import Job, PreparedImage
from agebench.runner.imageio import has_decoder_warning
from agebench.runner.ownership import RunIdentity, claim, owned_folder
from agebench.runner.stack import PredictStack
from agebench.runner.uri import RemoteObject, check_input, count_objects, iter_objects
from agebench.runner.walk import count_images, iter_images

ProgressCallback = Callable[[str, int], None]  # (event, amount): "total", "advance"
Notify = Callable[[str], None]  # one line for the user: what a waiting run waits for

#: exit status of a run in which some images failed or had no face
EXIT_PARTIAL = 3


@dataclass
class RunOutcome:
    summary: dict[str, Any]
    out: Path

    @property
    def exit_code(self) -> int:
        counts = self.summary["counts"]
        return EXIT_PARTIAL if counts["images_failed"] or counts["images_no_face"] else 0


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
    source: dict[str, int | None] | None,
) -> dict[str, Any]:
    return {
        "schema": sink.PREDICTION_SCHEMA,
        "image": item.relative.as_posix(),
        "path": item.remote.uri if item.remote is not None else str(item.path),
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


#: one input: a local file, or an object behind a URI
Input = Path | RemoteObject


def _source_stat(path: Input) -> dict[str, int | None] | None:
    """The input file's size and mtime as the record was made: a resume redoes an image whose
    file changed since, instead of keeping an age computed from other pixels. (An object's
    are its listing's: the driver never reads it.)"""
    if isinstance(path, RemoteObject):
        return path.source()
    try:
        stat = path.stat()
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _matches(
    record: dict[str, Any] | None, run: str, path: Input | None
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


def _inputs(config: PredictConfig) -> Iterator[tuple[Input, Path]]:
    """Every input with its place in the output tree, in walk order: the files under a
    local path, or the objects under a URI (relative to its prefix)."""
    if isinstance(config.input, str):
        for obj in iter_objects(config.input, recursive=config.recursive):
            yield obj, Path(obj.relative)
        return
    root = config.input
    for path in iter_images(root, recursive=config.recursive):
        yield path, _relative(path, root)


def _count(config: PredictConfig) -> int:
    if isinstance(config.input, str):
        return count_objects(config.input, recursive=config.recursive)
    return count_images(config.input, recursive=config.recursive)


def _job(source: Input, relative: Path) -> Job:
    """A URI's job names its object by its relative path (never ``Path(uri)``)."""
    if isinstance(source, RemoteObject):
        return Job(relative, relative, remote=source)
    return Job(source, relative)


class PredictRun:
    """A predict run, set up (model verified, outputs checked) before any image is read.

    Setting up first means a bad model or folder fails before the progress bar starts.
    """

    def __init__(self, config: PredictConfig) -> None:
        if isinstance(config.input, str):
            check_input(config.input)  # an unknown scheme or a missing prefix fails here
        elif not config.input.exists():
            raise AgebenchError(f"{config.input}: input folder not found")
        self.config = config
        stack = self.stack = PredictStack.for_predict(config)
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
            target=lambda: report("total", _count(config)),
            name="agebench-count",
            daemon=True,
        ).start()
        counts = {"skipped_resumed": 0, "processed": 0}

        def todo() -> Iterator[tuple[Input, Path]]:
            for path, relative in _inputs(config):
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
                _image_record(
                    item, config, self.model, run_id, _source_stat(item.remote or item.path)
                ),
            )
            counts["processed"] += 1
            report("advance", 1)

        runner = make_runner(
            self.stack,
            config.cluster,
            batch_size=config.execution.batch_size,
            save_raw=config.save_raw,
        )
        started = time.perf_counter()  # a cluster's start-up is reported apart (execution.ray)
        jobs = (_job(path, relative) for path, relative in todo())
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
        for _, relative in _inputs(config):
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
        "input": config.input_name(),
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
