"""Hostile files at the read/decode layer: FIFOs, links to devices, loops, dangling links,
files too large, damaged JPEG data; and memory over 168-megapixel photos (issue 11, sections
2, 3 and 5). Every input is built here; nothing skips.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agebench.core import fileread
from agebench.core.fileread import read_image_bytes
from agebench.faces.crop import CropSpec
from agebench.runner.config import DetectConfig
from agebench.runner.faces import FacePreparer, Job
from agebench.runner.imageio import DECODER_WARNING, ImageDecodeError, decode_image
from agebench.runner.stages import _jpeg_bytes
from agebench.runner.walk import count_images, iter_images
from tests.fixtures.tiny_models import REPO

#: a call that would block forever on a FIFO must finish well within this (a hang fails)
_HANG = 20.0


def _finishes(fn, *args, **kwargs):
    """Run ``fn`` in a thread; fail (not hang) if it blocks. A FIFO opened for reading
    blocks the thread forever, so the test opens the writing side to release it afterwards."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as error:  # handed to the test
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(_HANG)
    assert not thread.is_alive(), f"{fn.__name__} blocked"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


@pytest.fixture()
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo.jpg"
    os.mkfifo(path)
    yield path
    try:  # release a reader that did block (a failing run), so the test process can end
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


@pytest.fixture()
def jpeg(face_chips: list[Path]) -> bytes:
    return face_chips[0].read_bytes()


def _garbled(data: bytes, count: int = 200) -> bytes:
    """``count`` random bytes written over the middle of the entropy-coded data."""
    damaged = bytearray(data)
    middle = len(damaged) // 2 + len(damaged) // 8
    damaged[middle : middle + count] = (
        np.random.default_rng(11).integers(0, 255, count, dtype=np.uint8).tobytes()
    )
    return bytes(damaged)


# ------------------------------------------------------------------ section 2: what is read


def test_fifo_is_refused_without_blocking(fifo: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"not a regular file \(FIFO\)"):
        _finishes(decode_image, fifo)
    with pytest.raises(ImageDecodeError, match=r"not a regular file \(FIFO\)"):
        _finishes(read_image_bytes, fifo)
    assert _finishes(_jpeg_bytes, fifo) is None  # the device path sends it to the host path


def test_fifo_label_row_fails_eval_style_job(fifo: Path, tmp_path: Path) -> None:
    """eval hashes each image's bytes (hash_content): that read went around the checks."""
    preparer = FacePreparer(
        CropSpec(policy="box", margin=0.0), (32, 32), "box", DetectConfig(), None
    )
    job = Job(fifo, Path("fifo.jpg"), box=(0.0, 0.0, 10.0, 10.0), hash_content=True)
    (item,) = _finishes(preparer.prepare_many, [job])
    assert item.status == "failed" and item.error == "not a regular file (FIFO)"
    assert item.sha256 is None


def test_symlink_to_dev_zero_is_refused_before_reading(tmp_path: Path) -> None:
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageDecodeError, match=r"not a regular file \(character device\)"):
        _finishes(decode_image, link)


def test_size_cap_is_a_parameter(tmp_path: Path, jpeg: bytes) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg)
    assert read_image_bytes(path, max_bytes=len(jpeg)) == jpeg
    with pytest.raises(
        ImageDecodeError, match=r"file too large: .* exceeds the limit of 100 bytes"
    ):
        decode_image(path, max_bytes=100)
    assert fileread.DEFAULT_MAX_FILE_BYTES == 256 * 2**20


def test_a_file_growing_while_read_is_not_read_past_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fstat said small, the reads go on: at most cap + 1 bytes are ever read."""
    path = tmp_path / "grow.jpg"
    path.write_bytes(b"\xff" * 10)
    reads: list[int] = []
    monkeypatch.setattr(fileread.os, "read", lambda fd, n: reads.append(n) or b"\0" * n)
    with pytest.raises(ImageDecodeError, match="grew while read"):
        read_image_bytes(path, max_bytes=1000)
    assert sum(reads) == 1001


#: the reason each hostile entry of :func:`_hostile_folder` is recorded with
HOSTILE_REASONS = {
    "dangling.png": "dangling symlink",
    "dir.jpg": "is a directory, not an image file",
    "fifo.jpg": "not a regular file (FIFO)",
    "loop.jpg": "symlink loop",
    "zero.jpg": "not a regular file (character device)",
}


def _hostile_folder(tmp_path: Path, jpeg: bytes) -> Path:
    """One good photo beside every kind of entry that must not be read, and two that must
    not even be listed (a hidden name, a name that is no image's)."""
    root = tmp_path / "photos"
    root.mkdir()
    (root / "good.jpg").write_bytes(jpeg)
    os.mkfifo(root / "fifo.jpg")
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "dangling.png").symlink_to(tmp_path / "gone.png")
    (root / "zero.jpg").symlink_to("/dev/zero")
    (root / "dir.jpg").symlink_to(tmp_path, target_is_directory=True)
    (root / "notes.txt").write_text("not an image name")
    (root / ".hidden.jpg").symlink_to("/dev/zero")
    return root


