"""The eval run: benchmark records -> faces -> model -> predictions.jsonl -> metrics -> report.

Pure (no click). Work is keyed so that a rerun reuses it: the output folder is named by the
benchmark, protocol, split, model sha256, faces mode and a fingerprint of the label files and
images; a finished run is returned as is, an interrupted one resumes from its partial file.
Metrics are computed from ``predictions.jsonl`` alone, so any run can be re-scored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agebench.benchmarks.registry import get_benchmark
from agebench.benchmarks.spec import LoadOptions, Record
from agebench.core.config import LOCAL, ClusterConfig, ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.core.metrics import compute_metrics
from agebench.core.metrics.groups import compute_group_metrics
from agebench.core.provenance import provenance
from agebench.core.tables import write_predictions_csv
from agebench.core.types import FacesMode
from agebench.findings import declared_training, eval_findings
from agebench.models.catalog import DEFAULT_MODEL, resolve_model
from agebench.models.manifest import ModelSpec, spec_digest
from agebench.models.predictor import available_cores
from agebench.report.write import REPORT_HTML, REPORT_MD, write_report
from agebench.runner import sink
from agebench.runner.config import DetectConfig
from agebench.runner.eval_rows import eval_row
from agebench.runner.executor import make_runner
from agebench.runner.faces import Job, PreparedImage
from agebench.runner.fingerprint import data_fingerprint, label_file_sha256
from agebench.runner.imageio import has_decoder_warning
from agebench.runner.ownership import RunIdentity, claim, owned_folder
from agebench.runner.partial import (
    ScoringRow,
    read_partial,
    record_key,
    rows_in_order,
)
from agebench.runner.pipeline import Notify, ProgressCallback
from agebench.runner.reconcile import plan_ready_crops
from agebench.runner.stack import PredictStack

SUMMARY_SCHEMA = "agebench.eval-summary/1"
PARTIAL_FILE = "predictions.partial.jsonl"
REPORT_FILES = (REPORT_MD, REPORT_HTML)
_MAX_PROBLEMS_IN_SUMMARY = 100


@dataclass(frozen=True)
class EvalConfig:
    bench: str
    root: Path
    model: str = DEFAULT_MODEL
    manifest: Path | None = None
    split: str | None = None
    protocol: str | None = None
    labels: Path | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    folds: int = 5
    seed: int = 0
    faces: FacesMode | None = None
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    #: the local threads or a Ray cluster (not part of the run's identity: either resumes it)
    cluster: ClusterConfig = LOCAL
    out_root: Path = Path("reports")
    out: Path | None = None
    under_age: float = 18.0
    n_boot: int = 2000
    reuse: bool = True
    #: wait for another run holding the output folder instead of refusing at once
    wait: bool = False
    #: an image whose decoder warned fails instead of being scored with a note
    strict: bool = False
    min_face_size: int = 20


@dataclass
class EvalOutcome:
    summary: dict[str, Any]
    out: Path
    reused: bool


@dataclass
class _ExecutionRecord:
    """How the images of this run were processed, as the last model set up recorded it (a
    resumed run that had nothing left to do leaves these empty, as they were not used)."""

    provider: str | None = None
    engine: dict[str, Any] | None = None
    detector_device: str | None = None
    runner_settings: dict[str, Any] = field(default_factory=dict)
    crop_plan: str | None = None


class EvalRun:
    """One model (or per-fold model family) over one benchmark, set up before any image is read."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        self.execution = _ExecutionRecord()
        self.started_at: str | None = None
        self.load_seconds = 0.0
        self.bench = get_benchmark(config.bench)
        self.data = self.bench.load(LoadOptions.of(config))
        # the benchmark decides what no --protocol/--split means (a protocol may have no split)
        self.protocol = self.data.protocol or self.bench.default_protocol
        self.split = self.data.split
        if not self.data.records:
            detail = (
                f" ({len(self.data.problems)} label problems, first: {self.data.problems[0]})"
                if self.data.problems
                else ""
            )
            raise AgebenchError(
                f"{config.root}: no labelled images found for {self.bench.name}{detail}"
            )
        self.ready = self.bench.ready_crop(config.options)
        self.faces: FacesMode = config.faces or self.bench.faces_for(config.options)
        if self.faces == "box" and not any(r.box for r in self.data.records):
            raise AgebenchError(
                f"{self.bench.name}: --faces box, but no record has a face box; use --faces detect"
            )
        self.models = self._resolve_models()
        if self.faces == "none":  # fail before any work: whole photos are no face crops
            for spec in self.models.values():
                plan_ready_crops(
                    self.ready,
                    spec.crop,
                    bench=self.bench.name,
                    crop_option="crop" in self.bench.options,
                )
        shas = sorted({m.sha256 for m in self.models.values()})
        self.model_sha = (
            shas[0] if len(shas) == 1 else hashlib.sha256("".join(shas).encode()).hexdigest()
        )
        self.model_label = (
            config.model.replace("{fold}", "fold")
            if "{fold}" in config.model
            else next(iter(self.models.values())).name
        )
        key = {
            "protocol": self.protocol,
            "split": self.split,
            "folds": config.folds,
            "seed": config.seed,
            "faces": self.faces,
            "options": dict(config.options),
            "columns": dict(config.columns),
        }
        self.fingerprint = data_fingerprint(self.bench, self.data, config.root, key)
        self.out = config.out or (
            config.out_root
            / "eval"
            / self.bench.name
            / f"{self.protocol}-{self.split or 'all'}"
            / f"{self.model_label}@{self.model_sha[:8]}"
            / f"{self.faces}-{self.fingerprint[:12]}"
        )
        self.identity = RunIdentity(
            "eval",
            {
                "model": {
                    "name": self.model_label,
                    "sha256": self.model_sha,
                    "manifests": {str(k): spec_digest(m) for k, m in self.models.items()},
                },
                "benchmark": {
                    "name": self.bench.name,
                    "version": self.bench.version,
                    "fingerprint": self.fingerprint,
                },
                "settings": {
                    **key,
                    "precision": config.execution.precision,
                    "strict": config.strict,
                },
            },
        )

    def _resolve_models(self) -> dict[str | None, ModelSpec]:
        """``{fold}`` in the model name: a family with one weights file per fold (k-fold
        papers); each fold's images go to that fold's model."""
        if "{fold}" not in self.config.model:
            return {None: resolve_model(self.config.model, self.config.manifest)}
        folds = sorted({r.fold for r in self.data.records if r.fold is not None})
        if not folds:
            raise AgebenchError(
                f"model {self.config.model!r} is per fold, "
                f"but {self.bench.name} records have no folds"
            )
        return {fold: resolve_model(self.config.model.replace("{fold}", fold)) for fold in folds}

    # -- running -------------------------------------------------------------------------

    def run(
        self, progress: ProgressCallback | None = None, notify: Notify | None = None
    ) -> EvalOutcome:
        """Hold the output folder for the whole run (or refuse, or wait with
        ``config.wait``), then reuse, resume or start the eval."""
        with owned_folder(self.out, wait=self.config.wait, on_wait=notify):
            return self._run(progress or (lambda event, amount: None))

    def _finished(self) -> dict[str, Any] | None:
        """The folder's finished summary when it is this very run's (reuse costs nothing)."""
        previous = sink.read_json(self.out / sink.SUMMARY_FILE)
        if not (
            isinstance(previous, dict)
            and previous.get("benchmark", {}).get("fingerprint") == self.fingerprint
            and previous.get("model", {}).get("sha256") == self.model_sha
        ):
            return None
        recorded = sink.read_json(self.out / sink.RUN_FILE)
        # folders finished before run identities existed have no run.json: their summary's
        # model and data checks above are what those versions checked
        if recorded is not None and self.identity.differences(recorded):
            return None
        return previous

    def _run(self, report: ProgressCallback) -> EvalOutcome:
        summary_path = self.out / sink.SUMMARY_FILE
        previous = self._finished() if self.config.reuse else None
        if previous is not None:
            if not (
                self.out / sink.PREDICTIONS_CSV
            ).is_file():  # finished by an agebench before the csv
                write_predictions_csv(self.out)
            report("total", len(self.data.records))
            report("advance", len(self.data.records))
            return EvalOutcome(previous, self.out, reused=True)
        if not self.config.reuse:
            for name in (
                PARTIAL_FILE,
                sink.PREDICTIONS_FILE,
                sink.PREDICTIONS_CSV,
                sink.SUMMARY_FILE,
                *REPORT_FILES,
            ):
                (self.out / name).unlink(missing_ok=True)
        sink.clear_temporaries(self.out)
        claim(
            self.out,
            self.identity,
            resume=self.config.reuse,
            hint="use --no-reuse to replace it or choose another --out",
        )
        run_id = self.identity.digest
        done = read_partial(self.out / PARTIAL_FILE, run_id)
        report("total", len(self.data.records))
        report("advance", sum(1 for r in self.data.records if record_key(r) in done))
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        started = time.perf_counter()
        processed = 0
        self.load_seconds = 0.0
        partial_path = self.out / PARTIAL_FILE
        try:
            partial = open(partial_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as error:
            raise sink.output_error(partial_path, error) from None
        try:
            for fold, spec in self.models.items():
                todo = [
                    (i, r)
                    for i, r in enumerate(self.data.records)
                    if (fold is None or r.fold == fold) and record_key(r) not in done
                ]
                processed += self._predict(spec, todo, partial, done, report, run_id)
        except OSError as error:  # the partial file could not take a row (disk full...)
            raise sink.output_error(partial_path, error) from None
        finally:
            with contextlib.suppress(OSError):  # a full disk fails the close too: reported above
                partial.close()
        # images/s counts the images' time: loading models (and tuning them once) is reported apart
        seconds = time.perf_counter() - started - self.load_seconds
        rows = [done[record_key(r)] for r in self.data.records]
        files = hashlib.sha256()
        warned = 0

        def counted(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            nonlocal warned
            for row in rows:
                warned += has_decoder_warning(row.get("notes"))
                yield row

        sink.write_lines_atomic(
            self.out / sink.PREDICTIONS_FILE,
            counted(rows_in_order(self.out / PARTIAL_FILE, self.data.records, files, run_id)),
        )
        write_predictions_csv(self.out)
        summary = self._summarise(rows, processed, seconds, files)
        summary["counts"]["decoder_warnings"] = warned
        per_fold = {
            str(fold): (spec, [r.image for r in self.data.records if r.fold == fold])
            for fold, spec in self.models.items()
            if fold is not None
        }
        summary["findings"] = eval_findings(summary, list(self.models.values()), per_fold)
        sink.write_json_atomic(summary_path, summary, durable=True)
        write_report(self.out, summary, rows)
        (self.out / PARTIAL_FILE).unlink(missing_ok=True)
        return EvalOutcome(summary, self.out, reused=False)

    def _predict(
        self,
        spec: ModelSpec,
        todo: list[tuple[int, Record]],
        partial: Any,
        done: dict[str, Mapping[str, Any]],
        report: ProgressCallback,
        run_id: str,
    ) -> int:
        if not todo:
            return 0
        config = self.config
        loading = time.perf_counter()
        stack = PredictStack.build(
            spec,
            self.faces,
            config.execution,
            # one face per record: the largest, or the one overlapping the given box
            detect=DetectConfig(min_face_size=config.min_face_size, max_faces=1),
            ready_crop=self.ready,
            source=self.bench.name,
            strict=config.strict,
        )
        record = self.execution
        record.provider = stack.predictor.provider
        record.engine = stack.predictor.execution
        record.detector_device = stack.detector_device
        record.crop_plan = stack.crop_plan
        root = config.root
        count = 0

        def finish(item: PreparedImage) -> None:
            nonlocal count
            record = self.data.records[item.key]
            # lexists: a dangling link or a loop is there, and its reason says what is wrong
            if item.status == "failed" and not os.path.lexists(item.path):
                item.status = "missing"
            row = eval_row(record, item, item.sha256, spec, run_id, self.bench.groups)
            partial.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            done[record_key(record)] = ScoringRow(row)
            count += 1
            report("advance", 1)

        runner = make_runner(stack, config.cluster, batch_size=config.execution.batch_size)
        self.load_seconds += time.perf_counter() - loading
        jobs = (
            Job(root / r.image, Path(r.image), box=r.box, key=i, hash_content=True) for i, r in todo
        )
        try:
            runner.run(jobs, finish)
        finally:
            partial.flush()
            record.runner_settings = runner.describe()
        return count

    # -- scoring -------------------------------------------------------------------------

    def _summarise(
        self, rows: list[Mapping[str, Any]], processed: int, seconds: float, files: Any
    ) -> dict[str, Any]:
        """Metrics and provenance; ``files`` is the sha256 of the rows' images so far."""
        config = self.config
        metrics = {}
        for target in self.bench.targets:
            if any(
                (r["age"] if target == "age" else r["targets"].get(target)) is not None
                for r in rows
            ):
                metrics[target] = compute_metrics(
                    rows,
                    target=target,
                    under_age=config.under_age,
                    n_boot=config.n_boot,
                    seed=config.seed,
                )
        group_metrics = (
            compute_group_metrics(rows, self.bench.groups, seed=config.seed)
            if self.bench.groups
            else None
        )
        statuses = [r["status"] for r in rows]
        image_hashes = files
        for label in sorted(self.data.label_files):
            image_hashes.update(f"{label.name}:{label_file_sha256(label)}".encode())
        first = next(iter(self.models.values()))
        return {
            "schema": SUMMARY_SCHEMA,
            "benchmark": {
                "name": self.bench.name,
                "title": self.bench.title,
                "version": self.bench.version,
                "protocol": self.protocol,
                "split": self.split,
                "folds": config.folds,
                "seed": config.seed,
                "root": str(config.root.resolve()),
                "fingerprint": self.fingerprint,
                "files_sha256": image_hashes.hexdigest(),
                "n_label_files": len(self.data.label_files),
                "n_images": len({r["image"] for r in rows}),
                "options": dict(config.options),
            },
            "model": {
                "name": self.model_label,
                "sha256": self.model_sha,
                "framework": first.framework,
                "per_fold": {str(k): m.sha256 for k, m in self.models.items()}
                if len(self.models) > 1
                else None,
                # what the manifests say it was trained on: the findings match it to the bench
                **declared_training(list(self.models.values())),
            },
            "faces": {
                "mode": self.faces,
                "ready_crop": self.ready.kind if self.faces == "none" else None,
                "reconciliation": self.execution.crop_plan,
            },
            "execution": {
                "device": config.execution.device,
                "onnx_provider": self.execution.provider,
                "engine": self.execution.engine,
                **self.execution.runner_settings,
                "detector_device": self.execution.detector_device,
                "cores": available_cores(),
            },
            "counts": {
                "records": len(rows),
                "scored": statuses.count("ok"),
                "no_face": statuses.count("no_face"),
                "failed": statuses.count("failed"),
                "missing": statuses.count("missing"),
                "label_problems": len(self.data.problems),
                "processed_this_run": processed,
            },
            "metrics": metrics,
            "group_metrics": group_metrics,
            "problems": [str(p) for p in self.data.problems[:_MAX_PROBLEMS_IN_SUMMARY]],
            "timing": {
                "started": self.started_at,
                "seconds": round(seconds, 3),
                "model_load_seconds": round(self.load_seconds, 3),
                "images_per_second": round(processed / seconds, 2)
                if processed and seconds > 0
                else None,
            },
            "provenance": provenance(),
        }


def run_eval(
    config: EvalConfig, progress: ProgressCallback | None = None, notify: Notify | None = None
) -> EvalOutcome:
    return EvalRun(config).run(progress, notify)
