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
    PRECISIONS,
    TUNINGS,
    Backend,
    Device,
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