def test_every_hostile_entry_of_a_folder_gets_a_reason(tmp_path: Path, jpeg: bytes) -> None:
    root = _hostile_folder(tmp_path, jpeg)
    found = _finishes(lambda: [p.name for p in iter_images(root)])
    assert found == ["dangling.png", "dir.jpg", "fifo.jpg", "good.jpg", "loop.jpg", "zero.jpg"]
    assert count_images(root) == len(found)
    preparer = FacePreparer(
        CropSpec(policy="box", margin=0.0), (32, 32), "box", DetectConfig(), None
    )
    jobs = [Job(p, Path(p.name), box=(0.0, 0.0, 50.0, 50.0)) for p in iter_images(root)]
    items = _finishes(preparer.prepare_many, jobs)
    assert {i.relative.name: i.error for i in items} == {**HOSTILE_REASONS, "good.jpg": None}


def test_walk_prints_no_warning_for_odd_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    with caplog.at_level("WARNING"):
        for _ in range(3):  # predict walks three times: count, run, summary
            assert [p.name for p in iter_images(tmp_path)] == ["loop.jpg"]
    assert caplog.records == []


@pytest.mark.slow
def test_predict_on_a_fifo_photo_and_a_hostile_folder_exits(tmp_path: Path, jpeg: bytes) -> None:
    """The CLI end to end, in a subprocess with a timeout: a hang fails the test."""
    root = _hostile_folder(tmp_path, jpeg)
    for target, out in ((root / "fifo.jpg", tmp_path / "one"), (root, tmp_path / "all")):
        run = subprocess.run(
            [sys.executable, "-m", "agebench", "predict", str(target), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert "Traceback" not in run.stderr, run.stderr
        assert "Corrupt JPEG" not in run.stderr
        summary = json.loads((out / "summary.json").read_text())
        errors = {Path(f["image"]).name: f["error"] for f in summary["failures"]}
        assert "not a regular file (FIFO)" in errors.values()
    assert errors == HOSTILE_REASONS
    assert summary["counts"]["images"] == 6 and summary["counts"]["images_ok"] == 1


# --------------------------------------------------------------- section 5: damaged data


def test_garbled_jpeg_is_noted_not_silently_ok(tmp_path: Path, jpeg: bytes) -> None:
    path = tmp_path / "garbled.jpg"
    path.write_bytes(_garbled(jpeg))
    decoded = decode_image(path)
    warnings = [n for n in decoded.notes if n.startswith(DECODER_WARNING)]
    assert len(warnings) == 1 and "Corrupt JPEG data" in warnings[0], decoded.notes
    with pytest.raises(ImageDecodeError, match=f"^{path}: {DECODER_WARNING}Corrupt JPEG data"):
        decode_image(path, strict=True)
    clean = decode_image(_write(tmp_path / "clean.jpg", jpeg), strict=True)
    assert clean.notes == ()


def test_decoder_warnings_reach_the_record_and_strict_fails_it(tmp_path: Path, jpeg: bytes):
    path = _write(tmp_path / "garbled.jpg", _garbled(jpeg))
    job = Job(path, Path("garbled.jpg"), box=(0.0, 0.0, 100.0, 100.0), hash_content=True)
    crop = CropSpec(policy="box", margin=0.0)
    (lenient,) = FacePreparer(crop, (32, 32), "box", DetectConfig(), None).prepare_many([job])
    assert lenient.status == "ok" and lenient.notes[0].startswith(DECODER_WARNING)
    assert lenient.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    strict = FacePreparer(crop, (32, 32), "box", DetectConfig(), None, strict=True)
    (refused,) = strict.prepare_many([job])
    assert refused.status == "failed" and refused.error.startswith(DECODER_WARNING)


def test_damaged_jpeg_pillow_decodes_itself_is_checked_too(tmp_path: Path, face_rgb) -> None:
    """CMYK JPEGs stay with Pillow, which drops libjpeg's warnings: they are asked for."""
    buffer = io.BytesIO()
    Image.fromarray(face_rgb).convert("CMYK").save(buffer, "JPEG", quality=90)
    path = _write(tmp_path / "cmyk.jpg", _garbled(buffer.getvalue()))
    decoded = decode_image(path)
    assert any(n.startswith(DECODER_WARNING) for n in decoded.notes), decoded.notes


def test_decoder_prints_nothing(tmp_path: Path, jpeg: bytes) -> None:
    """libjpeg's message used to reach stderr with no file name (OpenCV's emit_message)."""
    path = _write(tmp_path / "garbled.jpg", _garbled(jpeg))
    code = f"from agebench.runner.imageio import decode_image; decode_image({str(path)!r})"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0 and run.stderr == ""


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------- section 3: bounded memory


def _big_photo(path: Path, chips: list[Path]) -> None:
    """15000 x 11200 (168 MP, ~3 MB as JPEG): three real chips, 8x enlarged, on a gradient."""
    background = Image.linear_gradient("L").resize((150, 112)).convert("RGB")
    photo = background.resize((15000, 11200), Image.BILINEAR)
    for i, chip in enumerate(chips):
        with Image.open(chip) as image:
            face = image.convert("RGB").resize((1600, 1600), Image.BICUBIC)
        photo.paste(face, (1500 + i * 4500, 3000 + 2000 * (i % 2)))
    photo.save(path, quality=85)


def _predict_peak_mib(folder: Path, out: Path) -> tuple[float, list[dict]]:
    """``agebench predict`` in a child process whose peak RSS (VmHWM) it reports."""
    code = (
        "import resource, subprocess, sys\n"
        "run = subprocess.run([sys.executable, '-m', 'agebench', 'predict', sys.argv[1],"
        " '--out', sys.argv[2]], capture_output=True, text=True)\n"
        "print(run.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.stderr.write(run.stderr)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    status, kib = run.stdout.split()
    assert status == "0", run.stderr
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return int(kib) / 1024, rows


@pytest.mark.slow
def test_detection_over_168_megapixel_photos_stays_under_1_5_gb(
    tmp_path: Path, face_chips: list[Path]
) -> None:
    """Before: 1.8 GiB for one such photo, 2.7 GiB for three (5.6 GB on the issue's machine).
    The ages of the enlarged faces stay those of the same chips in a normal-size photo."""
    chips = face_chips[:3]
    folder = tmp_path / "big"
    folder.mkdir()
    _big_photo(folder / "big0.jpg", chips)
    for i in (1, 2):
        (folder / f"big{i}.jpg").write_bytes((folder / "big0.jpg").read_bytes())
    peak, rows = _predict_peak_mib(folder, tmp_path / "out")
    assert peak < 1536, f"peak RSS {peak:.0f} MiB"
    assert len(rows) == 9 and all(r["status"] == "ok" for r in rows)
    normal = tmp_path / "normal"
    normal.mkdir()
    for i, chip in enumerate(chips):  # the same enlarged faces in 2400 x 2000 photos, which
        # are decoded at full size and cropped exactly as before this change
        photo = Image.linear_gradient("L").resize((2400, 2000)).convert("RGB")
        with Image.open(chip) as image:
            photo.paste(image.convert("RGB").resize((1600, 1600), Image.BICUBIC), (400, 200))
        photo.save(normal / f"n{i}.jpg", quality=85)
    _, reference = _predict_peak_mib(normal, tmp_path / "ref")
    expected = {r["image"]: r["age"] for r in reference}
    by_x = sorted((r for r in rows if r["image"] == "big0.jpg"), key=lambda r: r["box"][0])
    for i, row in enumerate(by_x):
        x1, y1 = row["box"][:2]
        assert abs(x1 - (1500 + i * 4500)) < 400 and abs(y1 - (3000 + 2000 * (i % 2))) < 400
        # 3.5 years: the full-size reference crops a 1600 px face with warp's 8x supersampling
        # cap (16 px per crop px: aliased); the DCT-reduced source does not alias. Measured
        # before this change on the same 168 MP photo: ages within 0.13 of these.
        assert row["age"] == pytest.approx(expected[f"n{i}.jpg"], abs=3.5)
