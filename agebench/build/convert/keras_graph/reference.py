"""The float64 NumPy forward of a parsed graph, in Keras' own NHWC layout: the gate's
reference when Keras itself is not installed. Each op runs its layer rule's ``forward``,
written from Keras' semantics and independent of the PyTorch rebuild."""

from __future__ import annotations

import numpy as np

from agebench.build.convert import Reference
from agebench.build.convert.keras_graph.archive import KerasGraphError
from agebench.build.convert.keras_graph.layers import LAYERS
from agebench.build.convert.keras_graph.ops import KerasGraph


def numpy_forward(graph: KerasGraph, images_nhwc: np.ndarray) -> np.ndarray:
    """Run the graph in float64 NumPy on an (N, H, W, C) batch, as Keras lays it out."""
    x = np.asarray(images_nhwc, dtype=np.float64)
    if x.ndim != 4 or x.shape[1:] != graph.input_shape:
        raise KerasGraphError(f"input {x.shape}; expected (N, {graph.input_shape})")
    values = {graph.input_name: x}
    remaining = graph.consumers()
    for op in graph.ops:
        values[op.name] = LAYERS[op.kind].forward(op, [values[t] for t in op.inputs])
        for t in op.inputs:  # free what no later op reads
            remaining[t] -= 1
            if remaining[t] == 0:
                values.pop(t, None)
    return values[graph.output]


def numpy_reference(graph: KerasGraph, *, output_name: str = "age") -> Reference:
    """A ``Reference`` taking the ONNX graph's NCHW input."""

    def reference(images_nchw: np.ndarray) -> dict[str, np.ndarray]:
        nhwc = np.transpose(np.asarray(images_nchw), (0, 2, 3, 1))
        return {output_name: numpy_forward(graph, nhwc)}

    return reference
