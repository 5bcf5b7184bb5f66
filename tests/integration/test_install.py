"""agebench as a user gets it: ``python -m build``, the wheel installed into a fresh virtual
environment, ``agebench predict samples`` run from a folder outside the checkout.

The wheel must carry the default model and MTCNN's weights (an installed agebench predicts
offline, with no setup step and no facenet-pytorch), and nothing else that is not the package;
the run must give the checkout's ages and write nothing inside site-packages: caches go to
the user's cache directory (``$HOME/.cache/agebench`` here, a temporary HOME).

The venv gets its dependencies from the package index the user's pip is configured for (the
torch pair pinned as scripts/setup.sh pins it); nothing is skipped, so a broken install fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.tiny_models import REPO

pytestmark = pytest.mark.slow

SAMPLES = REPO / "samples"
#: what the wheel must carry besides Python modules
PACKAGE_DATA = {
    "agebench/weights/dlib-age-v1.onnx",
    "agebench/weights/dlib-age-v1.toml",
    "agebench/weights/dlib-age-v1.NOTICE.md",
    "agebench/weights/mtcnn/pnet.pt",
    "agebench/weights/mtcnn/rnet.pt",
    "agebench/weights/mtcnn/onet.pt",
    "agebench/weights/mtcnn/NOTICE.md",
}
TORCH_PAIR = (
    f"torch=={os.environ.get('AGEBENCH_TORCH', '2.14.1')}",
    f"torchvision=={os.environ.get('AGEBENCH_TORCHVISION', '0.29.1')}",
)


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, (
        f"{command[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def _user_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with a fresh HOME: no AGEBENCH_HOME, no XDG overrides, no
    PYTHONPATH pointing at the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AGEBENCH_HOME", "PYTHONPATH") and not k.startswith("XDG_")
    }
    return {**env, "HOME": str(home), **extra}


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime: what a run must leave unchanged."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() or p.is_symlink()
    }


#: top-level folders of a checkout that are not the project's source (envs, caches, outputs)
_NOT_SOURCE = {".git", ".venv", ".venv-baseline", "cache", "reports", "weights", "build", "dist"}


def _checkout_only(folder: str, names: list[str]) -> set[str]:
    """``copytree``'s ignore: the checkout's own envs and outputs, and bytecode anywhere."""
    root = Path(folder).resolve() == REPO.resolve()
    return {
        n
        for n in names
        if n == "__pycache__" or n.endswith(".egg-info") or (root and n in _NOT_SOURCE | {".gpu"})
    }


def _ages(run_dir: Path) -> dict[tuple[str, int], float]:
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(row["status"] == "ok" for row in rows)
    return {(row["image"], row["face"]): row["age"] for row in rows}


@pytest.fixture(scope="module")
def checkout_ages(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], float]:
    out = tmp_path_factory.mktemp("checkout-run") / "predict"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    _run([sys.executable, "-m", "agebench", "predict", str(SAMPLES), "--out", str(out)], env=env)
    return _ages(out)


def test_installed_layout_writes_nothing_in_the_package(
    tmp_path: Path, checkout_ages: dict[tuple[str, int], float]
):
    """The package folder alone, as site-packages holds it (no checkout around it): the
    embedded model is found and the tuning cache goes to the user's cache directory."""
    site = tmp_path / "site"
    shutil.copytree(
        REPO / "agebench", site / "agebench", ignore=shutil.ignore_patterns("__pycache__")
    )
    before = _tree(site)
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    env = _user_env(home, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "agebench", "predict", str(SAMPLES), "--out", str(out)]
    _run(command, cwd=cwd, env=env)
    assert _ages(out) == checkout_ages
    assert _tree(site) == before
    assert (home / ".cache" / "agebench" / "cache" / "ort-tuning.json").is_file()
    assert list(cwd.iterdir()) == []


def test_wheel_installs_and_predicts_offline(
    tmp_path: Path, checkout_ages: dict[tuple[str, int], float]
):
    dist = tmp_path / "dist"
    source = tmp_path / "source"  # build from a clean copy: no build/ or egg-info in the checkout
    shutil.copytree(REPO, source, ignore=_checkout_only)
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)])
    (wheel,) = dist.glob("agebench-*.whl")
    assert len(list(dist.glob("agebench-*.tar.gz"))) == 1

    names = set(zipfile.ZipFile(wheel).namelist())
    assert names >= PACKAGE_DATA
    top = {name.split("/")[0] for name in names}
    assert top == {"agebench", wheel.name.split("-py3")[0] + ".dist-info"}, top
    weights = {n for n in names if n.startswith("agebench/weights/")}
    assert weights == PACKAGE_DATA, weights - PACKAGE_DATA  # no pulled model, no stray file
    with zipfile.ZipFile(wheel) as archive:
        for net in ("pnet", "rnet", "onet"):
            shipped = hashlib.sha256(archive.read(f"agebench/weights/mtcnn/{net}.pt")).hexdigest()
            assert shipped in archive.read("agebench/weights/mtcnn/NOTICE.md").decode()

    venv = tmp_path / "venv"
    # no PYTHONPATH: pip must not take the checkout's agebench as already installed
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    _run([*pip, *TORCH_PAIR], env=clean)  # pinned as scripts/setup.sh pins them
    _run([*pip, str(wheel)], env=clean)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", where], env=clean).stdout.strip())
    assert (site / "agebench" / "weights" / "dlib-age-v1.onnx").is_file()
    assert not (site / "facenet_pytorch").exists()  # detection must not need it
    before = _tree(site)

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "run"
    agebench = str(venv / "bin" / "agebench")
    _run([agebench, "predict", str(SAMPLES), "--out", str(out)], cwd=cwd, env=_user_env(home))
    assert _ages(out) == checkout_ages
    assert _tree(site) == before, "the run wrote inside site-packages"
    assert (home / ".cache" / "agebench" / "cache" / "ort-tuning.json").is_file()
    assert list(cwd.iterdir()) == []
