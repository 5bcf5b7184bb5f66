"""What ``agebench train`` is asked (``TrainConfig``), the data it reads, and what it returns.

Kept apart from the run (``run``) so that the API, the CLI and the tests that only need the
settings or the folds (``training_data``: the folds eval reads too) do not load the loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from agebench.benchmarks.registry import get_benchmark
from agebench.benchmarks.spec import BenchmarkData, LoadOptions
from agebench.core.types import FacesMode, QuantizeTarget


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``agebench train`` was asked; ``config.json`` records it."""

    bench: str
    root: Path
    backbone: str
    loss: str
    name: str
    protocol: str | None = None
    split: str | None = None
    labels: Path | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    faces: FacesMode | None = None
    folds: int = 5
    #: train only these folds (labels); all when empty
    only_folds: tuple[str, ...] = ()
    #: a torch factory backbone's input and crop policy: this registered model's
    like: str | None = None
    loss_options: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    resume: bool = False
    freeze_backbone: bool = False
    quantize: tuple[QuantizeTarget, ...] = ()
    out_root: Path = Path("reports")
    home: Path | None = None

    @property
    def out(self) -> Path:
        return self.out_root / "train" / self.name

    def as_json(self) -> dict[str, Any]:
        """The settings that decide the result (``resume`` and where outputs go do not)."""
        skip = {"resume", "out_root", "home", "threads"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return json_ready(out)


def json_ready(value: Any) -> Any:
    """Paths as strings, mappings as dicts, tuples as lists, dataclasses as their fields."""
    if is_dataclass(value) and not isinstance(value, type):
        return json_ready(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class TrainResult:
    out: Path
    #: the registered model names, one per fold
    models: list[str]
    #: fold label ("all" without a protocol) -> best validation MAE
    best_val_mae: dict[str, float]
    summary: dict[str, Any]


def training_data(config: TrainConfig) -> BenchmarkData:
    """The benchmark's records with the folds it deals under ``--protocol`` (its own
    protocol's or a generic one's): the very folds ``agebench eval`` reads with the same
    options, so that ``--model NAME-fold{fold}`` scores each fold by its own model."""
    return get_benchmark(config.bench).load(LoadOptions.of(config))
