"""From a decoded photo to the model's face crops, with the per-face facts we report."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agebench.core.fileread import DEFAULT_MAX_FILE_BYTES, read_image_bytes
from agebench.core.types import FacesMode
from agebench.faces.align import box_matrix, crop_matrix, warp
from agebench.faces.crop import CropSpec
from agebench.faces.detect import Face, FaceDetector
from agebench.runner.config import DetectConfig
from agebench.runner.imageio import DecodedImage, ImageDecodeError, decode_image
from agebench.runner.reconcile import ReadyCropPlan
from agebench.runner.uri import RemoteObject, read_object

NO_FACE = "no face found"
NO_FACE_IN_BOX = "no detected face overlaps the given box"
Box = tuple[float, float, float, float]
#: a detection must overlap a given box this much to be taken as that box's face
_MIN_IOU = 0.3
#: reduced-size JPEG decoding stops at this multiple of the pixels the crop needs
_DRAFT_HEADROOM = 2.0
#: libjpeg's DCT scale denominators, coarsest first
_DCT_FACTORS = (8, 4, 2, 1)


@dataclass(frozen=True)
class Job:
    """One image to run: where it is, where its outputs go, and what the source knows."""

    path: Path
    relative: Path
    box: Box | None = None
    key: Any = None
    #: record the content's sha256 (eval's provenance); read once, hashed and decoded
    hash_content: bool = False
    #: the encoded image itself, already in memory (the Python API's bytes inputs): decoded
    #: exactly as the file at ``path`` would be, and ``path`` is only its name in records
    data: bytes | None = None
    #: pixels decoded already (the Python API's PIL images and arrays): no file is read
    #: or decoded, the crops are cut from these as from a full-size decode
    pixels: DecodedImage | None = None
    #: an object behind a filesystem URI (``s3://...``): read by the worker that decodes it,
    #: then decoded exactly as the file would be; ``path`` is only its name
    remote: RemoteObject | None = None

    @property
    def in_memory(self) -> bool:
        """Whether the image is given in memory rather than read from ``path``."""
        return self.data is not None or self.pixels is not None


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
    #: the job's URI object, back to the driver for the record's ``path`` and ``source``
    remote: RemoteObject | None = None


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


def needs_detector(mode: FacesMode, crop: CropSpec) -> bool:
    """Whether faces must be detected: always with ``detect``, and with given boxes (``box``)
    for a model that aligns by landmarks, which a box does not carry. The one place that says
    so, for predict, eval and quantize's calibration alike."""
    return mode == "detect" or (mode == "box" and crop.policy == "align")


