"""``agebench train``: one model per fold, each exported through the gate and registered.

For each fold of the plan (``protocol.plan_folds``): a fresh copy of the backbone and a new
head of the loss, trained by ``Trainer`` on the crop cache, then exported and registered by
``export_trained`` as ``NAME-fold{k}`` (``NAME`` without a protocol). The run folder
``OUT_ROOT/train/NAME/`` holds ``config.json``, per fold ``metrics.jsonl`` (one line per
epoch), ``split.json`` (the images of train, validation and test), ``checkpoints/`` and
``result.json``, then ``summary.json`` and ``report.html`` with the curves.

The test fold is not scored here: ``agebench eval --model NAME-fold{k}`` scores it with the
same code as every other model, and the summary says which command to run. ``resume``
continues from each fold's last checkpoint and skips the folds already exported.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from agebench.benchmarks.registry import get_benchmark
from agebench.benchmarks.spec import Record
from agebench.core.atomic import read_json, write_json_atomic, write_lines_atomic
from agebench.core.config import ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.core.types import QuantizeTarget
from agebench.findings import fold_images_digest
from agebench.models.catalog import resolve_model
from agebench.runner import sink
from agebench.runner.ownership import RunIdentity, claim, owned_folder
from agebench.training.backbone import Backbone, describe, load_backbone
from agebench.training.batches import cores, extract_features, torch_threads
from agebench.training.config import TrainConfig, TrainResult, json_ready, training_data
from agebench.training.crops import CropCache, CropSource, crop_cache
from agebench.training.heads import Head
from agebench.training.losses import build_loss
from agebench.training.protocol import Fold, plan_folds
from agebench.training.report import write_train_report
from agebench.training.trainer import EpochMetrics, Trainer, TrainOptions

Progress = Callable[[str, int], None]
EpochCallback = Callable[[str, EpochMetrics], None]


class Exporter(Protocol):
    """``agebench.training.export.export_trained``'s signature."""

    def __call__(
        self,
        backbone: Backbone,
        head: Head,
        *,
        name: str,
        training: Mapping[str, Any],
        home: Path | None = None,
        quantize: Sequence[QuantizeTarget] = (),
    ) -> Any: ...


def default_exporter() -> Exporter:
    """The export step: ONNX, the conversion gate, registration."""
    from agebench.training.export import export_trained

    return export_trained


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AgebenchError("--device cuda: torch sees no CUDA GPU")
    return device


