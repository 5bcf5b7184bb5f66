"""Damaged data is never silently "ok", from the command line: a JPEG with garbled bytes in
mid-scan is scored with a decoder warning in its notes and counted in the summary, or failed
with that reason under --strict; a photo named directly is recorded under its own name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from agebench.runner.imageio import DECODER_WARNING
from tests.adversarial.conftest import agebench
from tests.adversarial.test_decode import _garbled

pytestmark = pytest.mark.slow


def _folder(face_chips: list[Path], root: Path) -> Path:
    """A UTKFace folder of four chips, the second garbled in mid-scan."""
    folder = root / "UTKFace"
    folder.mkdir(parents=True)
    for chip in face_chips[:4]:
        shutil.copy(chip, folder / chip.name)
    damaged = folder / face_chips[1].name
    damaged.write_bytes(_garbled(damaged.read_bytes()))
    return root


def test_predict_notes_counts_and_strict_fails_a_damaged_jpeg(
    face_chips: list[Path], tmp_path: Path
):
    photos = _folder(face_chips, tmp_path / "utk") / "UTKFace"
    damaged = face_chips[1].name
    lenient = agebench("predict", photos, "--faces", "none", "--out", tmp_path / "lenient")
    assert lenient.returncode == 0, lenient.stderr
    assert "Corrupt JPEG" not in lenient.stderr.replace(DECODER_WARNING, "")  # not libjpeg's own
    assert "1 image(s) decoded with warnings" in " ".join(lenient.stderr.split())
    record = json.loads((tmp_path / "lenient" / f"{damaged}.json").read_text())
    assert record["status"] == "ok"
    assert [n for n in record["notes"] if n.startswith(DECODER_WARNING + "Corrupt JPEG data")]
    summary = json.loads((tmp_path / "lenient" / "summary.json").read_text())
    assert summary["counts"]["images_decoder_warnings"] == 1
    strict = agebench(
        "predict", photos, "--faces", "none", "--strict", "--out", tmp_path / "strict"
    )
    assert strict.returncode == 3, strict.stderr  # some images failed; the run went on
    summary = json.loads((tmp_path / "strict" / "summary.json").read_text())
    (failure,) = summary["failures"]
    assert failure["image"] == damaged and failure["error"].startswith(DECODER_WARNING)
    assert summary["counts"]["images_ok"] == 3


def test_eval_rows_carry_the_warning_and_the_summary_counts_it(
    face_chips: list[Path], tmp_path: Path
):
    root = _folder(face_chips, tmp_path / "utk")
    args = ["eval", "--bench", "utkface", "--root", root, "--bootstrap", "100"]
    lenient = agebench(*args, "--out", tmp_path / "lenient")
    assert lenient.returncode == 0, lenient.stderr
    summary = json.loads((tmp_path / "lenient" / "summary.json").read_text())
    assert summary["counts"]["decoder_warnings"] == 1 and summary["counts"]["scored"] == 4
    rows = [json.loads(line) for line in (tmp_path / "lenient" / "predictions.jsonl").open()]
    assert sum(any(n.startswith(DECODER_WARNING) for n in r["notes"]) for r in rows) == 1
    strict = agebench(*args, "--strict", "--out", tmp_path / "strict")
    assert strict.returncode == 0, strict.stderr
    summary = json.loads((tmp_path / "strict" / "summary.json").read_text())
    assert summary["counts"]["failed"] == 1 and summary["counts"]["scored"] == 3


def test_a_fifo_named_as_photos_is_recorded_under_its_name(tmp_path: Path):
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    result = agebench("predict", fifo, "--out", tmp_path / "out", timeout=120)
    assert result.returncode == 3, result.stderr
    (failure,) = json.loads((tmp_path / "out" / "summary.json").read_text())["failures"]
    assert failure == {
        "image": "camera.jpg",  # was "." before
        "status": "failed",
        "error": "not a regular file (FIFO)",
    }
