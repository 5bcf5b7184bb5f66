"""A model's ONNX graph as a torch module, by onnx2torch, for the torch engine.

onnx2torch 1.5 lacks two things agebench's own models use, filled in here with exact
equivalents: ``Pad`` from opset 18 (dlib-age-v1) and ``AveragePool`` with asymmetric pads
(Keras "same" pooling in WRN-16-8), which is rewritten into this module's own domain before
conversion. Anything else it cannot convert is one line naming the model and the op.
"""

from __future__ import annotations

import importlib.metadata
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from agebench.core.errors import AgebenchError

if TYPE_CHECKING:
    import onnx
    import torch

#: nodes rewritten for this module's converters live in this domain (in memory only)
DOMAIN = "agebench_torch"
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
_registered = False
_register_lock = threading.Lock()


def onnx2torch_version() -> str:
    """The installed onnx2torch's version, named in errors and in ``describe``."""
    return importlib.metadata.version("onnx2torch")


def _torch_pads(pads: list[int], rank: int, axes: list[int] | None) -> list[int]:
    """ONNX ``[b_1..b_n, e_1..e_n]`` over ``axes`` -> F.pad's ``[b_last, e_last, ...]``."""
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[len(axes) + i]
    out: list[int] = []
    for axis in reversed(range(rank)):
        out += [begin[axis], end[axis]]
    while out and out[-2:] == [0, 0]:  # leading axes left alone: F.pad's other modes need it
        out = out[:-2]
    return out