class TrainRun:
    """One ``agebench train`` run; ``run`` trains, exports and writes every fold."""

    def __init__(self, config: TrainConfig, exporter: Exporter | None = None) -> None:
        self.config = config
        self.exporter = exporter
        self.device = _device(config.device)

    def _claim(self) -> None:
        """A run folder belongs to one configuration: resumed, never silently mixed. Called
        with the folder held; writes the run's identity (``run.json``) before any work."""
        cfg = self.config
        recorded = read_json(cfg.out / "config.json")
        run_file = cfg.out / sink.RUN_FILE
        if (recorded is not None or run_file.exists()) and not cfg.resume:
            raise AgebenchError(
                f"{cfg.out}: a training run of this name exists (--resume continues it, "
                "or choose another --name)"
            )
        if isinstance(recorded, dict) and not run_file.exists():  # a folder from before run.json
            write_json_atomic(
                run_file, RunIdentity("train", {"config": recorded.get("config")}).as_json()
            )
        claim(
            cfg.out,
            RunIdentity("train", {"config": cfg.as_json()}),
            resume=True,
            hint="--resume continues a run with its own settings; choose another --name",
        )

    def run(
        self, *, progress: Progress | None = None, on_epoch: EpochCallback | None = None
    ) -> TrainResult:
        """Hold the run folder for the whole run (a second run of this name is refused, naming
        the first), then train, export and write every fold."""
        cfg = self.config
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise AgebenchError("--epochs and --batch-size must be at least 1")
        build_loss(cfg.loss, **cfg.loss_options)  # a bad loss fails before any work
        with owned_folder(cfg.out):
            self._claim()
            return self._run(progress, on_epoch)

    def _run(self, progress: Progress | None, on_epoch: EpochCallback | None) -> TrainResult:
        cfg = self.config
        bench = get_benchmark(cfg.bench)
        data = training_data(cfg)
        backbone = load_backbone(cfg.backbone, like=cfg.like)
        spec = resolve_model(cfg.like if cfg.like else cfg.backbone)
        source = CropSource(bench, data, cfg.root, spec, cfg.faces, dict(cfg.options))
        cache = crop_cache(source, execution=ExecutionConfig(device="cpu"))
        plan = plan_folds(
            bench.name,
            data.records,
            protocol=cfg.protocol,
            seed=cfg.seed,
            usable=cache.usable,
            only=cfg.only_folds,
        )
        training = {
            "bench": bench.name,
            "benchmark_version": bench.version,
            "data_fingerprint": source.fingerprint(),
            "protocol": cfg.protocol,
            "split": data.split,
            "folds": cfg.folds if cfg.protocol == "kfold" else None,
            "seed": cfg.seed,
            "loss": cfg.loss,
            "loss_options": json_ready(cfg.loss_options),
            "backbone": backbone.name,
            "epochs": cfg.epochs,
        }
        cfg.out.mkdir(parents=True, exist_ok=True)
        record = {
            "config": cfg.as_json(),
            "backbone": describe(backbone),
            "crops": {
                "cache": str(cache.path),
                "records": len(cache.records),
                "usable": len(cache.usable),
                "missing": cache.missing,
                "build_seconds": cache.build_seconds,
            },
            "problems": [str(p) for p in data.problems],
            "training": training,
        }
        write_json_atomic(cfg.out / "config.json", record)
        options = TrainOptions(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            patience=cfg.patience,
            seed=cfg.seed,
            device=self.device,
            freeze_backbone=cfg.freeze_backbone,
            augment=not cfg.freeze_backbone,
            threads=cfg.threads,
            resume=cfg.resume,
        )
        relay = _relay(progress, plan, cfg)
        frozen: list[torch.Tensor] = []

        def features() -> torch.Tensor | None:
            """A frozen backbone's features of every usable crop, computed once for all folds
            (they do not change: no augmentation, no backbone update) on the first fold that
            trains; a fold uses only its own rows of them."""
            if not cfg.freeze_backbone:
                return None
            if not frozen:
                with torch_threads(cfg.threads or cores()):
                    frozen.append(
                        extract_features(
                            backbone,
                            cache.crops,
                            np.asarray(cache.usable),
                            batch_size=cfg.batch_size,
                            device=self.device,
                        )
                    )
            return frozen[0]

        results = [
            self._fold(
                fold,
                plan,
                backbone,
                cache,
                options,
                {**training, "test_images": _test_images(data.records, fold.name)},
                relay,
                on_epoch,
                features,
            )
            for fold in plan
        ]
        return self._finish(results, training)

    def _fold(
        self,
        fold: Fold,
        plan: list[Fold],
        backbone: Backbone,
        cache: CropCache,
        options: TrainOptions,
        training: dict[str, Any],
        progress: Progress | None,
        on_epoch: EpochCallback | None,
        features: Callable[[], torch.Tensor | None],
    ) -> dict[str, Any]:
        cfg = self.config
        label = fold.name or "all"
        folder = cfg.out / (f"fold{fold.name}" if fold.name is not None else "model")
        done = read_json(folder / "result.json")
        if cfg.resume and isinstance(done, dict):
            if progress:
                progress("advance", _steps(fold, cfg))
            return done
        folder.mkdir(parents=True, exist_ok=True)
        images = {
            part: [cache.records[i]["image"] for i in getattr(fold, part)]
            for part in ("train", "val", "test")
        }
        write_json_atomic(folder / "split.json", images)
        model = backbone if cfg.freeze_backbone else copy.deepcopy(backbone)
        loss = build_loss(cfg.loss, **cfg.loss_options)
        torch.manual_seed(cfg.seed)  # the head's initial weights
        head = loss.head(model.dim)
        history: list[dict[str, Any]] = []

        def epoch_done(metrics: EpochMetrics) -> None:
            history.append(asdict(metrics))
            write_lines_atomic(folder / "metrics.jsonl", json_ready(history))
            if on_epoch:
                on_epoch(label, metrics)

        trainer = Trainer(model, head, loss, options, checkpoints=folder / "checkpoints")
        fit = trainer.fit(
            cache.crops,
            cache.ages,
            fold.train,
            fold.val,
            features=features(),
            progress=progress,
            on_epoch=epoch_done,
        )
        # all epochs (a resumed fold's earlier ones included) from the checkpoint's history
        write_lines_atomic(folder / "metrics.jsonl", json_ready(fit.history))
        name = f"{cfg.name}{fold.suffix}"
        fold_training = {
            **training,
            "train_folds": sorted({f.name for f in plan if f.name is not None} - {fold.name}),
            "test_fold": fold.name,
            "images": {part: len(getattr(fold, part)) for part in ("train", "val", "test")},
            "best_epoch": fit.best_epoch,
            "best_val_mae": fit.best_val_mae,
        }
        exporter = self.exporter or default_exporter()
        exported = exporter(
            model, head, name=name, training=fold_training, home=cfg.home, quantize=cfg.quantize
        )
        result = {
            "fold": label,
            "model": name,
            "best_epoch": fit.best_epoch,
            "best_val_mae": fit.best_val_mae,
            "start_val_mae": fit.start_val_mae,
            "epochs_run": len(fit.history),
            "stopped_early": fit.stopped_early,
            "images": fold_training["images"],
            "images_per_second": [m.images_per_second for m in fit.history],
            "train_seconds": sum(m.seconds for m in fit.history),
            "export": json_ready(exported),
        }
        write_json_atomic(folder / "result.json", json_ready(result))
        return result

    def _finish(self, results: list[dict[str, Any]], training: dict[str, Any]) -> TrainResult:
        cfg = self.config
        scope = [
            f"--bench {cfg.bench}",
            f"--root {cfg.root}",
            *([f"--protocol {cfg.protocol}"] if cfg.protocol else []),
            *([f"--folds {cfg.folds} --seed {cfg.seed}"] if cfg.protocol == "kfold" else []),
        ]
        summary = {
            "name": cfg.name,
            "out": str(cfg.out),
            "training": training,
            "folds": results,
            "models": [r["model"] for r in results],
            "evaluate": _eval_commands(scope, results, cfg.protocol is not None, cfg.name),
            "note": (
                "the test folds are not scored here: agebench eval scores them, each fold's "
                "records by the model that never saw them ('--model NAME-fold{fold}')"
            ),
        }
        write_json_atomic(cfg.out / "summary.json", json_ready(summary))
        histories = {
            r["fold"]: _read_lines(cfg.out / _fold_folder(r["fold"]) / "metrics.jsonl")
            for r in results
        }
        write_train_report(cfg.out / "report.html", summary, histories)
        return TrainResult(
            cfg.out.resolve(),
            [str(r["model"]) for r in results],
            {r["fold"]: float(r["best_val_mae"]) for r in results},
            summary,
        )


