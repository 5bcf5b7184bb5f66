"""``models convert torch``: a tiny module built here, exported, gated and registered."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from agebench.build.convert.torch_module import convert_torch, is_factory
from agebench.build.pull import register_torch
from agebench.cli import main
from agebench.core.errors import AgebenchError
from agebench.models.manifest import load_manifest
from agebench.models.predictor import Predictor
from tests.unit.test_gate import solid_chips

FACTORY = "tests.unit.test_convert_torch:build_tiny"

MANIFEST = """
name = "tiny-torch"
framework = "pytorch"
description = "a conv, batch norm and a 5-bin softmax"

[input]
layout = "NCHW"
size = [16, 16]
color = "RGB"
[input.normalize]
mean = 127.5
std = 127.5

[crop]
policy = "box"
margin = 0.2

[[heads]]
name = "age"
output = "probabilities"
decoder = "expectation"
[heads.params]
bins = [10, 20, 30, 40, 50]

[provenance]
source = "built in the test"
license = "CC0-1.0"
"""


class TinyAgeNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return torch.softmax(self.fc(x.mean(dim=(2, 3))), dim=1)


def build_tiny() -> torch.nn.Module:
    return TinyAgeNet()


def not_a_module() -> str:
    return "nope"


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = TinyAgeNet()
    with torch.no_grad():  # running statistics that are not the identity
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-torch.toml"
    path.write_text(MANIFEST)
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGEBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_factory_and_weights_pass_the_gate(weights, manifest, home, tmp_path: Path):
    chips = solid_chips(tmp_path / "chips", [20, 45])
    result = register_torch(FACTORY, manifest=manifest, weights=weights, home=home, faces_dir=chips)
    assert result.report is not None and result.report.passed, result.report
    assert result.report.max_abs_diff["real"]["probabilities"] < 1e-5
    spec = load_manifest(home / "weights" / "tiny-torch.toml")
    assert spec.input.name == "images" and spec.extra["gate"]["passed"]
    assert spec.provenance["source_sha256"] == result.spec.provenance["source_sha256"]
    assert spec.provenance["conversion"]["factory"] == FACTORY
    graph = onnx.load(str(spec.file))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    faces = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    assert Predictor(spec, device="cpu").predict(faces).fields["age"].shape == (5,)


def test_cli_convert_torch(weights, manifest, home):
    args = ["models", "convert", "torch", FACTORY, "--weights", str(weights)]
    result = CliRunner().invoke(main, [*args, "--manifest", str(manifest), "--name", "cli-torch"])
    assert result.exit_code == 0, result.output
    assert "cli-torch: converted" in result.output
    assert (home / "weights" / "cli-torch.toml").is_file()
    again = CliRunner().invoke(main, [*args, "--manifest", str(manifest), "--name", "cli-torch"])
    assert again.exit_code == 1 and "already registered" in again.output


def test_weights_that_do_not_fit_are_refused(manifest, home, tmp_path: Path):
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, bad)
    with pytest.raises(AgebenchError, match=r"does not fit the module \(strict load\): missing"):
        register_torch(FACTORY, manifest=manifest, weights=bad, home=home, faces_dir=None)
    assert not (home / "weights" / "tiny-torch.toml").exists()


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_weights_with_code_are_refused(manifest, home, tmp_path: Path):
    evil = tmp_path / "evil.pt"
    torch.save({"conv.weight": _RunsCode(str(tmp_path / "ran"))}, evil)
    result = CliRunner().invoke(
        main,
        [
            "models",
            "convert",
            "torch",
            FACTORY,
            "--weights",
            str(evil),
            "--manifest",
            str(manifest),
        ],
    )
    assert result.exit_code == 1 and "weights_only" in result.output
    assert not (tmp_path / "ran").exists()
    assert not (home / "weights" / "tiny-torch.toml").exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_needs_trust(weights, manifest, home, tmp_path: Path):
    net = TinyAgeNet()
    net.load_state_dict(torch.load(weights, weights_only=True))
    scripted = tmp_path / "tiny.ts"
    torch.jit.script(net.eval()).save(str(scripted))
    with pytest.raises(AgebenchError, match="loading it runs it; pass --trust-torchscript"):
        register_torch(str(scripted), manifest=manifest, home=home, faces_dir=None)
    result = register_torch(
        str(scripted), manifest=manifest, home=home, faces_dir=None, trust_torchscript=True
    )
    assert result.report is not None and result.report.passed
    assert result.spec.provenance["conversion"]["torchscript_trusted"] is True


def test_factory_errors(tmp_path: Path):
    assert is_factory(FACTORY) and not is_factory(str(tmp_path / "model.ts"))
    with pytest.raises(AgebenchError, match=r"not a torch\.nn\.Module"):
        convert_torch(
            "tests.unit.test_convert_torch:not_a_module",
            None,
            tmp_path / "x.onnx",
            input_shape=(1, 3, 16, 16),
        )
    with pytest.raises(AgebenchError, match="cannot import"):
        convert_torch("no_such_pkg.mod:build", None, tmp_path / "x.onnx", input_shape=(1, 3, 8, 8))
    with pytest.raises(AgebenchError, match="forward returns 1 outputs but 2 names"):
        convert_torch(
            FACTORY,
            None,
            tmp_path / "x.onnx",
            input_shape=(1, 3, 16, 16),
            output_names=["a", "b"],
        )
