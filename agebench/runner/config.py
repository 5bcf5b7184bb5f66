"""Typed run configuration: what the CLI parses and what the runner (never click) consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agebench.benchmarks.spec import ReadyCrop
from agebench.core.config import LOCAL, ClusterConfig, ExecutionConfig
from agebench.core.types import FacesMode
from agebench.models.catalog import DEFAULT_MODEL


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
    #: a local folder or file, or a filesystem URI (``s3://bucket/prefix/``) kept as the string
    #: given: ``Path()`` would mangle ``s3://`` into ``s3:/``
    input: Path | str
    out: Path
    model: str = DEFAULT_MODEL
    manifest: Path | None = None
    faces: FacesMode = "detect"
    #: device, backend, precision (torch on CUDA runs fp16 when "auto" and the model's fp16
    #: variant passed its gate), onnxruntime tuning, batch size and worker threads
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    #: the local threads or a Ray cluster (not part of the run's identity: either resumes it)
    cluster: ClusterConfig = LOCAL
    detect: DetectConfig = field(default_factory=DetectConfig)
    recursive: bool = True
    resume: bool = True
    #: wait for another run holding ``out`` to finish instead of refusing at once
    wait: bool = False
    #: an image whose decoder warned (corrupt data it decoded around) fails instead of
    #: being scored with the warning in its notes
    strict: bool = False
    save_raw: bool = False
    #: what a ready crop is under --faces none (tight by default; APPA-style crops carry margin)
    ready_crop: ReadyCrop = field(default_factory=lambda: ReadyCrop(kind="tight"))

    def input_name(self) -> str:
        """The input as the run identity and summary name it: a URI as given, a local path
        resolved (as every earlier version wrote it)."""
        return self.input if isinstance(self.input, str) else str(self.input.resolve())

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues (keys and values
        as every earlier version wrote them: the run identity's digest depends on them)."""
        return {
            "input": self.input_name(),
            "faces": self.faces,
            "detect": asdict(self.detect) if self.faces == "detect" else None,
            "recursive": self.recursive,
            "save_raw": self.save_raw,
            "strict": self.strict,
            "ready_crop": asdict(self.ready_crop) if self.faces == "none" else None,
            "precision": self.execution.precision,
        }
