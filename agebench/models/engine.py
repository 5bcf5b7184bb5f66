"""What the predictor asks of whatever runs a graph: the ``Engine`` protocol.

Two engines exist: onnxruntime (``ort_engine.OrtEngine``, CPU lanes or a CUDA/TensorRT
provider) and the same graph converted to torch (``torch_engine.TorchEngine``, for GPUs without
onnxruntime-gpu). The predictor and the runner depend on this protocol only, so a third engine
is a class with these members, not another branch on a type.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


class Engine(Protocol):
    """Runs one ONNX graph: ``provider`` names what took it, ``lanes`` how many calls may run
    at once (several single-threaded lanes on a CPU, one on a GPU)."""

    provider: str
    on_gpu: bool
    lanes: int

    @property
    def input_names(self) -> list[str]: ...

    def input_shape(self, name: str) -> list[Any]: ...

    @property
    def output_names(self) -> list[str]: ...

    def run(self, input_name: str, tensor: Any, outputs: list[str]) -> list[np.ndarray]: ...

    def describe(self) -> dict[str, Any]:
        """The settings that ran the graph, for summaries."""
        ...


@runtime_checkable
class DeviceEngine(Engine, Protocol):
    """An engine that takes crops as they are and normalises them on its own device (torch
    on CUDA): the decode workers upload, the inference lanes only run the graph; with ready
    crops, JPEGs are even decoded and cut there (``runner/device_decode.py``)."""

    device: Any

    def prepare_input(self, faces: Any) -> Any: ...
