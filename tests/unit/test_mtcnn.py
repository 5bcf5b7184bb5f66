"""Our vectorised MTCNN cascade against facenet-pytorch's ``detect_face``, on real face chips.

Reference: one ``detect_face`` call per image (its batch mode breaks NMS ties across images),
on the 48 shared 200x200 UTKFace chips and on the same chips framed in black to 280x280, with
facenet's stretched edge crops (``zero_pad=False``). Measured on them (oneDNN path, AVX-512
CPU): the same number of faces on every image, boxes and landmarks within 1e-4 px, scores
within 2e-7; the nets' float rounding is all that differs. Tolerances are set well above that
and well below anything that matters: 0 count differences, 0.05 px, 1e-4 in score.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from agebench.faces.detect import Face, FaceDetector
from agebench.faces.mtcnn import Detection, MtcnnCascade
from agebench.faces.mtcnn_resize import integral_cv2, integral_torch
from tests.fixtures.facenet_reference import facenet_mtcnn

PIXELS = 0.05  # box and landmark tolerance, px
SCORE = 1e-4
PAD = 40  # FaceDetector's retry_pad of 0.2 on a 200 px chip


@pytest.fixture(scope="module")
def chips(face_chips: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in face_chips])


@pytest.fixture(scope="module")
def padded(chips: np.ndarray) -> np.ndarray:
    return np.pad(chips, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))


@pytest.fixture(scope="module")
def cascade() -> MtcnnCascade:
    return MtcnnCascade()


@pytest.fixture(scope="module")
def facenet():
    pnet, rnet, onet, detect_face = facenet_mtcnn()
    nets = [cls().eval() for cls in (pnet, rnet, onet)]

    def run(image: np.ndarray) -> list[Detection]:
        with torch.inference_mode():
            boxes, points = detect_face(image[None], 20, *nets, [0.6, 0.7, 0.7], 0.709, "cpu")
        rows = np.asarray(boxes[0], dtype=np.float64).reshape(-1, 5)
        marks = np.asarray(points[0], dtype=np.float64).reshape(-1, 5, 2)
        return [(r[:4], m, float(r[4])) for r, m in zip(rows, marks, strict=True)]

    return run


def _assert_same(ours: list[Detection], theirs: list[Detection], pixels: float, score: float):
    assert len(ours) == len(theirs)
    for (box, points, p), (ref_box, ref_points, ref_p) in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(box, ref_box, rtol=0, atol=pixels)
        np.testing.assert_allclose(points, ref_points, rtol=0, atol=pixels)
        assert p == pytest.approx(ref_p, abs=score)


@pytest.mark.parametrize("framed", [False, True], ids=["bare-200", "padded-280"])
def test_matches_facenet_on_real_chips(framed, chips, padded, cascade, facenet):
    images = padded if framed else chips
    ours = cascade.detect(images, 20)
    found = 0
    for image, mine in zip(images, ours, strict=True):
        _assert_same(mine, facenet(image), PIXELS, SCORE)
        found += len(mine)
    assert found >= len(images)  # every chip shows a face


def test_dense_path_matches_onednn_path(chips, cascade):
    """The plain-tensor path (CUDA, or CPU builds without oneDNN) gives the same faces."""
    dense = MtcnnCascade(mkldnn=False)
    assert not dense._nets.mkldnn
    for mine, other in zip(cascade.detect(chips, 20), dense.detect(chips, 20), strict=True):
        _assert_same(other, mine, 1e-3, 1e-6)


def test_summed_area_tables_agree(chips):
    """OpenCV's table (CPU) and the cumsum one (CUDA) are the same exact integers."""
    images = np.ascontiguousarray(chips[:4, :37, :53])
    table = integral_cv2(images)
    assert table.dtype == torch.int32 and table.shape == (4, 3, 38, 54)
    assert torch.equal(table, integral_torch(torch.from_numpy(images)))
    assert int(table[1, 2, -1, -1]) == int(images[1, :, :, 2].astype(np.int64).sum())


def test_concurrent_calls_agree(chips, cascade):
    """Two worker threads sharing one cascade get what one thread gets."""
    parts = [chips[:6], chips[6:12], chips[12:18], chips[18:24]]
    alone = [cascade.detect(p, 20) for p in parts]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda p: cascade.detect(p, 20), parts))
    for a, b in zip(alone, together, strict=True):
        for mine, other in zip(a, b, strict=True):
            _assert_same(other, mine, 1e-3, 1e-6)


def test_batch_equals_single_images(chips, padded, cascade):
    for images in (chips[:12], padded[:12]):
        batch = cascade.detect(images, 20)
        for image, together in zip(images, batch, strict=True):
            _assert_same(cascade.detect(image[None], 20)[0], together, 1e-3, 1e-6)


def test_nothing_to_find(cascade):
    gradient = np.broadcast_to(
        np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], (120, 160, 3)
    )
    assert cascade.detect(np.stack([gradient, gradient]), 20) == [[], []]
    assert cascade.detect(np.zeros((2, 10, 10, 3), np.uint8), 20) == [[], []]
    assert cascade.detect(np.zeros((0, 50, 50, 3), np.uint8), 20) == []
    with pytest.raises(ValueError, match="uint8 RGB"):
        cascade.detect(np.zeros((50, 50, 3), np.uint8), 20)


def _faces_equal(a: list[Face], b: list[Face]) -> None:
    assert len(a) == len(b)
    for f, g in zip(a, b, strict=True):
        assert f.padded_retry == g.padded_retry
        np.testing.assert_allclose(f.box, g.box, rtol=0, atol=1e-3)
        np.testing.assert_allclose(f.landmarks, g.landmarks, rtol=0, atol=1e-3)
        assert f.score == pytest.approx(g.score, abs=1e-6)


