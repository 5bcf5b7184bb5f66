"""yu4u's Wide ResNet converter on a narrow random WRN-16-2 written as a Keras 2 HDF5 file:
the reader, the PyTorch rebuild, the ONNX export and the NumPy reference must all agree."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from agebench.build.convert import Conversion, wrn
from agebench.build.convert.tf_ops import same_output, same_pads
from agebench.build.convert.wrn.reference import avg_pool_same
from agebench.models.manifest import parse_manifest

DEPTH, K, SIZE = 16, 2, 64  # the real model's topology and names, 4x narrower


def _random_module(seed: int = 0) -> torch.nn.Module:
    """A WideResNet whose every weight and BN statistic is random and far from identity."""
    gen = torch.Generator().manual_seed(seed)
    model = wrn.WideResNet(DEPTH, K, SIZE)
    with torch.no_grad():
        for _, module in model.keras_order():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen))
                module.weight.mul_((2.0 / fan_in) ** 0.5)
            else:
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                module.bias.copy_(0.2 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        for linear in (model.age, model.gender):
            # logits of a few units: probabilities that are neither uniform nor one-hot
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen) * 0.02)
    return model.eval()


def _keras_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The module's weights in Keras's layout and names (HWIO kernels, HWC-flattened Dense)."""
    out: dict[str, np.ndarray] = {}
    counters: dict[str, int] = {}
    for prefix, module in model.keras_order():
        counters[prefix] = counters.get(prefix, 0) + 1
        name = f"{prefix}_{counters[prefix]}"
        if prefix == "conv2d":
            out[f"{name}/kernel"] = module.weight.detach().permute(2, 3, 1, 0).numpy()
        else:
            out[f"{name}/gamma"] = module.weight.detach().numpy()
            out[f"{name}/beta"] = module.bias.detach().numpy()
            out[f"{name}/moving_mean"] = module.running_mean.numpy()
            out[f"{name}/moving_variance"] = module.running_var.numpy()
    s, c = model.final_size, 64 * K
    for linear, name in ((model.gender, "dense_1"), (model.age, "dense_2")):
        weight = linear.weight.detach().reshape(-1, c, s, s)  # (out, C, H, W)
        out[f"{name}/kernel"] = weight.permute(2, 3, 1, 0).reshape(s * s * c, -1).numpy()
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in out.items()}


def _model_config(topology: list[wrn.KerasLayer]) -> dict:
    """The ``model_config`` JSON Keras 2.0.6 writes, for the layers given."""
    layers = []
    for layer in topology:
        p = layer.params
        config: dict = {"name": layer.name, "trainable": True}
        if layer.kind == "InputLayer":
            config = {"name": layer.name, "batch_input_shape": [None, p["size"], p["size"], 3]}
        elif layer.kind == "Conv2D":
            config.update(
                filters=p["filters"],
                kernel_size=[p["kernel"]] * 2,
                strides=[p["stride"]] * 2,
                padding="same",
                data_format="channels_last",
                dilation_rate=[1, 1],
                activation="linear",
                use_bias=False,
            )
        elif layer.kind == "BatchNormalization":
            config.update(axis=-1, momentum=0.99, epsilon=0.001, center=True, scale=True)
        elif layer.kind == "Activation":
            config.update(activation="relu")
        elif layer.kind == "AveragePooling2D":
            config.update(
                pool_size=[8, 8], strides=[1, 1], padding="same", data_format="channels_last"
            )
        elif layer.kind == "Dense":
            config.update(units=p["units"], activation="softmax", use_bias=False)
        inbound = [[[name, 0, 0, {}] for name in layer.inbound]] if layer.inbound else []
        layers.append(
            {
                "class_name": layer.kind,
                "name": layer.name,
                "config": config,
                "inbound_nodes": inbound,
            }
        )
    heads = [layer.name for layer in topology if layer.kind == "Dense"]
    return {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": layers,
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [[name, 0, 0] for name in heads],
        },
    }


def _write_keras_h5(
    path: Path, weights: dict[str, np.ndarray], config: dict | None = None, drop: str = ""
) -> Path:
    """The layout ``model.save`` gives in Keras 2.0.6 (``drop`` leaves one layer out)."""
    topology = wrn.keras_topology(DEPTH, K, SIZE)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.6"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config or _model_config(topology)).encode()
        root = f.create_group("model_weights")
        root.attrs["keras_version"] = b"2.0.6"
        root.attrs["backend"] = b"tensorflow"
        names = [layer.name for layer in topology if layer.name != drop]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        for layer in names:
            group = root.create_group(layer)
            params = [k.split("/")[1] for k in weights if k.split("/")[0] == layer]
            group.attrs["weight_names"] = np.array(
                [f"{layer}/{param}:0".encode() for param in params]
            )
            for param in params:
                group.create_dataset(f"{layer}/{param}:0", data=weights[f"{layer}/{param}"])
        f.create_group("optimizer_weights").create_dataset("Variable:0", data=np.zeros(3))
    return path


