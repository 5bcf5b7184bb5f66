"""Converters: source-framework weights -> ONNX, each with an independent reference forward.

Every converter returns a ``Conversion``: the ONNX file it wrote and a ``reference`` callable
that runs the *source* model (or an implementation independent of the exporter) on the same
preprocessed input tensor, so the gate can prove the ONNX graph faithful.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: preprocessed input batch (the layout the ONNX graph takes) -> output name -> array
Reference = Callable[[np.ndarray], Mapping[str, np.ndarray]]


@dataclass
class Conversion:
    onnx_path: Path
    reference: Reference
    #: what the gate's report should say about how the graph was made (exporter, node count...)
    notes: dict[str, Any] = field(default_factory=dict)
