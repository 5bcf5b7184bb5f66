"""The training loop: a backbone and a loss's head over the crop cache, torch only.

AdamW with a linear warm-up then a cosine decay per step; augmentation on the tensors (flip,
a small affine jitter, colour jitter), so the cache's uint8 crops are the only data read.
Each epoch ends with the validation MAE, decoded by the manifest decoder the head exports to
(the numbers eval will compute, never a training-only decoding); the best epoch's weights are
kept and restored at the end, and training stops after ``patience`` epochs without a better
one. With ``freeze_backbone`` only the head trains: the backbone's features are computed once
(``extract_features``), without augmentation, which makes CPU experiments cheap.

Every epoch writes one checkpoint atomically (weights, optimiser, scheduler, random states,
history, best weights), so ``resume`` continues an interrupted run to the same weights and
metrics as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agebench.core.atomic import write_file_atomic
from agebench.core.errors import AgebenchError
from agebench.training.backbone import Backbone
from agebench.training.batches import (
    Batches,
    autocast,
    cores,
    extract_features,
    predict_ages,
    torch_threads,
)
from agebench.training.heads import Head
from agebench.training.losses import TrainLoss

CHECKPOINT = "last.pt"
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    #: the share of all steps spent warming the learning rate up from 0
    warmup: float = 0.05
    patience: int = 5
    seed: int = 0
    device: str = "cpu"
    freeze_backbone: bool = False
    augment: bool = True
    #: NHWC memory for the convolutions: dlib-age-v1 on one CPU thread trains at about 145
    #: images/s with it against 128 without (48 UTKFace chips, batch 16), the same weights
    channels_last: bool = True
    #: CPU threads (None: every core this process may use)
    threads: int | None = None
    resume: bool = False


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_mae: float
    lr: float
    images_per_second: float
    seconds: float
    best: bool


@dataclass(frozen=True)
class FitResult:
    history: list[EpochMetrics]
    best_epoch: int
    best_val_mae: float
    #: the validation MAE of the untrained head (epoch 0), for scale
    start_val_mae: float
    stopped_early: bool
    resumed_from: int


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class Trainer:
    """One model's training: ``fit`` runs (or resumes) it and leaves the best weights loaded."""

    def __init__(
        self,
        backbone: Backbone,
        head: Head,
        loss: TrainLoss,
        options: TrainOptions,
        *,
        checkpoints: Path | None = None,
    ) -> None:
        self.backbone, self.head, self.loss, self.options = backbone, head, loss, options
        self.checkpoints = checkpoints
        self.device = torch.device(options.device)

    def _trained(self) -> nn.Module:
        """What the optimiser updates and the checkpoint holds."""
        if self.options.freeze_backbone:
            return self.head
        return nn.ModuleDict({"backbone": self.backbone, "head": self.head})

    def fit(
        self,
        crops: np.ndarray,
        ages: np.ndarray,
        train: np.ndarray,
        val: np.ndarray,
        *,
        features: torch.Tensor | None = None,
        progress: Progress | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
    ) -> FitResult:
        """Train on the records ``train`` (indices into ``crops``/``ages``), select on ``val``.
        ``features``: the frozen backbone's, from :func:`extract_features` (computed here
        when the backbone is frozen and none are given)."""
        opts = self.options
        if len(train) == 0 or len(val) == 0:
            raise AgebenchError("training needs at least one training and one validation record")
        with torch_threads(opts.threads or cores()):
            if opts.freeze_backbone and features is None:
                both = np.concatenate([train, val])
                features = extract_features(
                    self.backbone, crops, both, batch_size=opts.batch_size, device=opts.device
                )
            return self._fit(crops, ages, train, val, features, progress, on_epoch)

    def _fit(
        self,
        crops: np.ndarray,
        ages: np.ndarray,
        train: np.ndarray,
        val: np.ndarray,
        features: torch.Tensor | None,
        progress: Progress | None,
        on_epoch: Callable[[EpochMetrics], None] | None,
    ) -> FitResult:
        opts, device = self.options, self.device
        torch.manual_seed(opts.seed)
        generator = torch.Generator().manual_seed(opts.seed)
        self.backbone.requires_grad_(not opts.freeze_backbone)
        model = self._trained().to(device)
        self.backbone.to(device)
        channels_last = opts.channels_last and features is None
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        batches = Batches(self.backbone, crops, features, device, channels_last)
        targets = torch.as_tensor(np.asarray(ages, dtype=np.float32))
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
        steps = math.ceil(len(train) / opts.batch_size)
        total = steps * opts.epochs
        warmup = max(1, round(opts.warmup * total)) if opts.warmup > 0 else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(warmup, total))
        state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_mae": math.inf}
        state["bad"], state["stopped"] = 0, False
        loaded = self._load(model, optimiser, scheduler, generator) if opts.resume else None
        resumed_from = 0
        if loaded is not None:
            state, resumed_from = loaded, int(loaded["epoch"])
        else:
            self._eval_mode()
            state["start_mae"] = self._val_mae(batches, ages, val)
        if progress:
            progress("total", total)
            progress("advance", state["epoch"] * steps)
        while state["epoch"] < opts.epochs and not state["stopped"]:
            started = time.perf_counter()
            self._train_mode()
            order = train[torch.randperm(len(train), generator=generator).numpy()]
            total_loss = 0.0
            for start in range(0, len(order), opts.batch_size):
                index = order[start : start + opts.batch_size]
                x = batches.input(index, generator if opts.augment and features is None else None)
                with autocast(device):
                    out = batches.forward(self.head, x)
                value = self.loss(out, targets[torch.as_tensor(index)].to(device))
                optimiser.zero_grad(set_to_none=True)
                value.backward()
                optimiser.step()
                scheduler.step()
                total_loss += float(value.detach()) * len(index)
                if progress:
                    progress("advance", 1)
            seconds = time.perf_counter() - started
            self._eval_mode()
            mae = self._val_mae(batches, ages, val)
            best = mae < state["best_mae"]
            if best:
                state["best"], state["best_mae"], state["bad"] = _snapshot(model), mae, 0
            else:
                state["bad"] += 1
            state["epoch"] += 1
            metrics = EpochMetrics(
                epoch=state["epoch"],
                train_loss=total_loss / len(order),
                val_mae=mae,
                lr=float(scheduler.get_last_lr()[0]),
                images_per_second=len(order) / seconds,
                seconds=seconds,
                best=best,
            )
            state["history"].append(asdict(metrics))
            state["stopped"] = state["bad"] >= opts.patience and state["epoch"] < opts.epochs
            self._save(model, optimiser, scheduler, generator, state)
            if on_epoch:
                on_epoch(metrics)
        model.load_state_dict(state["best"])
        self._eval_mode()
        history = [EpochMetrics(**row) for row in state["history"]]
        best_epoch = next(m.epoch for m in history if m.val_mae == state["best_mae"])
        return FitResult(
            history,
            best_epoch,
            float(state["best_mae"]),
            float(state["start_mae"]),
            bool(state["stopped"]),
            resumed_from,
        )

    def _train_mode(self) -> None:
        self.head.train()
        # a frozen backbone stays in eval mode: its batch-norm statistics are the model's
        self.backbone.train(not self.options.freeze_backbone)

    def _eval_mode(self) -> None:
        self.head.eval()
        self.backbone.eval()

    def _val_mae(self, batches: Batches, ages: np.ndarray, val: np.ndarray) -> float:
        predicted = predict_ages(batches, self.head, val, self.options.batch_size)
        return float(np.mean(np.abs(predicted - np.asarray(ages, dtype=np.float64)[val])))

    def _save(
        self,
        model: nn.Module,
        optimiser: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
        state: dict[str, Any],
    ) -> None:
        if self.checkpoints is None:
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        payload = {
            **state,
            "model": _snapshot(model),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        write_file_atomic(self.checkpoints / CHECKPOINT, lambda path: torch.save(payload, path))

    def _load(
        self,
        model: nn.Module,
        optimiser: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
    ) -> dict[str, Any] | None:
        """The saved state restored into the live objects; None when there is no checkpoint."""
        path = None if self.checkpoints is None else self.checkpoints / CHECKPOINT
        if path is None or not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(payload.pop("model"))
            optimiser.load_state_dict(payload.pop("optimiser"))
            scheduler.load_state_dict(payload.pop("scheduler"))
        except (RuntimeError, KeyError, ValueError) as error:
            raise AgebenchError(f"{path}: cannot resume from this checkpoint: {error}") from None
        generator.set_state(payload.pop("generator"))
        torch.set_rng_state(payload.pop("torch_rng"))
        cuda = payload.pop("cuda_rng")
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        return dict(payload)
