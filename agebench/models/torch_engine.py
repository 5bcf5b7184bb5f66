"""The torch engine: a model's ONNX graph converted by onnx2torch and run by PyTorch.

Many GPU machines have CUDA PyTorch but no onnxruntime-gpu, so the same graph also runs here,
with the manifest's normalisation done on the device (``prepare_input``: uint8 crops are
uploaded, four times less to copy than float32). It is checked against onnxruntime on the CPU
(``tests/unit/test_torch_engine.py``): on dlib-age-v1, WRN-16-8 and apmoe's MobileNetV2 the
outputs agree to 6e-6 (relative) and the ages to 1e-4 years.

onnx2torch 1.5 lacks two things agebench's own models use, filled in here with exact
equivalents: ``Pad`` from opset 18 (dlib-age-v1) and ``AveragePool`` with asymmetric pads
(Keras "same" pooling in WRN-16-8), which is rewritten into this module's own domain before
conversion. Anything else it cannot convert is one line naming the model and the op.

Precision: ``fp32`` always; ``fp16`` runs the module in half (inputs cast, outputs cast back
to float32); ``auto`` is fp16 only on CUDA and only when ``<name>-fp16``, gated against this
very graph (``parent_sha256``) by ``models quantize``, is registered: the gate is what says the
model tolerates half precision. fp32 on CUDA uses PyTorch's default convolution math (TF32 on
Ampere and later), which ``describe`` records.
"""

from __future__ import annotations

import importlib.metadata
import math
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from agebench.core.errors import AgebenchError
from agebench.models.manifest import ModelSpec

if TYPE_CHECKING:
    import onnx
    import torch

    from agebench.models.catalog import ModelCatalog

PRECISIONS = ("auto", "fp32", "fp16")
#: nodes rewritten for this module's converters live in this domain (in memory only)
DOMAIN = "agebench_torch"
#: grey = 0.299 R + 0.587 G + 0.114 B, as ``Predictor.preprocess``
_GRAY = (0.299, 0.587, 0.114)
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
_registered = False
_register_lock = threading.Lock()


def onnx2torch_version() -> str:
    return importlib.metadata.version("onnx2torch")


# --- precision --------------------------------------------------------------------------------


def gated_fp16_variant(spec: ModelSpec, catalog: ModelCatalog | None = None) -> str | None:
    """The registered ``<name>-fp16`` that passed the fp16 gate against this graph, if any.

    A gate loosened with ``--age-tolerance`` beyond the default bound does not count.
    """
    from agebench.models.catalog import ModelCatalog
    from agebench.models.variants import GATES

    name = f"{spec.name}-fp16"
    try:
        variant = (catalog or ModelCatalog()).get(name)
    except AgebenchError:  # not registered, or a broken manifest
        return None
    gate = variant.extra.get("gate") or {}
    if variant.provenance.get("parent_sha256") != spec.sha256 or gate.get("passed") is not True:
        return None
    if float(gate.get("age_tolerance", math.inf)) > GATES["fp16"].age_tolerance:
        return None
    return name


def choose_precision(
    spec: ModelSpec, requested: str, on_cuda: bool, catalog: ModelCatalog | None = None
) -> tuple[str, str]:
    """``(precision, why)`` for ``--precision``; see the module docstring."""
    if requested not in PRECISIONS:
        raise AgebenchError(f"--precision {requested!r}: one of {', '.join(PRECISIONS)}")
    if requested == "fp16":
        where = "" if on_cuda else " (on a CPU half precision is slower than fp32)"
        return "fp16", f"requested{where}"
    if requested == "fp32":
        return "fp32", "requested"
    if not on_cuda:
        return "fp32", "auto: fp16 only on CUDA"
    variant = gated_fp16_variant(spec, catalog)
    if variant is None:
        return "fp32", (
            f"auto: no {spec.name}-fp16 gated against sha256 {spec.sha256[:8]} is registered "
            f"(agebench models quantize {spec.name} --to fp16)"
        )
    return "fp16", f"auto: {variant} passed the fp16 gate against sha256 {spec.sha256[:8]}"


# --- converting the graph ---------------------------------------------------------------------


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


# --- the engine -------------------------------------------------------------------------------


def _shape(value_info: Any) -> list[Any]:
    """A graph input's shape as onnxruntime gives it: ints, symbolic names, None if unknown."""
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in value_info.type.tensor_type.shape.dim
    ]


