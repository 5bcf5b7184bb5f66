"""``export_trained``: a dlib-age-v1 backbone with a fresh head for every loss goes through
the conversion gate into a temporary registry, runs in the Predictor with the ages the torch
module gives, and carries its training data into the contamination findings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agebench.build.gate import GateFailed, load_chips
from agebench.core.config import REFERENCE_CPU
from agebench.core.errors import AgebenchError
from agebench.findings import eval_findings
from agebench.models.catalog import resolve_model
from agebench.runner.stack import build_predictor
from agebench.training import export as export_module
from agebench.training.backbone import Backbone, load_backbone
from agebench.training.export import FRAMEWORK, export_trained, exported_module
from agebench.training.heads import CoralHead, CornHead, Head, PrototypeHead, RegressionHead
from agebench.training.losses import build_loss, loss_names

LOSSES = ("dex", "mean-variance", "coral", "corn", "regression", "prototype")
TRAINING = {
    "bench": "fgnet",
    "benchmark_version": "1",
    "data_fingerprint": "0123abcd",
    "protocol": "kfold",
    "train_folds": [0, 1, 2, 4],
    "test_fold": 3,
    "seed": 0,
    "epochs": 0,
    "best_val_mae": 12.5,
}


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    torch.set_num_threads(1)
    return load_backbone("dlib-age-v1")


@pytest.fixture(scope="module")
def chips(shared_faces: Path) -> np.ndarray:
    """The shared UTKFace chips cut for dlib-age-v1 as the gate cuts them."""
    return np.stack([crop for _, crop in load_chips(resolve_model("dlib-age-v1"), shared_faces)])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGEBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fresh_head(loss: str, dim: int) -> Head:
    torch.manual_seed(0)
    return build_loss(loss).head(dim)


def decode_by_hand(head: Head, output: np.ndarray) -> np.ndarray:
    """The age each head's training means, written out here, independent of the decoders."""
    out = output.astype(np.float64)
    if isinstance(head, RegressionHead):
        return out[:, 0] * head.scale
    if isinstance(head, CoralHead):
        return head.start + (1 / (1 + np.exp(-out)) > 0.5).sum(axis=1)
    if isinstance(head, CornHead):
        return head.start + (np.cumprod(1 / (1 + np.exp(-out)), axis=1) > 0.5).sum(axis=1)
    if isinstance(head, PrototypeHead):
        table = head.prototypes.detach().double().numpy()
        nearest = np.abs(out[:, None, :] - table[None]).mean(axis=2).argmin(axis=1)
        return head.ages[nearest]
    probs = np.exp(out - out.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return np.asarray(probs @ np.asarray(head.ages))


def test_every_loss_is_exported(home: Path) -> None:
    assert set(LOSSES) == set(loss_names())


@pytest.mark.parametrize("loss", LOSSES)
def test_a_fresh_head_exports_gates_registers_and_predicts_as_torch(
    loss: str, backbone: Backbone, chips: np.ndarray, home: Path
) -> None:
    head = fresh_head(loss, backbone.dim)
    name = f"dlib-{loss}-fold3"
    result = export_trained(backbone, head, name=name, training={**TRAINING, "loss": loss})

    assert result.report.passed and result.report.real_faces["n"] == len(chips)
    assert result.max_abs_diff <= 1e-4 and result.max_abs_diff_age <= 1e-2
    assert result.mae is not None and result.variants == {}
    spec = resolve_model(name)  # the default home is the temporary one
    assert spec.manifest_path is not None and spec.manifest_path.parent == home / "weights"
    assert spec.framework == FRAMEWORK and spec.sha256 == result.spec.sha256
    source = resolve_model("dlib-age-v1")
    assert (spec.input, spec.crop, spec.runtime) == (source.input, source.crop, source.runtime)
    assert spec.provenance["training_data"] == ["fgnet"]
    assert spec.provenance["backbone_sha256"] == source.sha256
    assert spec.provenance["license"] == source.provenance["license"]
    assert (home / "weights" / spec.provenance["license_notice"]).is_file()
    training = spec.extra["training"]
    assert training["test_fold"] == 3 and training["train_folds"] == [0, 1, 2, 4]
    assert training["loss"] == loss and "git_commit" in training

    ages = build_predictor(spec, REFERENCE_CPU).predict(chips).fields["age"]
    module = exported_module(backbone, head)
    with torch.no_grad():
        expected = decode_by_hand(head, module(backbone.prepare(torch.from_numpy(chips))).numpy())
    np.testing.assert_allclose(ages, expected, atol=1e-3, rtol=0)


def test_the_training_data_flags_an_eval_on_that_benchmark(backbone: Backbone, home: Path) -> None:
    head = fresh_head("dex", backbone.dim)
    spec = export_trained(backbone, head, name="dlib-dex-fg", training=TRAINING).spec

    def kinds(bench: str) -> list[str]:
        summary = {"benchmark": {"name": bench}, "model": {"name": spec.name}, "metrics": {}}
        return [f["kind"] for f in eval_findings(summary, [resolve_model(spec.name)])]

    # declared by the training, and suspected through its backbone (dlib-age-v1 and FG-NET)
    assert kinds("fgnet") == ["trained-on-benchmark", "suspected-trained-on-benchmark"]
    assert kinds("utkface") == []
    suspicions = spec.extra["training"]["backbone_suspected_training_data"]
    assert [entry["name"] for entry in suspicions] == ["fgnet"]


def test_a_graph_broken_on_purpose_fails_the_gate_and_registers_nothing(
    backbone: Backbone, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = export_module._export_onnx

    class Shifted(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(x)
            return out + 0.05  # the graph drifts from its torch module

    def shifted_export(module: Any, spec: Any, path: Path, output: str) -> None:
        real_export(Shifted(module), spec, path, output)

    monkeypatch.setattr(export_module, "_export_onnx", shifted_export)
    head = fresh_head("prototype", backbone.dim)  # a head with a table beside the graph
    with pytest.raises(GateFailed, match="differs by"):
        export_trained(backbone, head, name="broken", training=TRAINING)
    assert sorted(p.name for p in (home / "weights").iterdir()) == [".locks"]
    with pytest.raises(AgebenchError):
        resolve_model("broken")


def test_bad_requests_are_refused_before_anything_is_built(backbone: Backbone, home: Path) -> None:
    head = fresh_head("dex", backbone.dim)
    with pytest.raises(AgebenchError, match="bench"):
        export_trained(backbone, head, name="x", training={"loss": "dex"})
    with pytest.raises(AgebenchError, match="unknown training keys"):
        export_trained(backbone, head, name="x", training={**TRAINING, "colour": 1})
    with pytest.raises(AgebenchError, match="model name"):
        export_trained(backbone, head, name="a/b", training=TRAINING)
    prototype = fresh_head("prototype", backbone.dim)
    with pytest.raises(AgebenchError, match="quantize"):
        export_trained(backbone, prototype, name="p", training=TRAINING, quantize=("fp16",))
    assert not (home / "weights").exists() or not list((home / "weights").glob("*.toml"))


def test_quantized_variants_go_through_the_quantize_gate(
    backbone: Backbone, chips: np.ndarray, home: Path
) -> None:
    head = fresh_head("dex", backbone.dim)
    result = export_trained(
        backbone,
        head,
        name="dlib-dex-q",
        training=TRAINING,
        quantize=("fp16", "int8"),
        calibration=chips[::3],
    )
    assert set(result.variants) == {"fp16", "int8"}
    for to, variant in result.variants.items():
        assert variant.report is not None and variant.report.passed
        spec = resolve_model(f"dlib-dex-q-{to}")
        assert spec.provenance["parent"] == "dlib-dex-q"
        assert spec.provenance["training_data"] == ["fgnet"]
        assert spec.extra["training"]["test_fold"] == 3
    int8 = resolve_model("dlib-dex-q-int8").provenance["quantization"]
    assert int8["calibration"] == "16 training crops" and "static" in int8["method"]


@pytest.mark.slow
def test_agebench_eval_runs_the_registered_model(
    backbone: Backbone, shared_faces: Path, home: Path, tmp_path: Path
) -> None:
    from agebench.api import evaluate

    head = fresh_head("regression", backbone.dim)
    training = {**TRAINING, "bench": "utkface"}
    export_trained(backbone, head, name="dlib-reg-utk", training=training)
    run = evaluate(
        "utkface", shared_faces, "dlib-reg-utk", out=tmp_path / "run", n_boot=100, device="cpu"
    )
    assert run.metrics["age"].n_scored == len(list(shared_faces.glob("*.jpg")))
    assert "trained-on-benchmark" in [f["kind"] for f in run.findings]
