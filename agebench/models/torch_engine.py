"""The torch engine: a model's ONNX graph converted by onnx2torch and run by PyTorch.

Many GPU machines have CUDA PyTorch but no onnxruntime-gpu, so the same graph also runs here,
with the manifest's normalisation done on the device (``prepare_input``: uint8 crops are
uploaded, four times less to copy than float32). It is checked against onnxruntime on the CPU
(``tests/unit/test_torch_engine.py``): on dlib-age-v1, WRN-16-8 and apmoe's MobileNetV2 the
outputs agree to 6e-6 (relative) and the ages to 1e-4 years.

The conversion, and what onnx2torch lacks for agebench's own models, is
``agebench.models.torch_convert``.

Precision: ``fp32`` always; ``fp16`` runs the module in half (inputs cast, outputs cast back
to float32); ``auto`` is fp16 only on CUDA and only when ``<name>-fp16``, gated against this
very graph (``parent_sha256``) by ``models quantize``, is registered: the gate is what says the
model tolerates half precision. fp32 on CUDA uses PyTorch's default convolution math (TF32 on
Ampere and later), which ``describe`` records.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from agebench.core.errors import AgebenchError
from agebench.models.manifest import InputSpec, ModelSpec
from agebench.models.torch_convert import convert_graph, onnx2torch_version

if TYPE_CHECKING:
    import torch

    from agebench.models.catalog import ModelCatalog

PRECISIONS = ("auto", "fp32", "fp16")
#: grey = 0.299 R + 0.587 G + 0.114 B, as ``Predictor.preprocess``
_GRAY = (0.299, 0.587, 0.114)


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


# --- the engine -------------------------------------------------------------------------------


def normalise_crops(
    x: torch.Tensor,
    inp: InputSpec,
    mean: torch.Tensor,
    inv_std: torch.Tensor,
    gray: torch.Tensor,
) -> torch.Tensor:
    """(N, H, W, 3) float32 RGB pixels -> the graph's input, with the same float32 steps as
    ``Predictor.preprocess`` on the host: the one torch copy of them, for this engine and for
    training (``agebench.training.backbone``), so a model trains on exactly what eval feeds it.
    ``mean``, ``inv_std`` and ``gray`` are the manifest's constants on ``x``'s device."""
    import torch

    if inp.color == "BGR":
        x = x.flip(-1)
    elif inp.color == "GRAY":
        x = (x @ gray)[..., None]
    x = (x - mean) * inv_std
    if inp.per_image_standardization:
        centre = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
        x = (x - centre) / torch.clamp(std, min=1.0 / math.sqrt(x[0].numel()))
    if inp.layout == "NCHW":
        x = x.permute(0, 3, 1, 2)
    return x


def normalise_constants(inp: InputSpec, device: Any) -> tuple[torch.Tensor, ...]:
    """The manifest's mean, 1 / std (computed in float64, as the host does) and grey weights,
    as float32 tensors on ``device``."""
    import torch

    mean = torch.tensor(inp.mean, dtype=torch.float32, device=device)
    inv_std = (1.0 / np.asarray(inp.std, dtype=np.float64)).astype(np.float32)
    gray = torch.tensor(_GRAY, dtype=torch.float32, device=device)
    return mean, torch.from_numpy(inv_std).to(device), gray


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
        self._mean, self._inv_std, self._gray = normalise_constants(spec.input, self.device)
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
            return self._layout(normalise_crops(x, inp, self._mean, self._inv_std, self._gray))

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
