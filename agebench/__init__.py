"""agebench: batch inference and reproducible evaluation of facial age estimation models.

The public Python API (see README, "Python API")::

    import agebench
    faces = agebench.load().predict("photo.jpg")            # ages in memory
    result = agebench.predict("photos/", "reports/run")     # agebench predict, as a call
    agebench.evaluate("utkface", "data/UTKFace-root")       # agebench eval
    agebench.compare(["run-a", "run-b"])                    # agebench compare
    agebench.train("fgnet", "FGNET", backbone=..., loss="dex", name="mine")  # agebench train
    agebench.load_run("reports/run").to_pandas()            # any finished folder
    agebench.models.list(), agebench.benches.list()         # what is installed, as data

Names load on first use (a module ``__getattr__``): ``import agebench`` imports no model
runtime (onnxruntime, torch, OpenCV), so a command line or a notebook starts at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agebench.core.version import __version__

#: public name -> the module defining it (``None``: the name is that submodule itself)
_EXPORTS: dict[str, str | None] = {
    "load": "agebench.api",
    "predict": "agebench.api",
    "evaluate": "agebench.api",
    "compare": "agebench.api",
    "train": "agebench.api",
    "AgeEstimator": "agebench.api",
    "Face": "agebench.api",
    "load_run": "agebench.api_results",
    "PredictResult": "agebench.api_results",
    "EvalResult": "agebench.api_results",
    "CompareResult": "agebench.api_results",
    "TargetMetrics": "agebench.api_results",
    "ModelRef": "agebench.api_results",
    "AgebenchError": "agebench.core.errors",
    "models": None,
    "benches": None,
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover - what type checkers and editors see
    from agebench import benches as benches
    from agebench import models as models
    from agebench.api import AgeEstimator as AgeEstimator
    from agebench.api import Face as Face
    from agebench.api import compare as compare
    from agebench.api import evaluate as evaluate
    from agebench.api import load as load
    from agebench.api import predict as predict
    from agebench.api import train as train
    from agebench.api_results import CompareResult as CompareResult
    from agebench.api_results import EvalResult as EvalResult
    from agebench.api_results import ModelRef as ModelRef
    from agebench.api_results import PredictResult as PredictResult
    from agebench.api_results import TargetMetrics as TargetMetrics
    from agebench.api_results import load_run as load_run
    from agebench.core.errors import AgebenchError as AgebenchError


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and cache the name here."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agebench' has no attribute {name!r}")
    module_name = _EXPORTS[name]
    value = (
        importlib.import_module(f"agebench.{name}")
        if module_name is None
        else getattr(importlib.import_module(module_name), name)
    )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