class TorchEngine:
    """Runs a model's ONNX graph in torch; ``provider`` is ``torch-cuda`` or ``torch-cpu``.

    ``device``: ``"cpu"``, ``"cuda"`` or None (CUDA when torch sees a GPU). One lane: torch
    spreads a CPU call over its own threads, and one caller keeps a GPU busy.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str | None = None,
        precision: str = "auto",
        catalog: ModelCatalog | None = None,
    ) -> None:
        import onnx
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise AgebenchError("--backend torch --device cuda: torch sees no CUDA GPU")
        self.spec = spec
        self.device = torch.device(device)
        self.on_cuda = self.device.type == "cuda"
        self.on_gpu = self.on_cuda  # the engine interface's name for it
        self.precision, self.precision_reason = choose_precision(
            spec, precision, self.on_cuda, catalog
        )
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        try:
            model = onnx.load(str(spec.file))
        except Exception as error:  # protobuf's decode errors are untyped
            raise AgebenchError(
                f"model {spec.name!r}: {spec.file} is not a loadable ONNX graph: {error}"
            ) from None
        constants = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in constants]
        if len(inputs) != 1:
            raise AgebenchError(
                f"model {spec.name!r}: the torch backend runs graphs of one input, this one has "
                f"{len(inputs)}"
            )
        self._inputs = {i.name: _shape(i) for i in inputs}
        self._outputs = [o.name for o in model.graph.output]
        self._has_conv = any(n.op_type == "Conv" for n in model.graph.node)
        module, self.rewrites = convert_graph(model, spec.name)
        del model
        self.module = module.eval().to(self.device, self.dtype)
        self.provider = f"torch-{self.device.type}"
        self.lanes = 1
        inp = spec.input
        self._mean = torch.tensor(inp.mean, dtype=torch.float32, device=self.device)
        inv_std = (1.0 / np.asarray(inp.std, dtype=np.float64)).astype(np.float32)
        self._inv_std = torch.from_numpy(inv_std).to(self.device)
        self._gray = torch.tensor(_GRAY, dtype=torch.float32, device=self.device)
        self.channels_last = self._try_channels_last()

    def _try_channels_last(self) -> bool:
        """On CUDA, NHWC memory for conv nets fed NCHW (cuDNN's fast layout, tensor cores in
        half); kept only if a warm-up batch runs with it. NHWC graphs get it by their own
        transpose. Numbers do not change: memory format is not semantics."""
        import torch

        inp = self.spec.input
        if not (self.on_cuda and self._has_conv and inp.layout == "NCHW"):
            return False
        probe = torch.zeros(
            (2, inp.channels, inp.height, inp.width), dtype=self.dtype, device=self.device
        )
        self.module.to(memory_format=torch.channels_last)
        try:
            with torch.inference_mode():
                self.module(probe.contiguous(memory_format=torch.channels_last))
            return True
        except RuntimeError:  # an op that needs contiguous NCHW memory
            self.module.to(memory_format=torch.contiguous_format)
            return False

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    def input_shape(self, name: str) -> list[Any]:
        return list(self._inputs[name])

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """Host array -> device tensor: pinned and asynchronous on CUDA."""
        import torch

        if not array.flags.c_contiguous or not array.flags.writeable:
            array = np.array(array, order="C")
        tensor = torch.from_numpy(array)
        if self.on_cuda:
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _layout(self, tensor: torch.Tensor) -> torch.Tensor:
        """On the device, in the module's dtype and memory format (a no-op when it is)."""
        import torch

        tensor = tensor.to(self.device, self.dtype)
        if self.channels_last and tensor.dim() == 4:
            return tensor.contiguous(memory_format=torch.channels_last)
        return tensor.contiguous()

    def prepare_input(self, faces: np.ndarray | torch.Tensor) -> Any:
        """(N, H, W, 3) uint8 RGB crops -> the graph's input on the device, normalised there
        with the same float32 steps as ``Predictor.preprocess`` on the host (the constants come
        from the manifest this engine was built from, which is the predictor's).

        ``faces`` may already be a tensor on the device (``agebench.runner.device_decode``).
        """
        import torch

        inp = self.spec.input
        if faces.ndim != 4 or tuple(faces.shape[1:]) != (inp.height, inp.width, 3):
            raise ValueError(
                f"expected (N, {inp.height}, {inp.width}, 3) crops, got {tuple(faces.shape)}"
            )
        with torch.inference_mode():
            if isinstance(faces, torch.Tensor):
                x = faces.to(self.device, torch.float32)
            else:
                x = self._upload(faces).to(torch.float32)
            if inp.color == "BGR":
                x = x.flip(-1)
            elif inp.color == "GRAY":
                x = (x @ self._gray)[..., None]
            x = (x - self._mean) * self._inv_std
            if inp.per_image_standardization:
                mean = x.mean(dim=(1, 2, 3), keepdim=True)
                std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
                x = (x - mean) / torch.clamp(std, min=1.0 / math.sqrt(x[0].numel()))
            if inp.layout == "NCHW":
                x = x.permute(0, 3, 1, 2)
            return self._layout(x)

    def run(self, input_name: str, tensor: Any, outputs: list[str]) -> list[np.ndarray]:
        """Outputs in the order of ``outputs`` (names may repeat), float outputs as float32."""
        import torch

        if input_name not in self._inputs:
            raise ValueError(f"model {self.spec.name!r}: no graph input {input_name!r}")
        with torch.inference_mode():
            x = self._upload(tensor) if isinstance(tensor, np.ndarray) else tensor
            result = self.module(self._layout(x))
            values = result if isinstance(result, tuple | list) else (result,)
            named = dict(zip(self._outputs, values, strict=True))
            host = {}
            for name in dict.fromkeys(outputs):
                value = named[name]
                if value.is_floating_point():
                    value = value.float()
                host[name] = value.cpu().numpy()
        return [host[name] for name in outputs]

    def describe(self) -> dict[str, Any]:
        import torch

        info: dict[str, Any] = {
            "backend": "torch",
            "device": str(self.device),
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "converter": f"onnx2torch {onnx2torch_version()}",
            "torch": torch.__version__,
            "channels_last": self.channels_last,
            "rewritten_ops": dict(self.rewrites),
        }
        if self.on_cuda:
            info["device_name"] = torch.cuda.get_device_name(self.device)
            # torch swaps the cudnn module for a CudnnModule at import; mypy sees no ``conv``
            conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]
            info["conv_fp32_precision"] = str(conv.fp32_precision)
        else:
            info["threads"] = torch.get_num_threads()
        return info
