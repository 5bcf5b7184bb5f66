"""The generic registry and model discovery: manifests, entry-point plugins, ad-hoc files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agebench.core.errors import AgebenchError, ManifestError, ModelNotFoundError
from agebench.core.registry import Registry, RegistryError
from agebench.models.catalog import ModelCatalog, resolve_model
from tests.fixtures.tiny_models import REPO, write_manifest


def test_registry_refuses_duplicates_and_suggests():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)
    with pytest.raises(RegistryError, match="already registered by built-in"):
        reg.register("alpha", 2, origin="plugin x")
    with pytest.raises(RegistryError, match="did you mean 'alpha'"):
        reg.get("alpah")


def test_registry_resolves_lazy_targets_once():
    reg: Registry[object] = Registry("thing")
    reg.register("join", "os.path:join")
    assert reg.get("join") is os.path.join
    reg.register("broken", "no_such_module_xyz:thing")
    with pytest.raises(RegistryError, match="cannot import 'no_such_module_xyz'"):
        reg.get("broken")


def test_catalog_scans_weights_dirs(tmp_path: Path):
    write_manifest(tmp_path, name="tiny-a")
    write_manifest(tmp_path, name="tiny-b", onnx_file="b.onnx")
    catalog = ModelCatalog([tmp_path], entry_point_group=None)
    assert catalog.names() == ["tiny-a", "tiny-b"]
    assert catalog.get("tiny-b").file.name == "b.onnx"
    with pytest.raises(ModelNotFoundError, match=r"did you mean .*'tiny-a'"):
        catalog.get("tiny-c")


def test_broken_manifest_does_not_hide_the_others(tmp_path: Path):
    write_manifest(tmp_path, name="good")
    (tmp_path / "bad.toml").write_text("name = [")
    catalog = ModelCatalog([tmp_path], entry_point_group=None)
    rows = {e.name: e for e in catalog.entries()}
    assert rows["good"].spec is not None
    assert rows["bad"].spec is None and "not valid TOML" in (rows["bad"].error or "")
    with pytest.raises(ManifestError, match="not valid TOML"):
        catalog.get("bad")


def test_duplicate_model_names_are_refused(tmp_path: Path):
    """Two manifests of one name in one folder: which one is meant cannot be known."""
    write_manifest(tmp_path, name="same")
    copy = tmp_path / "same-copy.toml"
    copy.write_text((tmp_path / "same.toml").read_text())
    with pytest.raises(RegistryError, match="already registered"):
        ModelCatalog([tmp_path], entry_point_group=None)


def test_default_model_is_registered():
    catalog = ModelCatalog()
    assert "dlib-age-v1" in catalog.names()


def test_ad_hoc_model_with_manifest(tmp_path: Path):
    manifest = write_manifest(tmp_path, name="adhoc")
    moved = tmp_path / "elsewhere.onnx"
    shutil.copy(tmp_path / "tiny.onnx", moved)
    spec = resolve_model(str(moved), manifest)
    assert spec.file == moved.resolve()
    assert resolve_model(str(manifest)).name == "adhoc"
    with pytest.raises(AgebenchError, match="pass its manifest with --manifest"):
        resolve_model(str(moved))


def _make_plugin(site: Path, model_dir: Path) -> None:
    """A tiny installed distribution that declares an agebench.models entry point."""
    pkg = site / "agebench_test_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from pathlib import Path\n"
        f"MANIFEST = Path({str(model_dir / 'plugged.toml')!r})\n"
        "def broken():\n    raise RuntimeError('weights server unreachable')\n"
    )
    info = site / "agebench_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: agebench-test-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[agebench.models]\nplugged = agebench_test_plugin:MANIFEST\n"
        "plugged-broken = agebench_test_plugin:broken\n"
    )


def test_entry_point_plugin_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    models = tmp_path / "models"
    models.mkdir()
    write_manifest(models, name="plugged")
    _make_plugin(tmp_path / "site", models)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    catalog = ModelCatalog([tmp_path / "empty"])
    assert {"plugged", "plugged-broken"} <= set(catalog.names())
    assert catalog.get("plugged").name == "plugged"
    with pytest.raises(
        ManifestError, match="plugin failed: RuntimeError: weights server unreachable"
    ):
        catalog.get("plugged-broken")


def test_models_list_shows_plugin_through_the_cli(tmp_path: Path):
    models = tmp_path / "models"
    models.mkdir()
    write_manifest(models, name="plugged")
    _make_plugin(tmp_path / "site", models)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "COLUMNS": "250"}
    out = subprocess.run(
        [sys.executable, "-m", "agebench", "models", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    ).stdout
    assert "plugged" in out and "dlib-age-v1" in out
    assert "server unreachable" in out
    plugged = next(line for line in out.splitlines() if " plugged " in line)
    assert " plugin " in plugged  # the source column: a package's entry point
    builtin = next(line for line in out.splitlines() if " dlib-age-v1 " in line)
    assert " built in " in builtin


def test_earlier_weights_folder_shadows_a_later_one(tmp_path: Path):
    """$AGEBENCH_HOME/weights comes first: the same model pulled there hides an embedded one."""
    home, bundled = tmp_path / "home", tmp_path / "bundled"
    home.mkdir()
    bundled.mkdir()
    write_manifest(home, name="same", onnx_file="home.onnx")
    write_manifest(bundled, name="same", onnx_file="bundled.onnx")
    catalog = ModelCatalog([home, bundled], entry_point_group=None)
    assert catalog.get("same").file.name == "home.onnx"
    assert catalog.shadowed["same"].parent == bundled


def test_home_is_the_variable_then_the_checkout_then_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An installed agebench writes pulled models and caches to the user's cache directory,
    never beside its code; a checkout is its own home; AGEBENCH_HOME overrides both."""
    from agebench.models import catalog

    monkeypatch.setenv("AGEBENCH_HOME", str(tmp_path / "chosen"))
    assert catalog.agebench_home() == tmp_path / "chosen"
    monkeypatch.delenv("AGEBENCH_HOME")
    assert catalog.agebench_home() == REPO
    monkeypatch.setattr(catalog, "checkout_root", lambda: None)  # as from site-packages
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert catalog.agebench_home() == tmp_path / "xdg" / "agebench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert catalog.agebench_home() == tmp_path / "user" / ".cache" / "agebench"


def test_the_embedded_model_ships_beside_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Whatever the home, dlib-age-v1 comes from agebench/weights (package data)."""
    from agebench.models.catalog import bundled_weights_dir

    monkeypatch.setenv("AGEBENCH_HOME", str(tmp_path))
    spec = ModelCatalog(entry_point_group=None).get("dlib-age-v1")
    assert spec.file == bundled_weights_dir() / "dlib-age-v1.onnx"
    assert bundled_weights_dir() == REPO / "agebench" / "weights"
