"""A registered model cut into a trainable backbone loses nothing: on real chips, prepared as
eval prepares them, the model's own final layer over the cut features gives the model's output
as onnxruntime computes it."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from agebench.benchmarks.registry import get_benchmark
from agebench.core.config import ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.models.catalog import resolve_model
from agebench.runner.stack import PredictStack
from agebench.training.backbone import describe, find_cut, load_backbone


@pytest.fixture(scope="module")
def backbone():
    torch.set_num_threads(1)
    return load_backbone("dlib-age-v1")


@pytest.fixture(scope="module")
def eval_crops(face_chips: list[Path]):
    """UTKFace chips cut for dlib-age-v1 by eval's own preparer (``--faces none``, the
    benchmark's ready-crop plan), and the ORT predictor that scores them."""
    stack = PredictStack.build(
        resolve_model("dlib-age-v1"),
        "none",
        ExecutionConfig(device="cpu", backend="onnxruntime", tuning="manifest", workers=1),
        ready_crop=get_benchmark("utkface").ready_crop({}),
    )
    crops = np.concatenate([stack.preparer(p, Path(p.name)).crops for p in face_chips[::4]])
    return crops, stack.predictor


def test_dlib_is_cut_before_its_fc_layer(backbone):
    assert backbone.dim == 256
    info = describe(backbone)
    assert info["features"] == 256 and info["input"]["size"] == [64, 64]
    assert backbone.crop == resolve_model("dlib-age-v1").crop


def test_prepare_is_evals_normalisation(backbone, eval_crops):
    crops, predictor = eval_crops
    prepared = backbone.prepare(torch.from_numpy(crops)).numpy()
    assert np.array_equal(prepared, predictor.preprocess(crops))


def test_the_original_head_over_the_cut_features_is_the_models_output(backbone, eval_crops):
    crops, predictor = eval_crops
    assert len(crops) == 12
    expected = predictor.run(predictor.preprocess(crops))[0]
    with torch.no_grad():
        features = backbone(backbone.prepare(torch.from_numpy(crops)))
        output = backbone.original_head(features).numpy()
    assert features.shape == (12, 256)
    assert np.abs(output - expected).max() < 1e-4
    # and the cut does cut: the features are no probabilities
    assert not np.allclose(features.sum(dim=1).numpy(), 1.0)


def test_the_backbone_trains(backbone):
    params = [p for p in backbone.features.parameters() if p.requires_grad]
    assert sum(p.numel() for p in params) > 1_000_000
    x = torch.zeros(2, 3, 64, 64)
    backbone.features.zero_grad()
    backbone(x).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_a_graph_without_a_linear_head_cannot_be_cut():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(AgebenchError, match="no Gemm or MatMul head found before it"):
        find_cut(helper.make_model(graph), "y")


def test_a_torch_factory_backbone_takes_a_models_input(tmp_path: Path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build():
                return nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    backbone = load_backbone("torch:my_nets:build", like="dlib-age-v1")
    assert backbone.dim == 5 and backbone.input_size == (64, 64)
    assert backbone.original_head is None
    crops = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    assert backbone(backbone.prepare(crops)).shape == (2, 5)
    with pytest.raises(AgebenchError, match="like=MODEL"):
        load_backbone("torch:my_nets:build")
    sys.modules.pop("my_nets", None)


def test_a_graph_without_value_info_is_cut(tmp_path: Path):
    """Graphs exported without intermediate shapes (yu4u-wrn-16-8's) are cut too: the cut's
    tensor is found by shape inference, not only in the graph's own value_info."""
    from agebench.training.backbone import backbone_from_model
    from tests.fixtures.tiny_models import write_manifest

    spec = resolve_model(str(write_manifest(tmp_path)))
    backbone = backbone_from_model(spec)
    assert backbone.dim == 3
    x = torch.rand(2, 3, 8, 8)
    expected = x.mean(dim=(2, 3))[:, :1]  # the channel-mean model's age output
    assert torch.allclose(backbone.original_head(backbone(x)), expected, atol=1e-6)