def _test_images() -> np.ndarray:
    """NCHW 0..255: noise, a gradient, and a picture lit only at the bottom-right, where TF's
    uneven 'same' padding (conv and pooling) differs from symmetric padding."""
    rng = np.random.default_rng(1)
    noise = rng.uniform(0, 255, (3, SIZE, SIZE))
    ramp = np.broadcast_to(np.linspace(0, 255, SIZE), (3, SIZE, SIZE))
    corner = np.zeros((3, SIZE, SIZE))
    corner[:, SIZE - 20 :, SIZE - 20 :] = rng.uniform(100, 255, (3, 20, 20))
    return np.stack([noise, ramp, corner]).astype(np.float32)


@pytest.fixture(scope="module")
def module() -> torch.nn.Module:
    return _random_module()


@pytest.fixture(scope="module")
def h5_file(module: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wrn") / "weights.h5"
    return _write_keras_h5(path, _keras_weights(module))


@pytest.fixture(scope="module")
def conversion(h5_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Conversion:
    return wrn.convert_wrn_h5(h5_file, tmp_path_factory.mktemp("onnx") / "wrn.onnx")


@pytest.fixture(scope="module")
def reference(h5_file: Path) -> dict[str, np.ndarray]:
    weights = wrn.load_keras_h5(h5_file)
    return wrn.numpy_reference(weights, _test_images().transpose(0, 2, 3, 1))


def _run_onnx(path: Path, images: np.ndarray, level: str = "basic") -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": images}), strict=True))


def test_reader_returns_every_weight_by_keras_name(h5_file: Path, module: torch.nn.Module):
    weights, info = wrn.read_keras_h5(h5_file)
    expected = _keras_weights(module)
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
        assert np.array_equal(weights[key], value), key
    assert weights["conv2d_7/kernel"].shape == (3, 3, 32, 64)  # stage 2's stride-2 conv
    assert weights["dense_2/kernel"].shape == (16 * 16 * 128, 101)
    assert info["model_config_checked"] and info["has_optimizer_state"]
    assert (info["depth"], info["k"], info["image_size"]) == (DEPTH, K, SIZE)


def test_from_keras_h5_round_trips_the_module(h5_file: Path, module: torch.nn.Module):
    loaded = wrn.WideResNet.from_keras_h5(h5_file)
    for (name, a), (_, b) in zip(
        module.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_torch_matches_numpy_reference(module: torch.nn.Module, reference):
    with torch.no_grad():
        age, gender = module(torch.from_numpy(_test_images()))
    assert np.abs(age.numpy() - reference["age_probabilities"]).max() < 1e-5
    assert np.abs(gender.numpy() - reference["gender_probabilities"]).max() < 1e-5
    # and the folded copy that is exported
    with torch.no_grad():
        age, gender = module.fused_for_export()(torch.from_numpy(_test_images()))
    assert np.abs(age.numpy() - reference["age_probabilities"]).max() < 1e-5
    assert np.abs(gender.numpy() - reference["gender_probabilities"]).max() < 1e-5


@pytest.mark.parametrize("level", ["disable", "basic", "all"])
def test_onnx_matches_numpy_reference(conversion, reference, level: str):
    out = _run_onnx(conversion.onnx_path, _test_images(), level)
    for name in ("age_probabilities", "gender_probabilities"):
        assert out[name].shape == reference[name].shape
        assert np.abs(out[name] - reference[name]).max() < 1e-5, name
    # the Conversion's own reference is the same NumPy forward on the NCHW input
    own = conversion.reference(_test_images())
    for name in ("age_probabilities", "gender_probabilities"):
        np.testing.assert_allclose(own[name], reference[name], rtol=0, atol=1e-12)


def test_the_parity_tests_would_catch_padding_counted_in_the_average(h5_file: Path, reference):
    """Counting TF's uneven pooling padding (what a dropped divisor_override amounts to, near
    enough) must move the outputs well beyond the parity tolerance on these images."""
    weights = wrn.load_keras_h5(h5_file)
    wrong = wrn.numpy_reference(weights, _test_images().transpose(0, 2, 3, 1), _exclude_pad=False)
    assert np.abs(wrong["age_probabilities"] - reference["age_probabilities"]).max() > 1e-3


def test_onnx_graph_is_the_keras_graph_folded(conversion):
    model = onnx.load(str(conversion.onnx_path))
    ops = [node.op_type for node in model.graph.node]
    assert "Pad" not in ops and "Slice" not in ops and "Constant" not in ops
    assert ops.count("Conv") == 16 and ops.count("BatchNormalization") == 6
    pool = next(node for node in model.graph.node if node.op_type == "AveragePool")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
    assert attrs["pads"] == [3, 3, 4, 4] and attrs["count_include_pad"] == 0
    strided = [
        onnx.helper.get_attribute_value(a)
        for node in model.graph.node
        if node.op_type == "Conv"
        for a in node.attribute
        if a.name == "pads"
    ]
    assert strided.count([0, 0, 1, 1]) == 2  # TF 'same', stride 2, 3x3 on an even size
    (inp,) = model.graph.input
    assert inp.name == "images"
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 3, 64, 64]
    assert [o.name for o in model.graph.output] == ["age_probabilities", "gender_probabilities"]
    assert conversion.notes["nodes"] == len(ops)
    assert conversion.notes["opset"] >= 17


def test_different_images_get_different_ages_and_batching_changes_nothing(conversion):
    images = _test_images()
    batch = _run_onnx(conversion.onnx_path, images)
    ages = batch["age_probabilities"] @ np.arange(101)
    assert np.ptp(ages) > 0.5, ages
    assert np.abs(np.diff(batch["gender_probabilities"][:, 0])).max() > 1e-3
    for i in range(len(images)):
        one = _run_onnx(conversion.onnx_path, images[i : i + 1])
        np.testing.assert_allclose(
            one["age_probabilities"][0], batch["age_probabilities"][i], atol=1e-6
        )


def test_tf_same_average_pooling_matches_a_direct_loop():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 16, 16, 3))
    got = avg_pool_same(x, 8, 1)
    want = np.empty_like(x)
    for i in range(16):
        for j in range(16):
            # TF 'same', stride 1, window 8: 3 rows/cols before, 4 after, padding not counted
            window = x[:, max(i - 3, 0) : i + 5, max(j - 3, 0) : j + 5]
            want[:, i, j] = window.mean(axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_tf_same_padding_puts_the_odd_pixel_after():
    assert same_pads(64, 3, 2) == (0, 1) and same_output(64, 2) == 32
    assert same_pads(64, 3, 1) == (1, 1) and same_output(64, 1) == 64
    assert same_pads(64, 1, 2) == (0, 0) and same_output(64, 2) == 32
    assert same_pads(16, 8, 1) == (3, 4) and same_output(16, 1) == 16


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("conv2d_7", r"missing conv2d_7/kernel$"),
        ("batch_normalization_13", r"missing batch_normalization_13/beta, .*/gamma, "),
        ("dense_2", r"missing output layer weights dense_2/kernel$"),
    ],
)
def test_a_missing_layer_is_refused_by_name(
    module: torch.nn.Module, tmp_path: Path, drop: str, message: str
):
    path = _write_keras_h5(tmp_path / "w.h5", _keras_weights(module), drop=drop)
    with pytest.raises(wrn.KerasH5Error, match=message) as error:
        wrn.load_keras_h5(path)
    assert str(error.value).startswith(f"{path}: ")


