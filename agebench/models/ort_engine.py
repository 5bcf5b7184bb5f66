"""The onnxruntime engine: one session, run from several threads at once where that pays.

On a CPU, concurrent ``run`` calls on one session with a single intra-op thread each ("lanes")
keep every core busy without the fork-join stalls of one multi-threaded call: on 2 cores,
dlib-age-v1 at batch 64 ran 950-1000 images/s as 2 lanes x 1 thread against 380-730 as 1 x 2 at
levels below ``all``, and the lanes left the decode threads beside them undisturbed. Spinning
intra-op threads are turned off: they burn the cores that decoding shares.

On CUDA the input is bound with IO binding and the outputs are left on the device until
they are read, which saves one synchronous copy per output and per batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agebench.core.errors import AgebenchError

OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class SessionSettings:
    """How a session is built and driven; recorded in every summary."""

    graph_optimization: str
    intra_op_threads: int
    lanes: int
    #: where these settings came from: "manifest", "tuned" (measured now) or "tuning cache"
    source: str = "manifest"

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def session_options(settings: SessionSettings) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, OPT_LEVELS[settings.graph_optimization]
    )
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtEngine:
    """Runs an ONNX graph with onnxruntime; ``provider`` says which provider took the graph."""

    def __init__(
        self,
        file: Path,
        *,
        providers: list[str],
        settings: SessionSettings,
        model_name: str,
    ) -> None:
        import onnxruntime as ort

        self.settings = settings
        try:
            self.session = ort.InferenceSession(
                str(file), session_options(settings), providers=providers
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise AgebenchError(
                f"model {model_name!r}: {file} is not a loadable ONNX graph: {first}"
            ) from None
        self.provider: str = self.session.get_providers()[0]
        self.on_gpu = self.provider in GPU_PROVIDERS
        self.lanes = 1 if self.on_gpu else settings.lanes

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def input_shape(self, name: str) -> list[Any]:
        return next(i.shape for i in self.session.get_inputs() if i.name == name)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, input_name: str, tensor: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        if not self.on_gpu:
            return self.session.run(outputs, {input_name: tensor})
        binding = self.session.io_binding()
        binding.bind_cpu_input(input_name, tensor)
        for name in dict.fromkeys(outputs):
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        values = dict(zip(dict.fromkeys(outputs), binding.copy_outputs_to_cpu(), strict=True))
        return [values[name] for name in outputs]

    def describe(self) -> dict[str, Any]:
        return {"backend": "onnxruntime", "io_binding": self.on_gpu, **self.settings.describe()}