class FacePreparer:
    """Decode, find faces (or take the given ones), crop by the model's policy.

    Runs in worker threads: OpenCV, Pillow's decoder and torch release the GIL.

    Memory is bounded by design for large photos: a JPEG to detect faces in is decoded at the
    DCT scale that keeps its longer side at least the detector's ``max_side`` (a 168-megapixel
    photo decodes at 1/8, 2.6 megapixels, instead of 504 MB of pixels), faces are mapped back
    to the file's pixels, and the crops are cut from a decode sized to the faces: the coarsest
    DCT scale that still gives ``_DRAFT_HEADROOM`` source pixels per crop pixel (the detection
    decode itself when that suffices). Photos whose longer side is under twice ``max_side`` are
    decoded once at full size, exactly as before. ``strict``: a decoder warning fails the image;
    ``max_file_bytes``: the size cap of the bounded reader.
    """

    def __init__(
        self,
        crop: CropSpec,
        size: tuple[int, int],
        mode: FacesMode,
        detect: DetectConfig,
        detector: FaceDetector | None,
        ready: ReadyCropPlan | None = None,
        *,
        strict: bool = False,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        if needs_detector(mode, crop) and detector is None:
            raise ValueError(f"--faces {mode} with this model needs a detector")
        if mode == "none" and ready is None:
            raise ValueError("--faces none needs a ready-crop plan")
        self.crop = crop
        self.size = size
        self.mode = mode
        self.detect_config = detect
        self.detector = detector
        self.ready = ready
        self.strict = strict
        self.max_file_bytes = max_file_bytes

    def __call__(
        self, path: Path, relative: Path, box: Box | None = None, key: Any = None
    ) -> PreparedImage:
        return self.prepare_many([Job(path, relative, box, key)])[0]

    def prepare_many(self, jobs: list[Job]) -> list[PreparedImage]:
        """Prepare a chunk of images; faces to detect are found in one batched call."""
        decoded = [self._decode(job) for job in jobs]
        wanted = [
            i
            for i, source in enumerate(decoded)
            if source.image is not None and self._needs_detection(jobs[i])
        ]
        found: dict[int, list[Face] | _DetectionFailed] = {}
        if wanted:
            images = [decoded[i].image for i in wanted]
            found = dict(zip(wanted, self._detect_all(images), strict=True))  # type: ignore[arg-type]
        for i, source in enumerate(decoded):
            if source.image is None:
                continue
            item = source.item
            try:
                self._cut(source, jobs[i].box, found.get(i))
            except ImageDecodeError as error:  # the face-sized second decode failed
                item.status, item.error = "failed", error.reason
                item.faces, item.crops = [], None
            except Exception as error:  # one bad image must never stop a run of millions
                item.status = "failed"
                item.error = f"face processing failed: {type(error).__name__}: {error}"
                item.faces, item.crops = [], None
            source.image = source.data = None  # free the pixels before the next image's crops
        return [source.item for source in decoded]

    def _detect_all(self, images: list[DecodedImage]) -> list[list[Face] | _DetectionFailed]:
        """Faces in each image, in the file's pixels (a reduced decode is scaled back)."""
        assert self.detector is not None
        detector = self.detector
        arrays = [image.rgb for image in images]
        scales = [float(image.scale) for image in images]
        reduced = any(scale != 1.0 for scale in scales)

        def detect_many(batch: list[np.ndarray], at: list[float]) -> list[list[Face]]:
            if not reduced:  # the plain protocol: tests' stand-ins implement only this
                return list(detector.detect_many(batch))
            return list(detector.detect_many(batch, source_scales=at))

        try:
            found: list[list[Face] | _DetectionFailed] = list(detect_many(arrays, scales))
        except Exception:  # isolate the image that breaks detection instead of the chunk
            found = []
            for rgb, scale in zip(arrays, scales, strict=True):
                try:
                    found.append(
                        detector.detect(rgb) if not reduced else detect_many([rgb], [scale])[0]
                    )
                except Exception as error:
                    found.append(_DetectionFailed(error))
        return [
            faces if isinstance(faces, _DetectionFailed) else _to_file_pixels(faces, image.scale)
            for faces, image in zip(found, images, strict=True)
        ]

    def _needs_detection(self, job: Job) -> bool:
        if self.mode == "detect":
            return True
        return (
            self.mode == "box"
            and self.detector is not None
            and (job.box is None or self.crop.policy == "align")
        )

    def _decode(self, job: Job) -> _Source:
        item = PreparedImage(path=job.path, relative=job.relative, key=job.key, remote=job.remote)
        if job.pixels is not None:
            item.notes = list(job.pixels.notes)
            item.width, item.height = job.pixels.width, job.pixels.height
            return _Source(item, job.pixels)
        try:
            if job.data is not None:
                data = job.data
            elif job.remote is not None:
                data = read_object(job.remote, max_bytes=self.max_file_bytes)
            else:
                data = read_image_bytes(job.path, max_bytes=self.max_file_bytes)
        except ImageDecodeError as error:
            item.status, item.error = "failed", error.reason
            return _Source(item)
        if job.hash_content:
            item.sha256 = hashlib.sha256(data).hexdigest()
        detect_side = (
            self.detect_config.max_side
            if self.detector is not None and self._needs_detection(job)
            else None
        )
        try:
            image = decode_image(
                job.path,
                draft_size=self._draft_size(),
                draft_max_side=detect_side,
                data=data,
                strict=self.strict,
            )
        except ImageDecodeError as error:
            item.status, item.error = "failed", error.reason
            return _Source(item)
        item.notes = list(image.notes)
        item.width, item.height = (
            image.full_size if image.full_size[0] else (image.width, image.height)
        )
        return _Source(item, image, data)

    def _crop_source(
        self, source: _Source, matrices: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """The pixels to cut ``matrices`` (file pixels -> crop) from, and the matrices for them.

        A full-size decode is used as is (crops identical to before). A reduced decode is used
        when it still has ``_DRAFT_HEADROOM`` pixels per crop pixel for every face; otherwise
        the file is decoded again at the coarsest DCT scale that has, never the whole photo at
        full size unless a face needs it.
        """
        image = source.image
        assert image is not None
        if image.scale == 1:
            return image.rgb, matrices
        factor = min(_needed_factor(matrix, image.scale) for matrix in matrices)
        rgb = image.rgb
        if factor != image.scale:
            assert source.data is not None
            again = decode_image(
                source.item.path, data=source.data, reduce=factor, strict=self.strict
            )
            rgb, factor = again.rgb, again.scale
        return rgb, [_on_reduced(matrix, factor) for matrix in matrices]

    def _cut(
        self,
        source: _Source,
        box: Box | None,
        found: list[Face] | _DetectionFailed | None,
    ) -> None:
        item, image = source.item, source.image
        assert image is not None
        if isinstance(found, _DetectionFailed):
            raise found.error
        if self.mode == "none":
            self._cut_ready(image, item)
        elif self.mode == "box" and box is not None:
            self._cut_given(source, box, found or [])
        elif self.mode == "box" and self.detector is None:
            item.status, item.error = "failed", "no face box given for this image"
        else:
            self._cut_detected(source, found or [])

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

    def _cut_given(self, source: _Source, box: Box, detected: list[Face]) -> None:
        """A benchmark's own face box: aligned models still need landmarks, so the detected
        face that overlaps the box most is used; other models crop the box itself."""
        item = source.item
        if self.crop.policy == "align":
            found = [f for f in detected if iou(f.box, box) >= _MIN_IOU]
            if not found:
                item.status, item.error = "no_face", NO_FACE_IN_BOX
                return
            best = max(found, key=lambda f: iou(f.box, box))
            self._cut_faces(source, [best], given_box=box)
            return
        margin = self.crop.margin if self.crop.policy == "box" else 0.0
        rgb, (matrix,) = self._crop_source(
            source, [box_matrix(box, margin, self.crop.square, self.size)]
        )
        item.crops = warp(rgb, matrix, self.size)[None]
        item.faces = [{"index": 0, "box": _round(box), "landmarks": None, "score": None}]

    def _cut_detected(self, source: _Source, found: list[Face]) -> None:
        if self.detect_config.max_faces is not None:
            found = found[: self.detect_config.max_faces]
        if not found:
            source.item.status, source.item.error = "no_face", NO_FACE
            return
        self._cut_faces(source, found)

    def _cut_faces(
        self,
        source: _Source,
        found: list[Face],
        given_box: Box | None = None,
    ) -> None:
        item = source.item
        width, height = item.width or 0, item.height or 0
        matrices = [
            crop_matrix(
                self.crop,
                self.size,
                image_size=(height, width),
                box=face.box,
                landmarks=face.landmarks,
            )
            for face in found
        ]
        rgb, matrices = self._crop_source(source, matrices)
        crops = []
        for index, (face, matrix) in enumerate(zip(found, matrices, strict=True)):
            crops.append(warp(rgb, matrix, self.size))
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


@dataclass
class _Source:
    """One job's record, its decoded pixels and its bytes (for a second, face-sized decode)."""

    item: PreparedImage
    image: DecodedImage | None = None
    data: bytes | None = None


def _to_file_pixels(faces: list[Face], scale: int) -> list[Face]:
    """Faces found on a 1/``scale`` DCT decode, in the file's pixels (continuous coordinates:
    decoded pixel i spans file pixels [i s, (i + 1) s))."""
    if scale == 1:
        return faces
    return [
        Face(
            tuple(float(v) * scale for v in face.box),  # type: ignore[arg-type]
            np.asarray(face.landmarks, dtype=np.float64) * scale,
            face.score,
            face.padded_retry,
        )
        for face in faces
    ]


def _needed_factor(matrix: np.ndarray, available: int) -> int:
    """The coarsest DCT factor (at most ``available``) leaving ``_DRAFT_HEADROOM`` source
    pixels per crop pixel for this file -> crop matrix."""
    crop_per_file = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    if crop_per_file <= 0:
        return available
    file_per_crop = 1.0 / crop_per_file
    for factor in _DCT_FACTORS:
        if factor <= available and file_per_crop / factor >= _DRAFT_HEADROOM:
            return factor
    return 1


def _on_reduced(matrix: np.ndarray, factor: int) -> np.ndarray:
    """A file -> crop matrix (pixel centres at integers) re-expressed on a 1/``factor`` decode,
    whose pixel j is centred on file pixel ``j factor + (factor - 1) / 2``."""
    if factor == 1:
        return matrix
    offset = (factor - 1) / 2.0
    to_file = np.array([[factor, 0.0, offset], [0.0, factor, offset], [0.0, 0.0, 1.0]])
    return matrix @ to_file
