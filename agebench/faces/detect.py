"""MTCNN face detection (facenet-pytorch) returning boxes, 5 landmarks and scores.

facenet-pytorch 2.6.0 pins torch<2.3, numpy<2 and Pillow<10.3; we install it without those
pins and call its ``detect_face`` directly, which also sidesteps the object arrays that its
``MTCNN.detect`` builds under numpy 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agebench.errors import AgebenchError


@dataclass(frozen=True)
class Face:
    """One detected face, in the original photo's pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth, right mouth
    score: float
    padded_retry: bool = False

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def _crosses_edge(face: Face, shape: tuple[int, ...]) -> bool:
    x1, y1, x2, y2 = face.box
    return x1 < 0 or y1 < 0 or x2 > shape[1] or y2 > shape[0]


def _import_mtcnn():
    try:
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
        from facenet_pytorch.models.utils.detect_face import detect_face
    except ImportError as error:
        raise AgebenchError(
            f"face detection needs facenet-pytorch ({error}); run scripts/setup.sh, or "
            "'pip install --no-deps facenet-pytorch==2.6.0 requests tqdm'"
        ) from None
    return PNet, RNet, ONet, detect_face


class FaceDetector:
    """MTCNN with the fixes a batch tool needs.

    Large photos are downscaled for detection (MTCNN's pyramid cost grows with pixels while
    faces stay findable), and coordinates are scaled back so crops come from the original.
    A face cut by the image edge (a tight face chip, or a face at a photo's border) gets poor
    landmarks or none: on the 48 shared UTKFace chips, dlib-age-v1's MAE was 13.8 with the
    landmarks MTCNN found on the bare chips and 7.2 after padding. So when no face is found,
    or a face's box crosses the edge, detection runs again on the image framed in black by
    ``retry_pad`` of its size on each side, and that result is kept if it found faces.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_side: int = 1600,
        retry_pad: float = 0.2,
    ) -> None:
        import torch

        pnet_cls, rnet_cls, onet_cls, self._detect_face = _import_mtcnn()
        self.device = torch.device(device)
        self._nets = [cls().to(self.device).eval() for cls in (pnet_cls, rnet_cls, onet_cls)]
        self.min_face_size = max(12, int(min_face_size))
        self.thresholds = list(thresholds)
        self.factor = factor
        self.max_side = max_side
        self.retry_pad = retry_pad

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB photo, largest first."""
        faces = self._detect_scaled(rgb)
        if self.retry_pad > 0 and (not faces or any(_crosses_edge(f, rgb.shape) for f in faces)):
            faces = self._detect_padded(rgb) or faces
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def _detect_scaled(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        image = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            scale = size[0] / width
        min_size = max(12, int(self.min_face_size * scale))
        return [
            Face(tuple(float(v) / scale for v in box), points / scale, score)  # type: ignore[arg-type]
            for box, points, score in self._run(image, min_size)
        ]

    def _detect_padded(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        py, px = round(height * self.retry_pad), round(width * self.retry_pad)
        padded = cv2.copyMakeBorder(rgb, py, py, px, px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        shift = np.array([px, py], dtype=np.float64)
        return [
            Face(
                (f.box[0] - px, f.box[1] - py, f.box[2] - px, f.box[3] - py),
                f.landmarks - shift,
                f.score,
                padded_retry=True,
            )
            for f in self._detect_scaled(padded)
        ]

    def _run(self, image: np.ndarray, min_size: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
        import torch

        if min(image.shape[:2]) < min_size:
            return []
        with torch.inference_mode():
            boxes, points = self._detect_face(
                np.ascontiguousarray(image)[None],
                min_size,
                *self._nets,
                self.thresholds,
                self.factor,
                self.device,
            )
        found = np.asarray(boxes[0], dtype=np.float64).reshape(-1, 5)
        marks = np.asarray(points[0], dtype=np.float64).reshape(-1, 5, 2)
        return [(row[:4], pts, float(row[4])) for row, pts in zip(found, marks, strict=True)]
