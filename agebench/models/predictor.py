"""One predictor interface: aligned face crops in, ages (plus spread and extra heads) out.

Whatever framework a model came from, it runs here as ONNX through onnxruntime with the
preprocessing its manifest declares. The execution provider is decided in one place
(``choose_providers``) and recorded, because it changes both speed and (slightly) numbers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agebench.core.errors import AgebenchError, ManifestError
from agebench.core.types import Backend, Device, Precision, Tuning
from agebench.models.decoders import Decoder, build_decoder
from agebench.models.engine import DeviceEngine, Engine
from agebench.models.hashing import verify_model_sha256
from agebench.models.manifest import ModelSpec
from agebench.models.ort_engine import GPU_PROVIDERS, OrtEngine, SessionSettings
from agebench.models.tuning import cached_settings, tune


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def choose_providers(device: Device, available: list[str]) -> list[str]:
    """The onnxruntime providers for ``--device``, fastest first; CPU always last."""
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and not gpu:
        raise AgebenchError(
            "--device cuda: this onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
        )
    return [*gpu, "CPUExecutionProvider"]


#: device nodes a CUDA (NVIDIA) or ROCm (AMD, also torch.cuda) driver creates
_GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")


def torch_cuda_available() -> bool:
    """Whether torch sees a GPU, without importing torch (about 640 MB resident and a second
    of start-up) on machines that have no GPU driver at all."""
    if "torch" not in sys.modules and not any(os.path.exists(n) for n in _GPU_DEVICE_NODES):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def choose_backend(
    device: Device, backend: Backend, ort_available: list[str], torch_cuda: bool
) -> tuple[str, list[str]]:
    """The one place that decides what runs the graph: ``(backend, ort providers)``.

    Fastest first: onnxruntime's TensorRT/CUDA providers (IO binding), then the same graph in
    torch on CUDA (many GPU machines have CUDA torch but no onnxruntime-gpu), then
    onnxruntime on the CPU.
    """
    ort_gpu = any(p in ort_available for p in GPU_PROVIDERS)
    if backend == "torch":
        if device == "cuda" and not torch_cuda:
            raise AgebenchError("--device cuda --backend torch: torch sees no CUDA GPU")
        return "torch", []
    if backend == "onnxruntime" or device == "cpu" or ort_gpu:
        return "onnxruntime", choose_providers(device, ort_available)
    if torch_cuda:
        return "torch", []
    if device == "cuda":
        raise AgebenchError(
            "--device cuda: this onnxruntime has no CUDA provider and torch sees no CUDA GPU "
            f"(onnxruntime providers: {', '.join(ort_available)}); use --device cpu"
        )
    return "onnxruntime", ["CPUExecutionProvider"]


@dataclass
class BatchPrediction:
    """Per-face values for one batch: ``fields[name]`` and ``raw[head][name]`` are (N, ...)."""

    fields: dict[str, np.ndarray]
    raw: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class Predictor:
    """An execution engine for the graph plus the manifest's preprocessing and decoders.

    ``tuning``: ``manifest`` builds the session as the manifest says (reproducible, the
    default for library use and gates); ``auto`` uses the settings measured fastest for this
    model on this machine (cached, measured once if missing: see ``agebench.models.tuning``);
    ``retune`` measures again. The runners use ``auto``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: Device = "auto",
        threads: int | None = None,
        verify: bool = True,
        tuning: Tuning = "manifest",
        backend: Backend = "auto",
        precision: Precision = "auto",
    ) -> None:
        import onnxruntime as ort

        if not spec.file.is_file():
            raise AgebenchError(f"model {spec.name!r}: weights file {spec.file} is missing")
        self.spec = spec
        self.sha256 = verify_model_sha256(spec.file, spec.sha256) if verify else spec.sha256
        kind, providers = choose_backend(
            device, backend, ort.get_available_providers(), torch_cuda_available()
        )
        self.tuning_measured: dict[str, float | None] | None = None
        if kind == "torch":
            from agebench.models.torch_engine import TorchEngine

            self.engine: Engine = TorchEngine(
                spec,
                device="cpu" if device == "cpu" else "cuda" if device == "cuda" else None,
                precision=precision,
            )
        else:
            cores = threads or available_cores()
            settings = self._settings(spec, providers, cores, tuning)
            self.engine = OrtEngine(
                spec.file, providers=providers, settings=settings, model_name=spec.name
            )
        self.provider: str = self.engine.provider
        self.lanes: int = self.engine.lanes
        self.input_name = self._check_input()
        self.output_names, self.decoders = self._check_heads()
        self._mean = np.asarray(spec.input.mean, dtype=np.float32)
        self._inv_std = (1.0 / np.asarray(spec.input.std, dtype=np.float64)).astype(np.float32)

    def _settings(
        self, spec: ModelSpec, providers: list[str], cores: int, tuning: Tuning
    ) -> SessionSettings:
        # one caller, all cores in the call: what a library user or a gate gets
        manifest = SessionSettings(spec.runtime.graph_optimization, cores, 1, "manifest")
        if tuning == "manifest" or providers[0] != "CPUExecutionProvider":
            return manifest
        if tuning == "auto" and (cached := cached_settings(self.sha256, cores)) is not None:
            return cached
        inp = spec.input
        shape = (
            (inp.channels, inp.height, inp.width)
            if inp.layout == "NCHW"
            else (inp.height, inp.width, inp.channels)
        )
        settings, self.tuning_measured = tune(
            spec.file,
            input_name=inp.name,
            input_shape=shape,
            manifest_level=spec.runtime.graph_optimization,
            cores=cores,
            model_name=spec.name,
            sha256=self.sha256,
        )
        return settings

    @property
    def session(self) -> Any:
        """The onnxruntime session (gates and tools read it directly); the torch engine has
        none, so asking for it there is a clear error rather than an AttributeError."""
        if not isinstance(self.engine, OrtEngine):
            raise AgebenchError(f"{self.spec.name}: {self.provider} runs no onnxruntime session")
        return self.engine.session

    @property
    def execution(self) -> dict[str, Any]:
        """What ran the graph, for summaries: provider, settings and their source."""
        return {"provider": self.provider, **self.engine.describe()}

    def _check_input(self) -> str:
        spec = self.spec.input
        names = self.engine.input_names
        name = spec.name or names[0]
        if name not in names:
            raise ManifestError(
                f"model {self.spec.name!r}: graph has no input {name!r} (has {names})"
            )
        shape = self.engine.input_shape(name)
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
        graph_outputs = self.engine.output_names
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
    def preferred_batch_size(self) -> int:
        """The default batch: 64 keeps a CPU's caches warm; a GPU wants far more in flight."""
        return 256 if self.engine.on_gpu else 64

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
            floor = np.float32(1.0 / np.sqrt(x[0].size))  # float64 would promote the tensor
            x = (x - mean) / np.maximum(std, floor)
        if spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def prepare_input(self, faces: np.ndarray) -> Any:
        """What the engine takes for these crops: the normalised numpy tensor, or for an engine
        that normalises on its device (torch on CUDA) the crops uploaded as they are.

        Thread-safe, so decode workers call it and the inference lanes only run the graph.
        """
        if isinstance(self.engine, DeviceEngine):
            return self.engine.prepare_input(faces)
        return self.preprocess(faces)

    def run(self, tensor: Any) -> list[np.ndarray]:
        """Raw graph outputs for the manifest's heads, in head order."""
        return self.engine.run(self.input_name, tensor, self.output_names)

    def predict(self, faces: np.ndarray) -> BatchPrediction:
        if len(faces) == 0:
            return BatchPrediction({"age": np.empty(0), "age_std": np.empty(0)})
        return self.infer(self.prepare_input(faces))

    def infer(self, prepared: Any) -> BatchPrediction:
        """Run the graph on a prepared input and decode every head."""
        outputs = self.run(prepared)
        result = BatchPrediction({}, {})
        for head, decoder, output in zip(self.spec.heads, self.decoders, outputs, strict=True):
            decoded = decoder.decode(output)
            result.fields.update(decoded.fields)
            result.raw[head.name] = decoded.raw
        return result
