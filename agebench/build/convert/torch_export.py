"""PyTorch module -> ONNX bytes, and the checked write of a finished graph: one way for every
converter, so that all of them export with the same exporter, batch axis and checks.

The TorchScript exporter (``dynamo=False``) is used throughout: it needs no onnxscript, and its
graphs, after the passes of :mod:`agebench.build.convert.passes`, are the smallest (for the
WRN: 47 nodes, where ``dynamo=True`` left 49 with the same parity to 1e-7).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the symbolic batch dimension of every exported input and output
BATCH_AXIS = "N"


def export_torchscript(
    module: Any,
    example: Any,
    *,
    input_name: str,
    output_names: Sequence[str],
    opset: int,
) -> bytes:
    """Export ``module`` traced on ``example`` with a dynamic batch on the input and every output.

    The exporter's own constant folding is on; its notices (the TorchScript exporter's
    deprecation, "Constant folding ... Slice") are silenced, since they say nothing about the
    graph.
    """
    import torch

    buffer = io.BytesIO()
    dynamic = {name: {0: BATCH_AXIS} for name in (input_name, *output_names)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            # torch.onnx.export is annotated with paths only, but the TorchScript exporter
            # (dynamo=False) writes through _export_file, typed io.BytesIO | str
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def write_checked(model: Any, onnx_path: str | os.PathLike[str]) -> bytes:
    """Check ``model`` fully (shapes and types included) and write it whole or not at all.

    Returns the bytes written. The temporary ``<name>.part`` beside the target is renamed over
    it, so a reader never sees half a graph.
    """
    import onnx

    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(onnx_path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(onnx_path)
    return data
