"""GPU utilisation while a run works, sampled by nvidia-smi where there is one.

Sampling from outside the process (``nvidia-smi --query-gpu ... -lms``) costs the run
nothing and needs no NVML binding; on a machine without an NVIDIA GPU the sampler records
that it measured nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


class GpuSampler:
    """``with GpuSampler() as s: ...`` then ``s.summary()``: mean and peak utilisation."""

    def __init__(self, interval_ms: int = 200) -> None:
        self.interval_ms = interval_ms
        self._process: subprocess.Popen[str] | None = None
        self._output = ""

    @staticmethod
    def device() -> dict[str, Any]:
        try:
            import torch

            if torch.cuda.is_available():
                return {"gpu": torch.cuda.get_device_name(0)}
        except Exception:  # no torch CUDA: say so instead of failing a bench
            pass
        return {"gpu": None}

    def __enter__(self) -> GpuSampler:
        smi = shutil.which("nvidia-smi")
        if smi and self.device()["gpu"]:
            self._process = subprocess.Popen(
                [smi, *_QUERY, f"-lms={self.interval_ms}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._output, _ = self._process.communicate(timeout=5)

    def summary(self) -> dict[str, Any] | None:
        samples = []
        for line in self._output.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit():
                samples.append((int(parts[0]), int(parts[1])))
        if not samples:
            return None
        util = [u for u, _ in samples]
        return {
            "samples": len(samples),
            "mean_percent": round(sum(util) / len(util), 1),
            "peak_percent": max(util),
            "peak_memory_mib": max(m for _, m in samples),
        }