def test_detect_many_equals_detect_on_a_mixed_list(chips):
    """Sizes that batch together and apart, downscaling, retries, no face, too small."""
    detector = FaceDetector(max_side=320)
    canvas = np.full((360, 480, 3), 90, np.uint8)  # a face inside a wider photo
    canvas[60:260, 200:400] = chips[3]
    big = cv2.resize(chips[5], (400, 400), interpolation=cv2.INTER_CUBIC)  # downscaled to 320
    gradient = np.broadcast_to(
        np.linspace(0, 255, 200, dtype=np.uint8)[:, None, None], (200, 200, 3)
    )
    images = [
        chips[0],
        canvas,
        np.ascontiguousarray(gradient),
        chips[1],
        big,
        np.zeros((8, 8, 3), np.uint8),
        cv2.resize(chips[2], (150, 180)),
        chips[4],
    ]
    many = detector.detect_many(images)
    assert len(many) == len(images)
    for image, faces in zip(images, many, strict=True):
        _faces_equal(faces, detector.detect(image))
    assert many[2] == [] and many[5] == []
    assert all(many[i] for i in (0, 1, 3, 4, 6, 7))
    # black-padded crops find tight chips' faces in one pass: no retry, as for a face inside
    assert not many[0][0].padded_retry and not many[1][0].padded_retry
    assert detector.detect_many([]) == []


def test_black_padded_crops_give_tight_chips_the_landmarks_of_a_framed_image(chips, padded):
    """A face cut by the image edge, cropped whole with black outside (the original MTCNN's
    padding), gets nearly the landmarks that detection on the chip framed in black finds;
    facenet's stretched crops do not. Measured on the 48 chips: mean landmark error 1.42 px
    (median 1.35, worst face 4.4) against 11.0 px (median 9.6, worst 26.8) stretched."""
    framed = MtcnnCascade().detect(padded, 20)
    errors = {}
    for zero_pad in (False, True):
        found = MtcnnCascade(zero_pad=zero_pad).detect(chips, 20)
        assert all(found)
        errors[zero_pad] = np.array(
            [np.abs(f[0][1] - (r[0][1] - PAD)).mean() for f, r in zip(found, framed, strict=True)]
        )
    assert errors[True].mean() < 2.0 and errors[True].max() < 6.0
    assert errors[False].mean() > 3 * errors[True].mean()


def test_black_padded_crop_sums_only_what_is_inside():
    from agebench.faces.mtcnn_resize import crops

    image = np.full((1, 10, 10, 3), 200, np.uint8)
    table = integral_cv2(image)
    # 1-based inclusive box x 6..15, y 1..10: its right half lies outside the 10 px image
    box = torch.tensor([[6.0, 1.0, 15.0, 10.0, 1.0]])
    which = torch.zeros(1, dtype=torch.int64)
    padded, valid = crops(table, which, box, 10, zero_pad=True)
    stretched, _ = crops(table, which, box, 10, zero_pad=False)
    assert valid.tolist() == [True]
    left, right = padded[0, :, :, :5], padded[0, :, :, 5:]
    assert torch.allclose(left, torch.tensor(200.0)) and torch.allclose(right, torch.tensor(0.0))
    assert torch.allclose(stretched, torch.tensor(200.0))  # the inside half, stretched
    outside = torch.tensor([[20.0, 20.0, 30.0, 30.0, 1.0]])
    assert crops(table, which, outside, 10, zero_pad=True)[1].tolist() == [False]


def test_detecting_imports_neither_torchvision_nor_facenet():
    """Their imports pull in torch._dynamo (about a second of every detecting run's start);
    the cascade reads its shipped weight files and loads torchvision's compiled NMS alone."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from agebench.faces.detect import FaceDetector\n"
        "image = np.zeros((120, 160, 3), np.uint8)\n"
        "image[30:90, 50:110] = 200\n"
        "FaceDetector().detect_many([image, image])\n"
        "from agebench.faces.mtcnn_boxes import nms\n"
        "import torch\n"
        "boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])\n"
        "print(nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist())\n"
        "print(sorted(m for m in ('torchvision', 'facenet_pytorch', 'torch._dynamo')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[0, 2]", "[]"]


def test_shipped_weights_are_facenets_own():
    """agebench/weights/mtcnn holds facenet-pytorch 2.6.0's data files, byte for byte."""
    from agebench.faces import mtcnn_weights

    facenet_mtcnn()  # the reference must be importable (fails in CI, skips locally)
    import facenet_pytorch

    facenet_data = Path(facenet_pytorch.__file__).parent / "data"
    for path in mtcnn_weights.weight_files():
        assert path.read_bytes() == (facenet_data / path.name).read_bytes()


def test_damaged_weights_are_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from agebench.core.errors import AgebenchError
    from agebench.faces import mtcnn_weights

    for path in mtcnn_weights.weight_files():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "rnet.pt").write_bytes(b"not the weights")
    monkeypatch.setattr(mtcnn_weights, "MTCNN_DIR", tmp_path)
    mtcnn_weights.weight_files.cache_clear()
    try:
        with pytest.raises(AgebenchError, match=r"rnet\.pt: sha256 [0-9a-f]{64}, not the shipped"):
            FaceDetector()
        (tmp_path / "rnet.pt").unlink()
        with pytest.raises(AgebenchError, match=r"rnet\.pt: MTCNN weights unreadable"):
            mtcnn_weights.weight_files()
    finally:
        mtcnn_weights.weight_files.cache_clear()
