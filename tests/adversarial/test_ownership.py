"""A run owns its output folder: concurrent runs, killed runs and foreign records.

Before: two predicts with different models into one --out both exited 0 and left 224 records
of one model and 64 of the other under a summary naming one; an eval killed mid-run was taken
over by another model's eval, which reported its MAE over the first model's partial rows; a
second identical predict made the first crash. Each case here runs real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from agebench.runner import sink
from agebench.runner.ownership import OWNER_FILE, owned_folder
from tests.adversarial.conftest import agebench, many_chips, one_line_error, start, wait_for

pytestmark = pytest.mark.slow

#: enough images that a run with one worker is still going when the second one starts
BUSY_IMAGES = 1920
SLOW = ("--faces", "none", "--workers", "1", "--batch-size", "4")


def _records(out: Path) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted(out.rglob("*.jpg.json"))
        if json.loads(p.read_text()).get("schema") == sink.PREDICTION_SCHEMA
    ]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _running(process, out: Path, at_least: int = 1) -> bool:
    assert process.poll() is None, process.communicate()
    return (out / OWNER_FILE).exists() and len(list(out.rglob("*.jpg.json"))) >= at_least


def test_a_held_folder_is_refused_naming_its_holder(face_chips: list[Path], tmp_path: Path):
    photos = many_chips(face_chips, tmp_path / "in", 4)
    out = tmp_path / "out"
    with owned_folder(out):
        result = agebench("predict", photos, "--out", out, "--faces", "none")
        line = one_line_error(result)
        assert f"in use by agebench run pid {os.getpid()}" in line and "--wait" in line
        root = _utkface(face_chips, tmp_path / "utk", 4)
        result = agebench(*_eval(root, out))
        assert "in use by agebench run pid" in one_line_error(result)
    assert not list(out.rglob("*.jpg.json"))  # nothing was written by the refused runs


def test_wait_runs_once_the_holder_is_done(face_chips: list[Path], tmp_path: Path):
    photos = many_chips(face_chips, tmp_path / "in", 4)
    out = tmp_path / "out"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with owned_folder(out):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    waiter = start("predict", photos, "--out", out, "--faces", "none", "--wait")
    try:
        assert waiter.stderr is not None
        first_line = waiter.stderr.readline()  # printed once it found the folder held
        assert waiter.poll() is None and not list(out.rglob("*.jpg.json"))
        release.set()
        _, stderr = waiter.communicate(timeout=240)
    finally:
        release.set()
        holder.join()
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, stderr
    assert f"waiting for agebench run pid {os.getpid()}" in first_line
    assert len(_records(out)) == 4


def test_two_models_at_once_never_mix(face_chips: list[Path], tmp_path: Path, tiny_model: Path):
    photos = many_chips(face_chips, tmp_path / "in", BUSY_IMAGES)
    out = tmp_path / "out"
    first = start("predict", photos, "--out", out, *SLOW)
    try:
        wait_for(lambda: _running(first, out), "the first run's first record")
        second = agebench("predict", photos, "--out", out, "--model", tiny_model, *SLOW)
        assert "in use by agebench run pid" in one_line_error(second)
        same = agebench("predict", photos, "--out", out, *SLOW)  # the very same run, twice
        assert "in use by agebench run pid" in one_line_error(same)
        _, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr  # the first was not disturbed (it used to crash)
    records = _records(out)
    assert len(records) == BUSY_IMAGES
    assert {r["model"]["name"] for r in records} == {"dlib-age-v1"}
    assert {row["model"] for row in _jsonl(out / "predictions.jsonl")} == {"dlib-age-v1"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "dlib-age-v1"
    rerun = agebench("predict", photos, "--out", out, *SLOW)
    assert rerun.returncode == 0, rerun.stderr
    resumed = json.loads((out / "summary.json").read_text())["counts"]
    assert resumed["skipped_resumed"] == BUSY_IMAGES and resumed["processed_this_run"] == 0


def test_a_killed_run_frees_its_folder_but_not_its_identity(
    face_chips: list[Path], tmp_path: Path, tiny_model: Path
):
    photos = many_chips(face_chips, tmp_path / "in", BUSY_IMAGES)
    out = tmp_path / "out"
    first = start("predict", photos, "--out", out, *SLOW)
    wait_for(lambda: _running(first, out, at_least=40), "40 records")
    first.send_signal(signal.SIGKILL)
    first.wait()
    # the lock died with its holder; the folder still holds dlib-age-v1's records
    other = agebench("predict", photos, "--out", out, "--model", tiny_model, *SLOW[:2])
    line = one_line_error(other)
    assert "holds another run" in line and "model.name: 'dlib-age-v1' there, 'tiny' here" in line
    assert "--overwrite" in line
    # resuming the killed run gives what an uninterrupted run gives
    resumed = agebench("predict", photos, "--out", out, "--faces", "none")
    assert resumed.returncode == 0, resumed.stderr
    clean = tmp_path / "clean"
    assert agebench("predict", photos, "--out", clean, "--faces", "none").returncode == 0
    assert _jsonl(out / "predictions.jsonl") == _jsonl(clean / "predictions.jsonl")
    # and --overwrite hands the folder to the other model, wholly
    replaced = agebench("predict", photos, "--out", out, "--model", tiny_model, "--overwrite")
    assert replaced.returncode in (0, 3), replaced.stderr
    assert {r["model"]["name"] for r in _records(out)} == {"tiny"}


def test_records_of_another_run_are_redone_not_resumed(face_chips: list[Path], tmp_path: Path):
    """A folder that an earlier version filled, or that someone edited: a record whose run
    digest or input file does not match is done again, never taken over."""
    photos = many_chips(face_chips, tmp_path / "in", 6)
    out = tmp_path / "out"
    assert agebench("predict", photos, "--out", out, "--faces", "none").returncode == 0
    record_path = out / "00002.jpg.json"
    forged = json.loads(record_path.read_text())
    forged["run"] = "0" * 16
    forged["faces"][0]["age"] = 99.0
    record_path.write_text(json.dumps(forged))
    changed = photos / "00004.jpg"  # an input replaced since its record (a new file: the
    changed.unlink()  # chips are hard links to the shared ones, never to be written through)
    shutil.copyfile(face_chips[5], changed)
    rerun = agebench("predict", photos, "--out", out, "--faces", "none")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["skipped_resumed"] == 4 and counts["processed_this_run"] == 2
    assert json.loads(record_path.read_text())["faces"][0]["age"] != 99.0


def _eval(root: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    fixed = ["--bench", "utkface", "--root", root, "--out", out, "--bootstrap", "100"]
    return ["eval", *fixed, *extra]


def _utkface(face_chips: list[Path], root: Path, n: int) -> Path:
    folder = root / "UTKFace"
    folder.mkdir(parents=True)
    for i in range(n):
        chip = face_chips[i % len(face_chips)]
        # a distinct, valid UTKFace name per copy: the date field takes the copy's number
        age, gender, race, _ = chip.name.split("_", 3)
        target = folder / f"{age}_{gender}_{race}_{i:017d}.jpg.chip.jpg"
        try:
            os.link(chip, target)
        except OSError:
            target.write_bytes(chip.read_bytes())
    return root


def test_a_killed_eval_is_never_taken_over_by_another_model(
    face_chips: list[Path], tmp_path: Path, tiny_model: Path
):
    root = _utkface(face_chips, tmp_path / "utk", BUSY_IMAGES)
    out = tmp_path / "out"
    partial = out / "predictions.partial.jsonl"
    first = start(*_eval(root, out, "--workers", "1", "--batch-size", "4"))
    wait_for(
        lambda: first.poll() is None and partial.exists() and partial.stat().st_size > 20_000,
        "the eval's first rows",
    )
    busy = agebench(*_eval(root, out, "--model", tiny_model))
    assert "in use by agebench run pid" in one_line_error(busy)
    first.send_signal(signal.SIGKILL)
    first.wait()
    other = agebench(*_eval(root, out, "--model", tiny_model))
    line = one_line_error(other)
    assert "holds another run" in line and "--no-reuse" in line
    replaced = agebench(*_eval(root, out, "--model", tiny_model, "--no-reuse"))
    assert replaced.returncode == 0, replaced.stderr
    clean = tmp_path / "clean"
    assert agebench(*_eval(root, clean, "--model", tiny_model)).returncode == 0
    rows, clean_rows = _jsonl(out / "predictions.jsonl"), _jsonl(clean / "predictions.jsonl")
    assert {r["model"]["name"] for r in rows} == {"tiny"}
    assert rows == clean_rows
    mae = json.loads((out / "summary.json").read_text())["metrics"]["age"]["mae"]
    assert mae == json.loads((clean / "summary.json").read_text())["metrics"]["age"]["mae"]
