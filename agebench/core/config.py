"""How a model runs, one frozen value for every front end: :class:`ExecutionConfig`.

Predict, eval, compare, bench, the Python API and quantize's calibration all choose the same
six things (device, backend, precision, tuning, batch size, worker threads). They once carried
them as six loose fields each, checked in three places; now each holds one
``ExecutionConfig``, checked when it is made, so a config that exists is a valid one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from agebench.core.types import (
    BACKENDS,
    DEVICES,
    EXECUTORS,
    PRECISIONS,
    TUNINGS,
    Backend,
    Device,
    Executor,
    Precision,
    Tuning,
)


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """A ``ValueError`` naming the option when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")


def check_range(name: str, value: float | None, low: float, high: float | None = None) -> None:
    """A ``ValueError`` naming the option when ``value`` (None: unset) is below ``low`` or
    above ``high``; the bounds the command line's ``IntRange``/``FloatRange`` enforce."""
    if value is not None and (value < low or (high is not None and value > high)):
        bound = f"at least {low:g}" if high is None else f"within {low:g}..{high:g}"
        raise ValueError(f"{name}={value!r}: must be {bound}")


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how the graph runs, and how many threads feed it.

    Defaults are the commands': the runner's ``tuning="auto"`` (the fastest settings measured
    on this machine), not the ``Predictor``'s library default ("manifest").
    """

    device: Device = "auto"
    backend: Backend = "auto"
    precision: Precision = "auto"
    tuning: Tuning = "auto"
    #: faces per model call; None: the engine's preferred batch (64 on a CPU, 256 on a GPU)
    batch_size: int | None = None
    #: decode/detect threads; None: one per core
    workers: int | None = None

    def __post_init__(self) -> None:
        check_choice("device", self.device, DEVICES)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("tuning", self.tuning, TUNINGS)
        check_range("batch_size", self.batch_size, 1)
        check_range("workers", self.workers, 1)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ExecutionConfig:
        """The config of a call's keyword options, taken by their field names (other keys,
        the call's other options, are not looked at)."""
        return cls(**{name: options[name] for name in EXECUTION_FIELDS})

    def as_options(self) -> dict[str, Any]:
        """The keyword options this config is made of (``from_options``' inverse): how a
        front end hands it to the public API, whose documented signatures take them loose."""
        return {name: getattr(self, name) for name in EXECUTION_FIELDS}


#: the option names an ``ExecutionConfig`` is made of (the API's and the CLI's keywords)
EXECUTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ExecutionConfig))

#: reproducible CPU inference at the manifest's settings: what gates and quantize's
#: calibration run (no tuning measured, nothing cached, the same on every machine), with one
#: preparing thread, as calibration cuts its crops one image at a time
REFERENCE_CPU = ExecutionConfig(device="cpu", tuning="manifest", workers=1)


@dataclass(frozen=True)
class ClusterConfig:
    """Which executor runs a predict or eval, and what it may take of a Ray cluster.

    Kept apart from :class:`ExecutionConfig` and from the run's settings: where images were
    processed changes neither a run's identity nor its numbers, so a run started by one
    executor is resumed by the other and ``compare`` pairs runs of both.
    """

    executor: Executor = "local"
    #: None: start a Ray instance on this machine; "auto": the cluster this machine is part
    #: of; "ray://HOST:10001": a remote cluster's client server
    ray_address: str | None = None
    #: logical CPUs each decode/detect worker holds
    cpus_per_worker: float = 1.0
    #: GPUs each inference actor holds; None: 1 when the cluster has GPUs and the device
    #: allows them, else 0 (CPU actors)
    gpus_per_worker: float | None = None
    #: inference actors; None: one per GPU, or one per node on CPUs
    inference_actors: int | None = None
    #: images handed to Ray at once: the driver holds at most this many jobs in memory
    window: int = 100_000

    def __post_init__(self) -> None:
        check_choice("executor", self.executor, EXECUTORS)
        check_range("cpus_per_worker", self.cpus_per_worker, 0.01)
        check_range("gpus_per_worker", self.gpus_per_worker, 0.0)
        check_range("inference_actors", self.inference_actors, 1)
        check_range("window", self.window, 1)
        if self.executor == "local" and self.ray_address is not None:
            raise ValueError("ray_address: only with executor='ray'")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ClusterConfig:
        """The config of a call's keyword options, by field name (absent ones: defaults)."""
        return cls(**{name: options[name] for name in CLUSTER_FIELDS if name in options})

    def as_options(self) -> dict[str, Any]:
        """The keyword options (``from_options``' inverse) a front end hands the API; the
        driver's ``window`` is not one."""
        return {name: getattr(self, name) for name in CLUSTER_FIELDS if name != "window"}

    @property
    def is_local(self) -> bool:
        return self.executor == "local"


#: the option names a ``ClusterConfig`` is made of (the API's and the CLI's keywords)
CLUSTER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ClusterConfig))

#: today's runner: threads in this process
LOCAL = ClusterConfig()
