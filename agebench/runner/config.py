"""Typed run configuration: what the CLI parses and what the runner (never click) consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from agebench.benchmarks.spec import ReadyCrop
from agebench.models.catalog import DEFAULT_MODEL
from agebench.models.predictor import Backend, Device, Tuning

FacesMode = Literal["detect", "none", "box"]


@dataclass(frozen=True)
class DetectConfig:
    min_face_size: int = 20
    max_faces: int | None = None
    #: photos are downscaled so their longer side is at most this for detection only
    max_side: int = 1600
    #: an image with no face found is retried once padded by this fraction on each side
    retry_pad: float = 0.2


@dataclass(frozen=True)
class PredictConfig:
    input: Path
    out: Path
    model: str = DEFAULT_MODEL
    manifest: Path | None = None
    faces: FacesMode = "detect"
    #: None: the engine's preferred batch (64 on a CPU, 256 on a GPU)
    batch_size: int | None = None
    device: Device = "auto"
    detect: DetectConfig = field(default_factory=DetectConfig)
    recursive: bool = True
    resume: bool = True
    #: wait for another run holding ``out`` to finish instead of refusing at once
    wait: bool = False
    #: an image whose decoder warned (corrupt data it decoded around) fails instead of
    #: being scored with the warning in its notes
    strict: bool = False
    save_raw: bool = False
    workers: int | None = None
    #: onnxruntime settings: measured fastest on this machine (auto), or the manifest's
    tuning: Tuning = "auto"
    backend: Backend = "auto"
    #: torch on CUDA runs fp16 when "auto" and the model's fp16 variant passed its gate
    precision: str = "auto"
    #: what a ready crop is under --faces none (tight by default; APPA-style crops carry margin)
    ready_crop: ReadyCrop = field(default_factory=lambda: ReadyCrop(kind="tight"))

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        return {
            "input": str(self.input.resolve()),
            "faces": self.faces,
            "detect": asdict(self.detect) if self.faces == "detect" else None,
            "recursive": self.recursive,
            "save_raw": self.save_raw,
            "strict": self.strict,
            "ready_crop": asdict(self.ready_crop) if self.faces == "none" else None,
            "precision": self.precision,
        }