def _test_images(records: Sequence[Record], fold: str | None) -> str | None:
    """The digest of a fold's images (every record of it, usable or not: eval scores them
    all), by which eval's findings know the images a model is scored on are its test fold."""
    if fold is None:
        return None
    return fold_images_digest(r.image for r in records if r.fold == fold)


def _eval_commands(
    scope: list[str], results: list[dict[str, Any]], per_fold: bool, name: str
) -> list[str]:
    """The eval commands that score the test folds: one over every fold (eval deals the same
    folds, and its ``{fold}`` picks each fold's model), else one per model."""
    if per_fold:
        return [f"agebench eval {' '.join(scope)} --model {name}-fold{{fold}}"]
    return [f"agebench eval {' '.join(scope[:2])} --model {r['model']}" for r in results]


def _fold_folder(label: str) -> str:
    return "model" if label == "all" else f"fold{label}"


def _read_lines(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _steps(fold: Fold, cfg: TrainConfig) -> int:
    return math.ceil(len(fold.train) / cfg.batch_size) * cfg.epochs


def _relay(progress: Progress | None, plan: list[Fold], cfg: TrainConfig) -> Progress | None:
    """One bar over every fold's batches: each trainer's own "total" is replaced by the run's."""
    if progress is None:
        return None
    progress("total", sum(_steps(fold, cfg) for fold in plan))

    def relay(event: str, amount: int) -> None:
        if event != "total":
            progress(event, amount)

    return relay


def run_training(
    config: TrainConfig,
    *,
    progress: Progress | None = None,
    on_epoch: EpochCallback | None = None,
    exporter: Exporter | None = None,
) -> TrainResult:
    return TrainRun(config, exporter).run(progress=progress, on_epoch=on_epoch)


__all__ = ["TrainConfig", "TrainResult", "TrainRun", "run_training"]