def test_a_listed_layer_without_its_group_is_refused(h5_file: Path, tmp_path: Path):
    path = tmp_path / "w.h5"
    path.write_bytes(h5_file.read_bytes())
    with h5py.File(path, "a") as f:
        del f["model_weights/batch_normalization_4"]
    with pytest.raises(
        wrn.KerasH5Error, match="'batch_normalization_4' is listed but has no group"
    ):
        wrn.load_keras_h5(path)


def test_a_wrong_shape_is_refused(module: torch.nn.Module, tmp_path: Path):
    weights = _keras_weights(module)
    weights["conv2d_3/kernel"] = weights["conv2d_3/kernel"][:, :, :, :-1]
    path = _write_keras_h5(tmp_path / "w.h5", weights)
    with pytest.raises(wrn.KerasH5Error, match=r"'conv2d_3/kernel' has shape \(3, 3, 32, 31\)"):
        wrn.load_keras_h5(path)


def test_a_different_graph_in_model_config_is_refused(module: torch.nn.Module, tmp_path: Path):
    config = _model_config(wrn.keras_topology(DEPTH, K, SIZE))
    pool = next(
        layer for layer in config["config"]["layers"] if layer["name"] == "average_pooling2d_1"
    )
    pool["config"]["padding"] = "valid"
    path = _write_keras_h5(tmp_path / "w.h5", _keras_weights(module), config=config)
    with pytest.raises(wrn.KerasH5Error, match=r"average_pooling2d_1: padding='valid'"):
        wrn.load_keras_h5(path)


def test_not_a_keras_file_is_refused(tmp_path: Path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(wrn.KerasH5Error, match="not a readable HDF5 file"):
        wrn.load_keras_h5(path)
    with h5py.File(path, "w") as f:
        f.create_group("layers")  # Keras 3 .weights.h5 style
    with pytest.raises(wrn.KerasH5Error, match="not a Keras 2 weights file"):
        wrn.load_keras_h5(path)


def test_manifest_constant_is_a_valid_manifest():
    spec = parse_manifest(
        {**wrn.MANIFEST, "sha256": "0" * 64}, where="wrn.MANIFEST", base_dir=Path(".")
    )
    assert (spec.input.color, spec.input.layout, spec.input.height) == ("BGR", "NCHW", 64)
    assert spec.input.mean == (0.0, 0.0, 0.0) and spec.input.std == (1.0, 1.0, 1.0)
    assert spec.crop.policy == "box" and spec.crop.margin == 0.4
    age = spec.age_head
    assert age.output == "age_probabilities" and age.params["count"] == 101
    gender = next(h for h in spec.heads if h.name == "gender")
    assert gender.output == "gender_probabilities"
    assert gender.params["labels"] == ["female", "male"]
