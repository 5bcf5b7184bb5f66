"""Cut a model's face crop from a photo: landmark alignment, box plus margin, or resize.

Every policy reduces to one 2x3 affine matrix from photo pixels to crop pixels, so one warp
routine (with anti-aliasing when the face is much larger than the crop) serves them all.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agebench.faces.crop import CropSpec
from agebench.faces.templates import TEMPLATES

#: photo pixels per crop pixel above which we warp at a multiple of the size and box-filter down
_ANTIALIAS_FROM = 1.5
_MAX_SUPERSAMPLE = 8


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping ``src`` onto ``dst``.

    Umeyama's closed form without reflection, returned as a 2x3 matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("source points coincide; no transform is defined")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_matrix(
    landmarks: np.ndarray, template: str, padding: float, size: tuple[int, int]
) -> np.ndarray:
    """Photo -> crop matrix putting MTCNN-ordered ``landmarks`` on the named template."""
    height, width = size
    dst = TEMPLATES.get(template).destination(width, height, padding)
    return similarity_transform(landmarks, dst)


def dlib_pixel_grid(matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Re-express a photo -> crop similarity on dlib's chip pixel grid.

    dlib's ``chip_details`` stores the crop as a rect of side ``size / s`` photo pixels
    centred on T^-1(size / 2) and maps crop pixels 0 and size - 1 onto its edges, so the
    pixel spacing is (size / s - 1) / (size - 1) and crop pixel (size - 1) / 2 sits on that
    centre. Reproducing it removes a half-pixel shift the dlib-trained nets never saw.
    """
    height, width = size
    linear = matrix[:, :2]
    s = math.sqrt(abs(np.linalg.det(linear)))  # crop px per photo px
    centre = np.linalg.solve(linear, np.array([width / 2.0, height / 2.0]) - matrix[:, 2])
    step = (width / s - 1.0) / (width - 1.0)  # photo px per crop px
    new_linear = linear / (s * step)
    out = np.empty((2, 3))
    out[:, :2] = new_linear
    out[:, 2] = np.array([(width - 1) / 2.0, (height - 1) / 2.0]) - new_linear @ centre
    return out


def box_matrix(
    box: tuple[float, float, float, float], margin: float, square: bool, size: tuple[int, int]
) -> np.ndarray:
    """Photo -> crop matrix for a detector box grown by ``margin`` of its size on each side.

    The box is in continuous coordinates (pixel i spans [i, i + 1)) and its grown edges land
    on the crop's edges; the matrix itself works in OpenCV's convention (pixel centres at
    integers), hence the half-pixel terms.
    """
    height, width = size
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    if square:
        bw = bh = max(bw, bh)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    bw, bh = bw * (1 + 2 * margin), bh * (1 + 2 * margin)
    sx, sy = width / bw, height / bh
    # crop centre (width/2 - 0.5 in OpenCV coordinates) <- box centre (cx - 0.5)
    tx = width / 2.0 - 0.5 - sx * (cx - 0.5)
    ty = height / 2.0 - 0.5 - sy * (cy - 0.5)
    return np.array([[sx, 0.0, tx], [0.0, sy, ty]])


def resize_matrix(image_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Photo -> crop matrix that stretches the whole image (the photo is the face)."""
    ih, iw = image_size
    height, width = size
    sx, sy = width / iw, height / ih
    # pixel centres: crop pixel j covers photo (j + 0.5) / s - 0.5
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Apply ``matrix`` to cut a ``size`` (h, w) crop; outside the photo is black.

    When one crop pixel spans several photo pixels, bilinear sampling aliases; we then warp
    at k times the size and average k x k blocks (a box filter), which is what matters for
    faces found in large photos.
    """
    height, width = size
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))  # crop px per photo px
    k = 1
    if scale > 0 and 1.0 / scale > _ANTIALIAS_FROM:
        k = min(_MAX_SUPERSAMPLE, round(1.0 / scale))
    if k > 1:
        big = matrix * k
        # keep pixel centres aligned: crop pixel j's centre is the mean of its k sub-pixels
        big[:, 2] += (k - 1) / 2.0
        out = cv2.warpAffine(
            image,
            big,
            (width * k, height * k),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(
        image,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def crop_matrix(
    crop: CropSpec,
    size: tuple[int, int],
    *,
    image_size: tuple[int, int],
    box: tuple[float, float, float, float] | None,
    landmarks: np.ndarray | None,
) -> np.ndarray:
    """The model's crop policy applied to one face (or to the whole image without one)."""
    if box is None or crop.policy == "none":
        return resize_matrix(image_size, size)
    if crop.policy == "align":
        if landmarks is None:
            raise ValueError("alignment needs 5 landmarks and this face has none")
        assert crop.template is not None  # guaranteed by manifest validation
        matrix = align_matrix(landmarks, crop.template, crop.padding, size)
        return dlib_pixel_grid(matrix, size) if crop.pixel_grid == "dlib" else matrix
    return box_matrix(box, crop.margin, crop.square, size)


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) photo points into crop coordinates."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]
