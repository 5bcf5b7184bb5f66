"""Faults of the machine and of the model files: one line, exit 1, nothing half-written.

Before: a full disk during predict or eval gave two chained tracebacks; a read-only --out, or
an --out that is an existing file, gave tracebacks (the temporary file's clean-up raised
again); a manifest that is not UTF-8 gave a UnicodeDecodeError traceback; a manifest whose
``file`` pointed outside its folder was loaded and run; changing a graph's external data file
after its manifest was written still ran under the recorded sha256 (age 38.27 -> 44.69).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from agebench.core.errors import IntegrityError
from agebench.models.hashing import model_sha256, sha256_file
from agebench.models.manifest import load_manifest
from agebench.models.predictor import Predictor
from agebench.runner import sink
from tests.adversarial.conftest import agebench, many_chips, one_line_error, remount
from tests.fixtures.tiny_models import DLIB_MANIFEST, channel_mean_graph, write_manifest

pytestmark = pytest.mark.slow


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _no_finished_looking_files(out: Path) -> None:
    """Whatever a failed run left must be either absent, complete, or plainly temporary."""
    for path in out.rglob("*"):
        if path.name.endswith(".json") and path.is_file():
            json.loads(path.read_text())  # every .json present is whole
    assert not (out / sink.SUMMARY_FILE).exists()


def test_disk_full_during_predict_is_one_line_and_resumes_identically(
    face_chips: list[Path], tmp_path: Path, tmpfs
):
    photos = many_chips(face_chips, tmp_path / "in", 48)
    out = tmpfs("out", size="96k")  # about 20 records' worth of 4 kB pages
    result = agebench("predict", photos, "--out", out, "--faces", "none")
    line = one_line_error(result)
    assert "No space left on device" in line and str(out) in line
    _no_finished_looking_files(out)
    remount(out, "16m")
    again = agebench("predict", photos, "--out", out, "--faces", "none")
    assert again.returncode == 0, again.stderr
    clean = tmp_path / "clean"
    assert agebench("predict", photos, "--out", clean, "--faces", "none").returncode == 0
    assert _jsonl(out / "predictions.jsonl") == _jsonl(clean / "predictions.jsonl")
    for record in clean.rglob("*.jpg.json"):
        assert json.loads((out / record.name).read_text()) == json.loads(record.read_text())


def _utkface(face_chips: list[Path], root: Path) -> Path:
    (root / "UTKFace").mkdir(parents=True)
    for chip in face_chips:
        shutil.copy(chip, root / "UTKFace" / chip.name)
    return root


def test_disk_full_during_eval_is_one_line_and_resumes_identically(
    face_chips: list[Path], tmp_path: Path, tmpfs
):
    root = _utkface(face_chips, tmp_path / "utk")
    out = tmpfs("out", size="48k")  # the partial rows fit, the report does not
    args = ["eval", "--bench", "utkface", "--root", root, "--bootstrap", "200"]
    result = agebench(*args, "--out", out / "run")
    assert "No space left on device" in one_line_error(result)
    _no_finished_looking_files(out / "run")
    remount(out, "16m")
    again = agebench(*args, "--out", out / "run")
    assert again.returncode == 0, again.stderr
    clean = tmp_path / "clean"
    assert agebench(*args, "--out", clean).returncode == 0
    assert _jsonl(out / "run" / "predictions.jsonl") == _jsonl(clean / "predictions.jsonl")
    metrics = json.loads((out / "run" / "summary.json").read_text())["metrics"]
    assert metrics == json.loads((clean / "summary.json").read_text())["metrics"]


def test_a_partial_row_cut_by_a_full_disk_is_not_taken(
    face_chips: list[Path], tmp_path: Path, tmpfs
):
    root = _utkface(face_chips, tmp_path / "utk")
    out = tmpfs("out", size="24k")  # fills while the partial file is being written
    args = ["eval", "--bench", "utkface", "--root", root, "--bootstrap", "200"]
    assert "No space left on device" in one_line_error(agebench(*args, "--out", out / "r"))
    partial = out / "r" / "predictions.partial.jsonl"
    assert partial.exists()
    remount(out, "16m")
    assert agebench(*args, "--out", out / "r").returncode == 0
    rows = _jsonl(out / "r" / "predictions.jsonl")
    assert len(rows) == len(face_chips) and not partial.exists()


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_read_only_out_is_one_line(face_chips: list[Path], tmp_path: Path, tmpfs, command: str):
    root = _utkface(face_chips[:4], tmp_path / "utk")
    out = tmpfs("ro", read_only=True)
    args = (
        ["predict", root / "UTKFace", "--faces", "none"]
        if command == "predict"
        else ["eval", "--bench", "utkface", "--root", root]
    )
    line = one_line_error(agebench(*args, "--out", out / "run"))
    assert "Read-only file system" in line


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_out_that_is_a_file_is_one_line(face_chips: list[Path], tmp_path: Path, command: str):
    root = _utkface(face_chips[:4], tmp_path / "utk")
    taken = tmp_path / "taken.txt"
    taken.write_text("a user's file\n")
    args = (
        ["predict", root / "UTKFace", "--faces", "none"]
        if command == "predict"
        else ["eval", "--bench", "utkface", "--root", root]
    )
    line = one_line_error(agebench(*args, "--out", taken))
    assert "is a file, not a folder" in line
    assert taken.read_text() == "a user's file\n"


def test_manifest_that_is_not_utf8_is_one_line(tmp_path: Path):
    manifest = write_manifest(tmp_path, name="latin")
    manifest.write_bytes(manifest.read_bytes().replace(b"built in the test", b"b\xe9b\xe9"))
    line = one_line_error(agebench("models", "info", manifest))
    assert "not UTF-8" in line and str(manifest) in line


@pytest.mark.parametrize("where", ["../elsewhere/tiny.onnx", "ABSOLUTE", "link.onnx"])
def test_manifest_graph_outside_its_folder_is_refused(tmp_path: Path, where: str):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    graph = channel_mean_graph(elsewhere / "tiny.onnx", size=8, outputs=1)
    folder = tmp_path / "models"
    folder.mkdir()
    if where == "ABSOLUTE":
        where = str(graph)
    if where == "link.onnx":
        (folder / "link.onnx").symlink_to(graph)
    write_manifest(folder, name="outside", onnx_file="placeholder.onnx")
    manifest = folder / "outside.toml"
    manifest.write_text(manifest.read_text().replace('"placeholder.onnx"', json.dumps(where)))
    line = one_line_error(agebench("models", "info", manifest))
    assert "'file'" in line and "manifest's folder" in line


def _external_model(folder: Path) -> Path:
    """The channel-mean graph with its weights in an external data file beside it."""
    folder.mkdir()
    path = channel_mean_graph(folder / "ext.onnx", size=8, outputs=1)
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, location="ext.bin", size_threshold=0)
    return path


def test_model_sha256_covers_external_data(tmp_path: Path):
    graph = _external_model(tmp_path / "m")
    manifest = write_manifest(tmp_path / "m", name="ext", onnx_file="ext.onnx", sha="0" * 64)
    sha = model_sha256(graph)
    assert sha != sha256_file(graph)  # not the graph file's hash alone
    manifest.write_text(manifest.read_text().replace("0" * 64, sha))
    spec = load_manifest(manifest)
    before = Predictor(spec, device="cpu", tuning="manifest").sha256
    assert before == sha
    # the weights change on disk, the .onnx does not
    graph_file_sha = sha256_file(graph)
    data = tmp_path / "m" / "ext.bin"
    weights = np.frombuffer(data.read_bytes(), dtype=np.float32) * 2.0
    data.write_bytes(weights.astype(np.float32).tobytes())
    assert sha256_file(graph) == graph_file_sha  # the graph file itself is untouched
    with pytest.raises(IntegrityError, match="external data"):
        Predictor(spec, device="cpu", tuning="manifest")
    line = one_line_error(agebench("models", "info", manifest))
    assert "does not match" in line


def test_the_embedded_model_hash_is_unchanged():
    """Self-contained graphs keep the file's own sha256: every manifest so far stays valid."""
    spec = load_manifest(DLIB_MANIFEST)
    assert model_sha256(spec.file) == sha256_file(spec.file) == spec.sha256
