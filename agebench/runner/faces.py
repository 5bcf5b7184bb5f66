"""From a decoded photo to the model's face crops, with the per-face facts we report."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agebench.config import DetectConfig
from agebench.faces.align import box_matrix, crop_matrix, warp
from agebench.faces.detect import Face, FaceDetector
from agebench.models.manifest import CropSpec
from agebench.runner.imageio import DecodedImage, ImageDecodeError, decode_image
from agebench.runner.reconcile import ReadyCropPlan

NO_FACE = "no face found"
NO_FACE_IN_BOX = "no detected face overlaps the given box"
FacesMode = Literal["detect", "none", "box"]
Box = tuple[float, float, float, float]
#: a detection must overlap a given box this much to be taken as that box's face
_MIN_IOU = 0.3
#: reduced-size JPEG decoding stops at this multiple of the pixels the crop needs
_DRAFT_HEADROOM = 2.0


@dataclass(frozen=True)
class Job:
    """One image to run: where it is, where its outputs go, and what the source knows."""

    path: Path
    relative: Path
    box: Box | None = None
    key: Any = None
    #: record the content's sha256 (eval's provenance); read once, hashed and decoded
    hash_content: bool = False


@dataclass
class PreparedImage:
    """One photo (or one labelled face of it), decoded and cut, waiting for the model."""

    path: Path
    relative: Path
    status: str = "ok"  # ok | no_face | failed
    error: str | None = None
    width: int | None = None
    height: int | None = None
    notes: list[str] = field(default_factory=list)
    faces: list[dict[str, Any]] = field(default_factory=list)
    crops: np.ndarray | None = None
    key: Any = None
    sha256: str | None = None


@dataclass(frozen=True)
class _DetectionFailed:
    """Detection raised on this image: it fails alone, the rest of its chunk goes on."""

    error: Exception


def _round(values: Any, digits: int = 2) -> list[Any]:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FacePreparer:
    """Decode, find faces (or take the given ones), crop by the model's policy.

    Runs in worker threads: OpenCV, Pillow's decoder and torch release the GIL.
    """

    def __init__(
        self,
        crop: CropSpec,
        size: tuple[int, int],
        mode: FacesMode,
        detect: DetectConfig,
        detector: FaceDetector | None,
        ready: ReadyCropPlan | None = None,
    ) -> None:
        needs_detector = mode == "detect" or (mode == "box" and crop.policy == "align")
        if needs_detector and detector is None:
            raise ValueError(f"--faces {mode} with this model needs a detector")
        if mode == "none" and ready is None:
            raise ValueError("--faces none needs a ready-crop plan")
        self.crop = crop
        self.size = size
        self.mode = mode
        self.detect_config = detect
        self.detector = detector
        self.ready = ready

    def __call__(
        self, path: Path, relative: Path, box: Box | None = None, key: Any = None
    ) -> PreparedImage:
        return self.prepare_many([Job(path, relative, box, key)])[0]

    def prepare_many(self, jobs: list[Job]) -> list[PreparedImage]:
        """Prepare a chunk of images; faces to detect are found in one batched call."""
        decoded = [self._decode(job) for job in jobs]
        wanted = [
            i
            for i, (_, image) in enumerate(decoded)
            if image is not None and self._needs_detection(jobs[i])
        ]
        found: dict[int, list[Face] | _DetectionFailed] = {}
        if wanted:
            images = [decoded[i][1].rgb for i in wanted]  # type: ignore[union-attr]
            found = dict(zip(wanted, self._detect_all(images), strict=True))
        for i, (item, image) in enumerate(decoded):
            if image is None:
                continue
            try:
                self._cut(item, image, jobs[i].box, found.get(i))
            except Exception as error:  # one bad image must never stop a run of millions
                item.status = "failed"
                item.error = f"face processing failed: {type(error).__name__}: {error}"
                item.faces, item.crops = [], None
        return [item for item, _ in decoded]

    def _detect_all(self, images: list[np.ndarray]) -> list[list[Face] | _DetectionFailed]:
        assert self.detector is not None
        try:
            return list(self.detector.detect_many(images))
        except Exception:  # isolate the image that breaks detection instead of the chunk
            results: list[list[Face] | _DetectionFailed] = []
            for rgb in images:
                try:
                    results.append(self.detector.detect(rgb))
                except Exception as error:
                    results.append(_DetectionFailed(error))
            return results

    def _needs_detection(self, job: Job) -> bool:
        if self.mode == "detect":
            return True
        return (
            self.mode == "box"
            and self.detector is not None
            and (job.box is None or self.crop.policy == "align")
        )

    def _decode(self, job: Job) -> tuple[PreparedImage, DecodedImage | None]:
        item = PreparedImage(path=job.path, relative=job.relative, key=job.key)
        data = None
        if job.hash_content:
            try:
                data = job.path.read_bytes()
            except OSError:
                data = None  # decoding names the reason
            else:
                item.sha256 = hashlib.sha256(data).hexdigest()
        try:
            image = decode_image(job.path, draft_size=self._draft_size(), data=data)
        except ImageDecodeError as error:
            item.status, item.error = "failed", error.reason
            return item, None
        item.notes = list(image.notes)
        item.width, item.height = (
            image.full_size if image.full_size[0] else (image.width, image.height)
        )
        return item, image

    def _cut(
        self,
        item: PreparedImage,
        image: DecodedImage,
        box: Box | None,
        found: list[Face] | _DetectionFailed | None,
    ) -> None:
        if isinstance(found, _DetectionFailed):
            raise found.error
        if self.mode == "none":
            self._cut_ready(image, item)
        elif self.mode == "box" and box is not None:
            self._cut_given(image, item, box, found or [])
        elif self.mode == "box" and self.detector is None:
            item.status, item.error = "failed", "no face box given for this image"
        else:
            self._cut_detected(image, item, found or [])

    def _draft_size(self) -> tuple[int, int] | None:
        """A ready crop is only ever shrunk to the model size: let libjpeg decode it smaller,
        but never below twice that size, so the area filter still has pixels to average.

        Decoding straight to ~1x cost accuracy: on the 48 shared chips (200 px, a 64 px
        model) the 1/2-scale DCT decode moved WRN-16-8's MAE from 8.39 to 8.56.
        """
        if self.mode != "none" or self.ready is None:
            return None
        scale = _DRAFT_HEADROOM * self.ready.decode_scale()
        return (math.ceil(self.size[1] * scale), math.ceil(self.size[0] * scale))

    def _cut_ready(self, image: DecodedImage, item: PreparedImage) -> None:
        assert self.ready is not None
        matrix = self.ready.matrix(image.width, image.height, self.size)
        item.crops = warp(image.rgb, matrix, self.size)[None]
        item.faces = [self.ready_face(image.width, image.height, item.width or image.width)]

    def ready_face(self, width: int, height: int, full_width: int) -> dict[str, Any]:
        """The face record of a ready crop decoded at ``width`` x ``height`` (a draft decode
        may be smaller than the file's ``full_width``): its box in the file's pixels."""
        assert self.ready is not None
        box = np.asarray(self.ready.face_box(width, height)) * (full_width / width)
        return {"index": 0, "box": _round(box), "landmarks": None, "score": None}

    def _cut_given(
        self, image: DecodedImage, item: PreparedImage, box: Box, detected: list[Face]
    ) -> None:
        """A benchmark's own face box: aligned models still need landmarks, so the detected
        face that overlaps the box most is used; other models crop the box itself."""
        if self.crop.policy == "align":
            found = [f for f in detected if iou(f.box, box) >= _MIN_IOU]
            if not found:
                item.status, item.error = "no_face", NO_FACE_IN_BOX
                return
            best = max(found, key=lambda f: iou(f.box, box))
            self._cut_faces(image, item, [best], given_box=box)
            return
        margin = self.crop.margin if self.crop.policy == "box" else 0.0
        matrix = box_matrix(box, margin, self.crop.square, self.size)
        item.crops = warp(image.rgb, matrix, self.size)[None]
        item.faces = [{"index": 0, "box": _round(box), "landmarks": None, "score": None}]

    def _cut_detected(self, image: DecodedImage, item: PreparedImage, found: list[Face]) -> None:
        if self.detect_config.max_faces is not None:
            found = found[: self.detect_config.max_faces]
        if not found:
            item.status, item.error = "no_face", NO_FACE
            return
        self._cut_faces(image, item, found)

    def _cut_faces(
        self,
        image: DecodedImage,
        item: PreparedImage,
        found: list[Face],
        given_box: Box | None = None,
    ) -> None:
        crops = []
        for index, face in enumerate(found):
            matrix = crop_matrix(
                self.crop,
                self.size,
                image_size=image.rgb.shape[:2],
                box=face.box,
                landmarks=face.landmarks,
            )
            crops.append(warp(image.rgb, matrix, self.size))
            record: dict[str, Any] = {
                "index": index,
                "box": _round(face.box),
                "landmarks": _round(face.landmarks),
                "score": round(face.score, 5),
            }
            if given_box is not None:
                record["given_box"] = _round(given_box)
            if face.padded_retry:
                record["note"] = "detected on the image padded by a black frame"
            item.faces.append(record)
        item.crops = np.stack(crops)
