"""MTCNN face detection (facenet-pytorch's nets) returning boxes, 5 landmarks and scores.

Only the weights of facenet-pytorch's P/R/O-Nets are used, shipped inside agebench
(``faces.mtcnn_weights``): the cascade around them is our batched one (``agebench.faces.mtcnn``,
~3x less CPU per image than its ``detect_face``, same faces to float rounding), which also
sidesteps the object arrays its ``MTCNN.detect`` builds under numpy 2. facenet-pytorch itself
is needed only by the tests, as the reference the cascade is compared against.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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


class FaceDetector:
    """MTCNN with the fixes a batch tool needs.

    Large photos are downscaled for detection (MTCNN's pyramid cost grows with pixels while
    faces stay findable), and coordinates are scaled back so crops come from the original.
    A face cut by the image edge (a tight face chip, or a face at a photo's border) is cropped
    for R-Net and O-Net whole, black outside the image, as the original MTCNN pads: facenet's
    cascade stretches the part inside instead, which wrecked the landmarks (dlib-age-v1's MAE on
    the 48 shared UTKFace chips was 13.8 with them). facenet-based code worked around that by
    detecting again on the image framed in black; with black-padded crops one pass gives the
    same accuracy (MAE 7.35 against 7.37 after the second pass) at a third of the cost. A
    photo in which nothing is found is still tried once more framed in black by ``retry_pad``
    of its size on each side (a face filling the whole frame needs the frame to be found).

    The cascade is our vectorised one (``agebench.faces.mtcnn``; with facenet's stretched
    crops it gives facenet-pytorch's ``detect_face`` results to float rounding);
    ``detect_many`` runs images of one size (after downscaling), and then their retries, as
    batches. Safe to share between threads.
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
        from agebench.faces.mtcnn import MtcnnCascade

        # loads the shipped weights: a damaged file fails here, as one clear error
        self.cascade = MtcnnCascade(
            device=device, thresholds=thresholds, factor=factor, zero_pad=True
        )
        self.device = self.cascade.device
        self.min_face_size = max(12, int(min_face_size))
        self.max_side = max_side
        self.retry_pad = retry_pad

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB photo, largest first."""
        return self.detect_many([rgb])[0]

    def detect_many(
        self, images: list[np.ndarray], source_scales: list[float] | None = None
    ) -> list[list[Face]]:
        """``detect`` on each photo, with same-size photos (and their retries) batched.

        ``source_scales``: each photo's reduction from the file it came from (a JPEG decoded
        at 1/8 scale: 8), so ``min_face_size`` keeps meaning pixels of the file; the faces stay
        in the given array's pixels.
        """
        scales = source_scales or [1.0] * len(images)
        found = self._detect_scaled(images, scales)
        if self.retry_pad > 0:
            retry = [i for i, faces in enumerate(found) if not faces]
            again = self._detect_padded([images[i] for i in retry], [scales[i] for i in retry])
            for i, faces in zip(retry, again, strict=True):
                found[i] = faces or found[i]
        return [sorted(faces, key=lambda f: f.area, reverse=True) for faces in found]

    def _detect_scaled(self, images: list[np.ndarray], sources: list[float]) -> list[list[Face]]:
        """Downscale to ``max_side``, batch by (size, minimum face size), scale faces back."""
        prepared = [
            self._downscale(rgb, source) for rgb, source in zip(images, sources, strict=True)
        ]
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (image, _, min_size) in enumerate(prepared):
            groups.setdefault((*image.shape[:2], min_size), []).append(i)
        found: list[list[Face]] = [[] for _ in images]
        for (height, width, min_size), members in groups.items():
            if min(height, width) < min_size:
                continue
            for start in range(0, len(members), _batch_size(height, width)):
                batch = members[start : start + _batch_size(height, width)]
                stack = np.stack([prepared[i][0] for i in batch])
                for i, detections in zip(batch, self.cascade.detect(stack, min_size), strict=True):
                    scale = prepared[i][1]
                    found[i] = [
                        Face(tuple(float(v) / scale for v in box), points / scale, score)  # type: ignore[arg-type]
                        for box, points, score in detections
                    ]
        return found

    def _downscale(self, rgb: np.ndarray, source: float = 1.0) -> tuple[np.ndarray, float, int]:
        height, width = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        image = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            scale = size[0] / width
        minimum = self.min_face_size * scale / max(1.0, source)
        return np.ascontiguousarray(image), scale, max(12, int(minimum))

    def _detect_padded(self, images: list[np.ndarray], sources: list[float]) -> list[list[Face]]:
        padded, shifts = [], []
        for rgb in images:
            height, width = rgb.shape[:2]
            py, px = round(height * self.retry_pad), round(width * self.retry_pad)
            padded.append(
                cv2.copyMakeBorder(rgb, py, py, px, px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            )
            shifts.append((px, py))
        return [
            [
                Face(
                    (f.box[0] - px, f.box[1] - py, f.box[2] - px, f.box[3] - py),
                    f.landmarks - np.array([px, py], dtype=np.float64),
                    f.score,
                    padded_retry=True,
                )
                for f in faces
            ]
            for faces, (px, py) in zip(self._detect_scaled(padded, sources), shifts, strict=True)
        ]


#: pixels per cascade call: bounds the summed-area tables and the pyramid's working memory
_BATCH_PIXELS = 1 << 22


def _batch_size(height: int, width: int) -> int:
    return max(1, _BATCH_PIXELS // (height * width))
