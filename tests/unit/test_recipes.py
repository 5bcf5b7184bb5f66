"""Every pull recipe is well formed, without fetching anything: a pinned wheel, a member inside
it, a converter and a manifest that resolve, and a manifest the manifest loader accepts once
pull has filled in what it fills in (the graph's file and sha256).

The parameters are read from ``RECIPES`` at collection, so a new recipe is checked here without
a line added. Pulling itself is tested in test_pull.py (a fake wheel) and tests/integration.
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath

import pytest
from packaging.version import Version

from agebench.build.register import check_model_name, write_manifest_toml
from agebench.core.registry import resolve_target
from agebench.models.manifest import load_manifest
from agebench.models.recipes import RECIPES, PullRecipe

SHA256 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(params=sorted(RECIPES))
def recipe(request: pytest.FixtureRequest) -> PullRecipe:
    return RECIPES[request.param]


def test_recipe_pins_one_wheel_member(recipe: PullRecipe):
    assert RECIPES[recipe.name] is recipe
    check_model_name(recipe.name)
    assert SHA256.match(recipe.wheel_sha256), recipe.wheel_sha256
    assert recipe.project and Version(recipe.version)
    if recipe.filename is not None:
        assert recipe.filename.endswith(".whl") and "/" not in recipe.filename
    member = PurePosixPath(recipe.member)
    assert not member.is_absolute() and ".." not in member.parts and "\\" not in recipe.member
    assert recipe.summary
    for tolerance in (recipe.tolerance, recipe.age_tolerance):
        assert math.isfinite(tolerance) and tolerance > 0


def test_recipe_converter_and_manifest_resolve(recipe: PullRecipe):
    assert callable(resolve_target(recipe.converter)), recipe.converter
    manifest = resolve_target(recipe.manifest)
    assert isinstance(manifest, dict), recipe.manifest
    provenance = manifest.get("provenance", {})
    # pull records where the weights came from, but the license is the recipe's to state
    assert provenance.get("license"), f"{recipe.manifest}: no [provenance] license"


def test_recipe_manifest_loads_as_pull_writes_it(recipe: PullRecipe, tmp_path: Path):
    """What pull registers must load: the manifest with the graph's file and sha256 filled in,
    written as TOML and read back by the loader (which also builds every head's decoder)."""
    manifest = resolve_target(recipe.manifest)
    assert isinstance(manifest, dict)
    # pull sets these, and a source where the manifest names none
    filled = {"name": recipe.name, "file": f"{recipe.name}.onnx", "sha256": "0" * 64}
    source = {"source": f"{recipe.project}=={recipe.version} wheel, file {recipe.member}"}
    doc = {**manifest, **filled, "provenance": {**source, **manifest["provenance"]}}
    path = tmp_path / f"{recipe.name}.toml"
    write_manifest_toml(doc, path)
    spec = load_manifest(path)
    assert spec.name == recipe.name
    assert spec.file == (tmp_path / f"{recipe.name}.onnx").resolve()
    assert "age" in [head.name for head in spec.heads]  # what the gate compares
    assert spec.provenance["license"] == manifest["provenance"]["license"]