def _make_modules() -> tuple[type, type]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class StaticPad(nn.Module):
        """ONNX Pad with constant pads, resolved at conversion (no device sync per call)."""

        def __init__(self, pads: list[int], mode: str, value: float) -> None:
            super().__init__()
            self.pads, self.mode, self.value = pads, mode, value

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.mode == "constant":
                return F.pad(x, self.pads, mode="constant", value=self.value)
            return F.pad(x, self.pads, mode=self.mode)

    class AveragePool(nn.Module):
        """ONNX AveragePool with any explicit pads. Symmetric pads go to torch's pooling as
        they are; asymmetric ones are zero-padded explicitly, and without
        ``count_include_pad`` divided by the share of real pixels in each window (a pool of
        the padded ones mask), which is ONNX's divisor."""

        def __init__(
            self, kernel: list[int], strides: list[int], pads: list[int], include_pad: bool
        ) -> None:
            super().__init__()
            rank = len(kernel)
            self.kernel, self.strides, self.include_pad = kernel, strides, include_pad
            self.pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
            begin, end = pads[:rank], pads[rank:]
            self.symmetric = begin == end and all(
                2 * p <= k for p, k in zip(begin, kernel, strict=True)
            )
            self.padding = begin
            self.pads = _torch_pads(pads, rank + 2, list(range(2, rank + 2)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.symmetric:
                return self.pool(
                    x, self.kernel, self.strides, self.padding, count_include_pad=self.include_pad
                )
            out = self.pool(F.pad(x, self.pads), self.kernel, self.strides)
            if self.include_pad:
                return out
            ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
            return out / self.pool(F.pad(ones, self.pads), self.kernel, self.strides)

    return StaticPad, AveragePool


def _constant(name: str, graph: Any) -> list[Any] | None:
    """A constant input's values (an initializer or a Constant node), None when computed."""
    from onnx2torch.utils.common import get_const_value

    try:
        value = get_const_value(name, graph)
    except KeyError:
        return None
    return np.asarray(value.cpu() if hasattr(value, "cpu") else value).reshape(-1).tolist()


def _register_converters() -> None:
    """Add this module's converters to onnx2torch, once, only where it has none."""
    global _registered
    with _register_lock:
        if _registered:
            return
        from onnx import defs
        from onnx2torch.node_converters.pad import OnnxPadDynamic
        from onnx2torch.node_converters.registry import add_converter, get_converter
        from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

        static_pad, average_pool = _make_modules()

        def convert_pad(node: Any, graph: Any) -> Any:
            mode = node.attributes.get("mode", "constant")
            if mode not in _PAD_MODES:
                raise NotImplementedError(f"Pad mode {mode!r}")
            names = [*node.input_values, "", "", ""][:4]
            pads = _constant(names[1], graph)
            value = _constant(names[2], graph) if names[2] else [0.0]
            axes = _constant(names[3], graph) if names[3] else None
            if pads is None or value is None or (names[3] and axes is None):
                if names[3] or mode == "wrap":
                    raise NotImplementedError("Pad with computed pads and axes")
                module = OnnxPadDynamic(mode=_PAD_MODES[mode])  # onnx2torch's, as in opset 13
                return OperationConverterResult(
                    module, OnnxMapping(tuple(node.input_values), tuple(node.output_values))
                )
            shape = graph.value_info.get(names[0])
            if shape is None and axes is not None:
                raise NotImplementedError("Pad with axes on an input of unknown rank")
            rank = len(shape.type.tensor_type.shape.dim) if shape is not None else len(pads) // 2
            torch_pads = _torch_pads([int(p) for p in pads], rank, axes)
            if mode != "constant":  # torch pads exactly the spatial axes in these modes
                spatial = 2 * max(rank - 2, 1)
                if len(torch_pads) > spatial:
                    raise NotImplementedError(f"Pad mode {mode!r} on the batch or channel axis")
                torch_pads += [0] * (spatial - len(torch_pads))
            module = static_pad(torch_pads, _PAD_MODES[mode], float(value[0]))
            return OperationConverterResult(
                module, OnnxMapping((names[0],), tuple(node.output_values))
            )

        def convert_average_pool(node: Any, graph: Any) -> Any:
            attributes = node.attributes
            kernel = list(attributes["kernel_shape"])
            rank = len(kernel)
            auto_pad = attributes.get("auto_pad", "NOTSET")
            if rank > 3 or auto_pad not in ("NOTSET", "VALID"):
                raise NotImplementedError(f"AveragePool of rank {rank} with auto_pad {auto_pad}")
            dilated = any(d != 1 for d in attributes.get("dilations", []))
            if attributes.get("ceil_mode", 0) or dilated:
                raise NotImplementedError("AveragePool with ceil_mode or dilations")
            pads = [0] * 2 * rank if auto_pad == "VALID" else attributes.get("pads", [0] * 2 * rank)
            module = average_pool(
                kernel,
                list(attributes.get("strides", [1] * rank)),
                list(pads),
                bool(attributes.get("count_include_pad", 0)),
            )
            return OperationConverterResult(
                module, OnnxMapping(tuple(node.input_values), tuple(node.output_values))
            )

        def since_versions(op: str) -> list[int]:
            return sorted(
                {s.since_version for s in defs.get_all_schemas_with_history() if s.name == op}
            )

        def register(op: str, version: int, converter: Any, domain: str = "") -> None:
            try:
                get_converter(op, version, domain)
            except NotImplementedError:
                add_converter(op, version, domain)(converter)

        for version in since_versions("Pad"):
            if version >= 18:
                register("Pad", version, convert_pad)
        for version in since_versions("AveragePool"):
            if version >= 19:
                register("AveragePool", version, convert_average_pool)
        register("AveragePool", 1, convert_average_pool, DOMAIN)
        _registered = True


def _asymmetric_pool(node: Any) -> bool:
    if node.op_type != "AveragePool" or node.domain not in ("", "ai.onnx"):
        return False
    pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [])
    return pads[: len(pads) // 2] != pads[len(pads) // 2 :]


def _rewrite_asymmetric_pools(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Move AveragePool nodes with asymmetric pads (which onnx2torch refuses) into ``DOMAIN``.

    Shapes are inferred first: the rewritten nodes are opaque to onnx's shape inference, and the
    value infos inferred here keep every tensor after them typed.
    """
    if not any(_asymmetric_pool(n) for n in model.graph.node):
        return model, 0
    import onnx
    from onnx import helper

    model = onnx.shape_inference.infer_shapes(model)
    count = 0
    for node in model.graph.node:
        if _asymmetric_pool(node):
            node.domain = DOMAIN
            count += 1
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model, count


def _unsupported(model: onnx.ModelProto) -> str | None:
    """The first op onnx2torch has no converter for, as ``op X (opset N)``."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain: o.version for o in model.opset_import}
    for node in model.graph.node:
        version = opsets.get(node.domain)
        try:
            if version is None:
                raise NotImplementedError
            get_converter(node.op_type, version, node.domain)
        except NotImplementedError:
            domain = f"{node.domain}." if node.domain else ""
            return f"op {domain}{node.op_type} (opset {version})"
    return None


def _failing_node(traceback: TracebackType | None) -> str:
    """The node onnx2torch was converting when it raised (its ``onnx_node`` local)."""
    found = None
    while traceback is not None:
        node = traceback.tb_frame.f_locals.get("onnx_node")
        if node is not None and hasattr(node, "operation_type"):
            found = node
        traceback = traceback.tb_next
    return f"op {found.operation_type} (node {found.name!r})" if found is not None else "it"


def _check_outputs(model: onnx.ModelProto, name: str) -> None:
    """onnx2torch returns one value per producing node: each output needs its own node."""
    producers = {out: node for node in model.graph.node for out in node.output}
    seen: set[int] = set()
    for output in model.graph.output:
        node = producers.get(output.name)
        if node is None or sum(1 for o in node.output if o) != 1 or id(node) in seen:
            raise AgebenchError(
                f"model {name!r}: graph output {output.name!r} is not the only output of its "
                "own node, which onnx2torch cannot map; use --backend onnxruntime"
            )
        seen.add(id(node))


def convert_graph(model: onnx.ModelProto, name: str) -> tuple[torch.nn.Module, dict[str, int]]:
    """The graph as a torch module, plus the ops this module rewrote (for ``describe``)."""
    import onnx2torch

    _register_converters()
    model, pools = _rewrite_asymmetric_pools(model)
    _check_outputs(model, name)
    version = onnx2torch_version()
    missing = _unsupported(model)
    if missing is not None:
        raise AgebenchError(
            f"model {name!r}: onnx2torch {version} cannot convert {missing}; "
            "use --backend onnxruntime"
        )
    try:
        module = onnx2torch.convert(model)
    except Exception as error:  # onnx2torch raises whatever its converters raise
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines else type(error).__name__
        raise AgebenchError(
            f"model {name!r}: onnx2torch {version} cannot convert "
            f"{_failing_node(error.__traceback__)}: {detail}; use --backend onnxruntime"
        ) from None
    return module, ({"AveragePool (asymmetric pads)": pools} if pools else {})
