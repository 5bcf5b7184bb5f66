"""Alignment geometry: transforms recover known motions and crops land where they should."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agebench.faces.align import (
    align_matrix,
    apply_matrix,
    box_matrix,
    crop_matrix,
    dlib_pixel_grid,
    resize_matrix,
    similarity_transform,
    warp,
)
from agebench.faces.crop import CropSpec
from agebench.faces.templates import TEMPLATES


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


@pytest.mark.parametrize(
    ("scale", "angle", "tx", "ty"), [(1, 0, 0, 0), (0.3, 0.4, 12, -7), (2.5, -1.2, -40, 3)]
)
def test_similarity_transform_recovers_known_motion(scale, angle, tx, ty):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    truth = _similarity(scale, angle, tx, ty)
    estimated = similarity_transform(src, apply_matrix(truth, src))
    assert estimated == pytest.approx(truth, abs=1e-9)


def test_similarity_never_reflects():
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = src * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_similarity_rejects_degenerate_points():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))


def test_template_padding_follows_dlib():
    template = TEMPLATES.get("dlib-chip-mtcnn")
    # padding p maps t to (t + p) / (1 + 2p), then times the size
    dst = template.destination(64, 64, 0.2)
    assert dst == pytest.approx((template.array() + 0.2) / 1.4 * 64)
    # eyes level and symmetric about the nose's vertical
    assert template.points[0][1] == template.points[1][1]
    axis = (template.points[0][0] + template.points[1][0]) / 2
    assert axis == pytest.approx(template.points[2][0], abs=0.01)


def test_landmarks_on_template_map_exactly():
    template = TEMPLATES.get("arcface-112")
    dst = template.destination(112, 112, 0.0)
    # a face rotated by 30 degrees and scaled by 3 in some photo
    photo = apply_matrix(_similarity(3.0, math.radians(30), 200, 100), dst)
    m = align_matrix(photo, "arcface-112", 0.0, (112, 112))
    assert apply_matrix(m, photo) == pytest.approx(dst, abs=1e-9)


def test_dlib_pixel_grid_spacing_and_centre():
    # a chip of 64 px covering 128 photo px: plain spacing 2, dlib spacing (128 - 1) / 63
    m = np.array([[0.5, 0.0, 10.0], [0.0, 0.5, 20.0]])
    grid = dlib_pixel_grid(m, (64, 64))
    spacing = 1.0 / grid[0, 0]
    assert spacing == pytest.approx(127 / 63)
    # chip pixel 31.5 sits where the plain transform puts chip coordinate 32
    centre_photo = np.linalg.solve(m[:, :2], np.array([32.0, 32.0]) - m[:, 2])
    assert apply_matrix(grid, centre_photo[None])[0] == pytest.approx([31.5, 31.5])


def test_box_matrix_margin_and_square():
    # 40x20 box at (10, 30); square -> 40x40; margin 0.5 -> 80x80 spanning x -10..70, y 0..80.
    # Edges are continuous coordinates; OpenCV puts pixel centres at integers, so the grown
    # box's edges (-10.5, -0.5) and (69.5, 79.5) land on the crop's edges -0.5 and 63.5.
    m = box_matrix((10, 30, 50, 50), margin=0.5, square=True, size=(64, 64))
    corners = apply_matrix(m, np.array([[-10.5, -0.5], [69.5, 79.5]]))
    assert corners == pytest.approx(np.array([[-0.5, -0.5], [63.5, 63.5]]))


def test_box_crop_of_a_uniform_image_stays_uniform():
    photo = np.full((90, 90, 3), 180, dtype=np.uint8)
    for size in ((8, 8), (64, 64)):
        out = warp(photo, box_matrix((0, 0, 90, 90), 0.0, True, size), size)
        assert out.min() >= 178, size  # no black seeping in at the edges
    # enlarging, the outermost crop pixels sit within half a photo pixel outside the image and
    # blend with the black border; everything inside that ring stays uniform
    out = warp(photo, box_matrix((0, 0, 90, 90), 0.0, True, (150, 150)), (150, 150))
    assert out[1:-1, 1:-1].min() >= 178


def test_whole_image_box_equals_resize():
    m = box_matrix((0, 0, 100, 200), 0.0, False, (50, 25))
    assert m == pytest.approx(resize_matrix((200, 100), (50, 25)))


def test_resize_matrix_maps_pixel_centres():
    m = resize_matrix((200, 100), (50, 25))  # (h, w) -> (h, w), factor 1/4
    # photo pixel centres 1.5 (between pixels 1 and 2) -> crop pixel 0
    assert apply_matrix(m, np.array([[1.5, 1.5]]))[0] == pytest.approx([0.0, 0.0])


def test_warp_moves_a_dot_to_the_template_point():
    photo = np.zeros((400, 400, 3), dtype=np.uint8)
    landmarks = np.array(
        [[150.0, 160.0], [250.0, 160.0], [200.0, 220.0], [160.0, 270.0], [240.0, 270.0]]
    )
    photo[216:225, 196:205] = 255  # a bright square on the nose
    crop = CropSpec(policy="align", template="arcface-112", padding=0.0)
    m = crop_matrix(
        crop, (112, 112), image_size=photo.shape[:2], box=(100, 100, 300, 300), landmarks=landmarks
    )
    out = warp(photo, m, (112, 112))
    ys, xs = np.nonzero(out[..., 0] > 128)
    nose = apply_matrix(m, landmarks[2:3])[0]
    assert (xs.mean(), ys.mean()) == pytest.approx(tuple(nose), abs=1.0)


def test_warp_antialiases_large_faces():
    # a 1-pixel checkerboard averages to mid-grey when shrunk 8x; plain bilinear would alias
    checker = (np.indices((512, 512)).sum(axis=0) % 2 * 255).astype(np.uint8)
    photo = np.repeat(checker[..., None], 3, axis=2)
    out = warp(photo, resize_matrix((512, 512), (64, 64)), (64, 64))
    assert abs(float(out.mean()) - 127.5) < 2
    assert float(out.std()) < 3


def test_none_policy_and_missing_box_resize_whole_image():
    crop = CropSpec(policy="align", template="arcface-112")
    m = crop_matrix(crop, (64, 64), image_size=(128, 128), box=None, landmarks=None)
    assert m == pytest.approx(resize_matrix((128, 128), (64, 64)))


# --- every registered template (read from the registry at collection: a new one is tested here)


@pytest.mark.parametrize("name", TEMPLATES.names())
def test_every_template_is_five_finite_points_in_its_square(name: str):
    template = TEMPLATES.get(name)
    points = template.array()
    assert template.name == name and template.description
    assert points.shape == (5, 2)
    assert np.isfinite(points).all()
    # coordinates are fractions of the template's square (faces/templates.py)
    assert ((points >= 0.0) & (points <= 1.0)).all(), points
    # MTCNN's order: eyes left to right, above the nose, above the mouth corners left to right
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


@pytest.mark.parametrize("padding", [0.0, 0.25])
@pytest.mark.parametrize("name", TEMPLATES.names())
def test_every_template_aligns_onto_itself_as_identity(name: str, padding: float):
    """Landmarks already where the template puts them are not moved: a non-square crop also
    catches width and height swapped between ``destination`` and ``align_matrix``."""
    height, width = 96, 112
    on_template = TEMPLATES.get(name).destination(width, height, padding)
    m = align_matrix(on_template, name, padding, (height, width))
    assert m == pytest.approx(np.eye(2, 3), abs=1e-9)
