"""Helpers for the adversarial suite: the CLI in a real process, folders of many chips, a
tiny second model, and tmpfs mounts for a full disk or a read-only folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.tiny_models import REPO, write_manifest

#: a command that must finish, however badly it behaves, within this many seconds
TIMEOUT = 240


def agebench(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    """``agebench ARGS`` in its own interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agebench", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=kwargs.pop("timeout", TIMEOUT),
        cwd=kwargs.pop("cwd", REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
        **kwargs,
    )


def start(*args: str | Path) -> subprocess.Popen[str]:
    """``agebench ARGS`` started in the background (killed by the caller or at its end)."""
    return subprocess.Popen(
        [sys.executable, "-m", "agebench", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal a user sees: exit 1 and a single ``error:`` line, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def many_chips(face_chips: list[Path], dest: Path, n: int) -> Path:
    """``n`` images (the shared chips repeated, hard-linked where the file system allows)."""
    dest.mkdir(parents=True)
    for i in range(n):
        chip = face_chips[i % len(face_chips)]
        target = dest / f"{i:05d}.jpg"
        try:
            os.link(chip, target)
        except OSError:
            shutil.copy(chip, target)
    return dest


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A second, different model (a channel-mean graph) as a manifest path."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    return write_manifest(folder, name="tiny")


def _mount(target: Path, options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(name, size="64k", read_only=False)``: a small file system of its own, for a
    disk that fills up or refuses writes. Needs the right to mount (root, as CI runs): without
    it the test fails under CI and is skipped, saying why, elsewhere."""
    mounted: list[Path] = []

    def make(name: str, size: str = "64k", read_only: bool = False) -> Path:
        target = tmp_path / name
        target.mkdir()
        try:
            _mount(target, f"size={size}" + (",ro" if read_only else ""))
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", "") or error
            message = f"cannot mount a tmpfs for a full or read-only disk: {detail}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        mounted.append(target)
        return target

    yield make
    for target in reversed(mounted):
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(target)], check=True, capture_output=True)


def remount(target: Path, size: str) -> None:
    """Free space on a tmpfs made by the fixture, keeping its files."""
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(target)], check=True, capture_output=True
    )
