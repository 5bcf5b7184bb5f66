"""A parsed Keras graph -> ONNX (through the PyTorch rebuild and the shared passes), and the
whole conversion of a ``.keras`` file with the reference the gate checks it against."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from agebench.build.convert import Conversion, Reference
from agebench.build.convert.keras_graph.archive import KerasGraphError, read_keras_archive
from agebench.build.convert.keras_graph.graph import parse_graph
from agebench.build.convert.keras_graph.keras_reference import KerasReference, keras_available
from agebench.build.convert.keras_graph.ops import KerasGraph, Shape
from agebench.build.convert.keras_graph.reference import numpy_reference
from agebench.build.convert.keras_graph.torch_net import build_torch_module
from agebench.build.convert.passes import fold_constants, fuse_pads_into_convs
from agebench.build.convert.torch_export import export_torchscript, write_checked


def export_onnx(
    graph: KerasGraph,
    onnx_path: str | os.PathLike[str],
    *,
    input_name: str = "images",
    output_name: str = "age",
    opset: int = 17,
) -> dict[str, Any]:
    """Build the PyTorch module, export it with a dynamic batch ``N``, fold pads, check it."""
    import onnx
    import torch

    module = build_torch_module(graph)
    height, width, channels = graph.input_shape
    example = torch.zeros(2, channels, height, width)
    model = onnx.load_from_string(
        export_torchscript(
            module, example, input_name=input_name, output_names=[output_name], opset=opset
        )
    )
    constants_folded = fold_constants(model)
    fused = fuse_pads_into_convs(model)
    model.doc_string = "converted from a Keras 3 archive by agebench.build.convert.keras_graph"
    for key, value in (
        ("agebench.source_sha256", graph.sha256 or ""),
        ("agebench.source_keras_version", str(graph.metadata.get("keras_version", ""))),
        ("agebench.input_layout", "NCHW"),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    data = write_checked(model, onnx_path)
    histogram = Counter(node.op_type for node in model.graph.node)
    return {
        "nodes": len(model.graph.node),
        "op_histogram": dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
        "batchnorm_folded": module.folded,
        "constants_folded": constants_folded,
        "pads_fused_into_conv": fused,
        "opset": opset,
        "bytes": len(data),
    }


def convert_keras_archive(
    path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    input_name: str = "images",
    output_name: str = "age",
    reference: str = "auto",
    opset: int = 17,
    input_hw: tuple[int, int] | None = None,
) -> Conversion:
    """Convert a Keras 3 ``.keras`` image model to ONNX (NCHW float32 input, batch ``N``).

    ``reference``: ``"keras"`` (Keras 3 in a subprocess), ``"numpy"`` (this module's float64
    forward) or ``"auto"`` (Keras when installed, else NumPy).
    """
    if reference not in ("auto", "keras", "numpy"):
        raise ValueError(f"reference must be auto, keras or numpy, got {reference!r}")
    archive = read_keras_archive(path)
    graph = parse_graph(archive, input_hw=input_hw)
    notes = export_onnx(
        graph, onnx_path, input_name=input_name, output_name=output_name, opset=opset
    )
    use_keras = reference == "keras" or (reference == "auto" and keras_available())
    if reference == "keras" and not keras_available():
        raise KerasGraphError("reference='keras' but Keras 3 is not installed")
    ref: Reference = (
        KerasReference(path, output_name=output_name)
        if use_keras
        else numpy_reference(graph, output_name=output_name)
    )
    height, width, channels = graph.input_shape
    notes.update(
        exporter="agebench keras_graph -> PyTorch -> torch.onnx (TorchScript)",
        source=Path(path).name,
        source_sha256=archive.sha256,
        keras_version=archive.metadata.get("keras_version"),
        input_layout="NCHW",
        input_shape=["N", channels, height, width],
        output=[output_name, ["N", *graph_output_shape(graph)]],
        layers=len(graph.ops),
        skipped_layers=list(graph.skipped),
        parameters=int(sum(a.size for arrays in archive.weights.values() for a in arrays)),
        reference="keras (safe_mode, torch backend, subprocess)" if use_keras else "numpy float64",
    )
    return Conversion(onnx_path=Path(onnx_path), reference=ref, notes=notes)


def graph_output_shape(graph: KerasGraph) -> Shape:
    if graph.output == graph.input_name:
        return graph.input_shape
    shape = next(op.out_shape for op in graph.ops if op.name == graph.output)
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
