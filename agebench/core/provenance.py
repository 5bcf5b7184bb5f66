"""What every result file records so a number can be traced to code, model and data."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from agebench.core.version import __version__

_PACKAGES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "opencv-python-headless",
    "pillow",
    "torch",
    "torchvision",
    "facenet-pytorch",
)


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "agebench": __version__,
    }
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def checkout_root() -> Path | None:
    """The source checkout agebench runs from (an editable install included), None when it
    runs from an installed wheel: a checkout has its ``pyproject.toml`` and git beside the
    package, site-packages has neither."""
    root = Path(__file__).resolve().parents[2]  # agebench/core/provenance.py -> checkout
    is_checkout = (root / "pyproject.toml").is_file() and (root / ".git").exists()
    return root if is_checkout else None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the agebench checkout in use, with '+dirty' for local changes; None for
    an installed wheel (its version says what it is; a git repository that merely contains
    the virtual environment must not be recorded as agebench's commit)."""
    root = checkout_root()
    if root is None:
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def provenance() -> dict[str, Any]:
    return {
        "agebench_version": __version__,
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "versions": package_versions(),
    }
