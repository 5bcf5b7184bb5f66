"""One predictor interface: aligned face crops in, ages (plus spread and extra heads) out.

Whatever framework a model came from, it runs here as ONNX through onnxruntime with the
preprocessing its manifest declares. The execution provider is decided in one place
(``choose_providers``) and recorded, because it changes both speed and (slightly) numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agebench.errors import AgebenchError, ManifestError
from agebench.models.decoders import Decoder, build_decoder
from agebench.models.hashing import verify_sha256
from agebench.models.manifest import ModelSpec

Device = Literal["auto", "cpu", "cuda"]
_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def choose_providers(device: Device, available: list[str]) -> list[str]:
    """The onnxruntime providers for ``--device``, fastest first; CPU always last."""
    gpu = [p for p in _GPU_PROVIDERS if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and not gpu:
        raise AgebenchError(
            "--device cuda: this onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
        )
    return [*gpu, "CPUExecutionProvider"]


@dataclass
class BatchPrediction:
    """Per-face values for one batch: ``fields[name]`` and ``raw[head][name]`` are (N, ...)."""

    fields: dict[str, np.ndarray]
    raw: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class Predictor:
    """An onnxruntime session plus the manifest's preprocessing and decoders."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: Device = "auto",
        threads: int | None = None,
        verify: bool = True,
    ) -> None:
        import onnxruntime as ort

        if not spec.file.is_file():
            raise AgebenchError(f"model {spec.name!r}: weights file {spec.file} is missing")
        self.spec = spec
        self.sha256 = verify_sha256(spec.file, spec.sha256) if verify else spec.sha256
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _OPT_LEVELS[spec.runtime.graph_optimization]
        )
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = choose_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(spec.file), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise AgebenchError(
                f"model {spec.name!r}: {spec.file} is not a loadable ONNX graph: {first}"
            ) from None
        self.provider = self.session.get_providers()[0]
        self.input_name = self._check_input()
        self.output_names, self.decoders = self._check_heads()
        self._mean = np.asarray(spec.input.mean, dtype=np.float32)
        self._inv_std = (1.0 / np.asarray(spec.input.std, dtype=np.float64)).astype(np.float32)

    def _check_input(self) -> str:
        inputs = self.session.get_inputs()
        spec = self.spec.input
        names = [i.name for i in inputs]
        name = spec.name or names[0]
        if name not in names:
            raise ManifestError(
                f"model {self.spec.name!r}: graph has no input {name!r} (has {names})"
            )
        shape = next(i.shape for i in inputs if i.name == name)
        expected = (
            [spec.channels, spec.height, spec.width]
            if spec.layout == "NCHW"
            else [spec.height, spec.width, spec.channels]
        )
        actual = list(shape[1:])
        if len(actual) != 3 or any(
            isinstance(a, int) and a != e for a, e in zip(actual, expected, strict=True)
        ):
            raise ManifestError(
                f"model {self.spec.name!r}: manifest says input {spec.layout} {expected} "
                f"but the graph's {name!r} is {shape}"
            )
        return name

    def _check_heads(self) -> tuple[list[str], list[Decoder]]:
        graph_outputs = [o.name for o in self.session.get_outputs()]
        names, decoders = [], []
        for index, head in enumerate(self.spec.heads):
            output = head.output or graph_outputs[min(index, len(graph_outputs) - 1)]
            if output not in graph_outputs:
                raise ManifestError(
                    f"model {self.spec.name!r}: head {head.name!r} reads output {output!r}, "
                    f"but the graph has {graph_outputs}"
                )
            names.append(output)
            decoders.append(
                build_decoder(
                    head.decoder, head.params, task=head.name, base_dir=self.spec.base_dir
                )
            )
        return names, decoders

    @property
    def input_size(self) -> tuple[int, int]:
        return self.spec.input.height, self.spec.input.width

    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB crops -> the graph's float32 input tensor."""
        spec = self.spec.input
        if faces.ndim != 4 or faces.shape[1:] != (spec.height, spec.width, 3):
            raise ValueError(
                f"expected (N, {spec.height}, {spec.width}, 3) crops, got {faces.shape}"
            )
        if spec.color == "BGR":
            faces = faces[..., ::-1]
        elif spec.color == "GRAY":
            weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
            faces = (faces.astype(np.float32) @ weights)[..., None]
        x = faces.astype(np.float32)
        x -= self._mean
        x *= self._inv_std
        if spec.per_image_standardization:
            # tf.image.per_image_standardization: std floored at 1/sqrt(#elements)
            axes = (1, 2, 3)
            mean = x.mean(axis=axes, keepdims=True)
            std = x.std(axis=axes, keepdims=True)
            x = (x - mean) / np.maximum(std, 1.0 / np.sqrt(x[0].size))
        if spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Raw graph outputs for the manifest's heads, in head order."""
        return self.session.run(self.output_names, {self.input_name: tensor})

    def predict(self, faces: np.ndarray) -> BatchPrediction:
        if len(faces) == 0:
            return BatchPrediction({"age": np.empty(0), "age_std": np.empty(0)})
        outputs = self.run(self.preprocess(faces))
        result = BatchPrediction({}, {})
        for head, decoder, output in zip(self.spec.heads, self.decoders, outputs, strict=True):
            decoded = decoder.decode(output)
            result.fields.update(decoded.fields)
            result.raw[head.name] = decoded.raw
        return result
