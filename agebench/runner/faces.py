"""From a decoded photo to the model's face crops, with the per-face facts we report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agebench.config import DetectConfig, FacesMode
from agebench.faces.align import crop_matrix, warp
from agebench.faces.detect import FaceDetector
from agebench.models.manifest import CropSpec
from agebench.runner.imageio import DecodedImage, ImageDecodeError, decode_image

NO_FACE = "no face found"


@dataclass
class PreparedImage:
    """One photo, decoded and cut into crops, waiting for the model."""

    path: Path
    relative: Path
    status: str = "ok"  # ok | no_face | failed
    error: str | None = None
    width: int | None = None
    height: int | None = None
    notes: list[str] = field(default_factory=list)
    faces: list[dict[str, Any]] = field(default_factory=list)
    crops: np.ndarray | None = None


def _round(values: np.ndarray, digits: int = 2) -> list[Any]:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


class FacePreparer:
    """Decode, find faces (or take the image as one), crop by the model's policy.

    Runs in worker threads: OpenCV, Pillow's decoder and torch release the GIL.
    """

    def __init__(
        self,
        crop: CropSpec,
        size: tuple[int, int],
        mode: FacesMode,
        detect: DetectConfig,
        detector: FaceDetector | None,
    ) -> None:
        if mode == "detect" and detector is None:
            raise ValueError("--faces detect needs a detector")
        self.crop = crop
        self.size = size
        self.mode = mode
        self.detect_config = detect
        self.detector = detector

    def __call__(self, path: Path, relative: Path) -> PreparedImage:
        item = PreparedImage(path=path, relative=relative)
        try:
            # a ready crop is only ever shrunk to the model size: let libjpeg decode it smaller
            draft = (self.size[1], self.size[0]) if self.mode == "none" else None
            image = decode_image(path, draft_size=draft)
        except ImageDecodeError as error:
            item.status, item.error = "failed", error.reason
            return item
        item.notes = list(image.notes)
        item.width, item.height = image.width, image.height
        try:
            self._cut(image, item)
        except Exception as error:  # one bad image must never stop a run of millions
            item.status, item.error = (
                "failed",
                f"face processing failed: {type(error).__name__}: {error}",
            )
            item.faces, item.crops = [], None
        return item

    def _cut(self, image: DecodedImage, item: PreparedImage) -> None:
        rgb = image.rgb
        if self.mode == "none":
            matrix = crop_matrix(
                self.crop, self.size, image_size=rgb.shape[:2], box=None, landmarks=None
            )
            item.crops = warp(rgb, matrix, self.size)[None]
            item.faces = [
                {
                    "index": 0,
                    "box": [0.0, 0.0, float(image.width), float(image.height)],
                    "landmarks": None,
                    "score": None,
                }
            ]
            return
        assert self.detector is not None
        found = self.detector.detect(rgb)
        if self.detect_config.max_faces is not None:
            found = found[: self.detect_config.max_faces]
        if not found:
            item.status, item.error = "no_face", NO_FACE
            return
        crops = []
        for index, face in enumerate(found):
            matrix = crop_matrix(
                self.crop,
                self.size,
                image_size=rgb.shape[:2],
                box=face.box,
                landmarks=face.landmarks,
            )
            crops.append(warp(rgb, matrix, self.size))
            record: dict[str, Any] = {
                "index": index,
                "box": _round(face.box),
                "landmarks": _round(face.landmarks),
                "score": round(face.score, 5),
            }
            if face.padded_retry:
                record["note"] = "detected on the image padded by a black frame"
            item.faces.append(record)
        item.crops = np.stack(crops)
