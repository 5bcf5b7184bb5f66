"""The Keras 3 ``.keras`` converter on a tiny archive written here, layer by layer.

The archive is built by hand (config.json in Keras 3's format, model.weights.h5 in Keras 3's
class-named layout), so these tests need neither Keras nor any download. Where Keras 3 is
installed, two slow tests also load the same archive with Keras itself.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from agebench.build.convert import keras_graph as kg
from agebench.build.convert.keras_graph import (
    KerasGraphError,
    KerasReference,
    build_torch_module,
    convert_keras_archive,
    keras_available,
    numpy_forward,
    parse_graph,
    read_keras_archive,
    to_snake_case,
)
from agebench.build.convert.tf_ops import same_pads

SIZE = 8  # even, so the strided 'same' convolution pads 0 before and 1 after
#: output shape of each backbone layer, for the keras tensors in its inbound nodes
SHAPES = {
    "bb_in": [SIZE, SIZE, 3],
    "pad": [SIZE + 1, SIZE + 1, 3],
    "dw": [4, 4, 6],
    "dw_bn": [4, 4, 6],
    "dw_relu": [4, 4, 6],
    "stem": [4, 4, 4],
    "stem_bn": [4, 4, 4],
    "stem_relu": [4, 4, 4],
    "proj": [4, 4, 4],
    "add": [4, 4, 4],
}
_DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}


def _layer(kind: str, name: str, inbound: list[str] | None = None, **config: Any) -> dict:
    entry: dict[str, Any] = {
        "module": "keras.layers",
        "class_name": kind,
        "config": {"name": name, "trainable": True, "dtype": _DTYPE, **config},
        "registered_name": None,
    }
    if inbound is not None:  # inside a Functional: the call that made this layer's output
        tensors = [
            {
                "class_name": "__keras_tensor__",
                "config": {
                    "shape": [None, *SHAPES[src]],
                    "dtype": "float32",
                    "keras_history": [src, 0, 0],
                },
            }
            for src in inbound
        ]
        entry["name"] = name
        entry["inbound_nodes"] = [
            {"args": [tensors] if len(tensors) > 1 else tensors, "kwargs": {}}
        ]
    return entry


def _input(name: str, shape: list[int], functional: bool = False) -> dict:
    entry = {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {
            "batch_shape": [None, *shape],
            "dtype": "float32",
            "sparse": False,
            "ragged": False,
            "name": name,
            "optional": False,
        },
        "registered_name": None,
    }
    if functional:
        entry["name"] = name
        entry["inbound_nodes"] = []
    return entry


def _conv(
    name: str,
    inbound: list[str],
    filters: int,
    kernel: int,
    stride: int,
    padding: str,
    use_bias: bool = True,
) -> dict:
    return _layer(
        "Conv2D",
        name,
        inbound,
        filters=filters,
        kernel_size=[kernel, kernel],
        strides=[stride, stride],
        padding=padding,
        data_format="channels_last",
        dilation_rate=[1, 1],
        groups=1,
        activation="linear",
        use_bias=use_bias,
    )


def _bn(name: str, inbound: list[str]) -> dict:
    return _layer(
        "BatchNormalization",
        name,
        inbound,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
    )


def toy_config(*, replace: dict[str, dict] | None = None) -> dict:
    """Sequential[augment Sequential, Rescaling, backbone Functional, Dropout, Dense, Dense].

    The backbone's layers are listed in the order Keras itself lists them (by depth), which is
    the order its weights are numbered in model.weights.h5.
    """
    backbone_layers = [
        _input("bb_in", [SIZE, SIZE, 3], functional=True),
        _layer(
            "ZeroPadding2D", "pad", ["bb_in"], padding=[[0, 1], [0, 1]], data_format="channels_last"
        ),
        _layer(
            "DepthwiseConv2D",
            "dw",
            ["pad"],
            depth_multiplier=2,
            kernel_size=[3, 3],
            strides=[2, 2],
            padding="valid",
            data_format="channels_last",
            dilation_rate=[1, 1],
            activation="linear",
            use_bias=True,
        ),
        _conv("stem", ["bb_in"], 4, 3, 2, "same", use_bias=False),
        _bn("dw_bn", ["dw"]),
        _bn("stem_bn", ["stem"]),
        _layer("ReLU", "dw_relu", ["dw_bn"], max_value=None, negative_slope=0.0, threshold=0.0),
        _layer("ReLU", "stem_relu", ["stem_bn"], max_value=6.0, negative_slope=0.0, threshold=0.0),
        _conv("proj", ["dw_relu"], 4, 1, 1, "valid"),
        _layer("Add", "add", ["stem_relu", "proj"]),
        _layer(
            "GlobalAveragePooling2D", "gap", ["add"], data_format="channels_last", keepdims=False
        ),
    ]
    for i, layer in enumerate(backbone_layers):
        if replace and layer.get("name") in replace:
            backbone_layers[i] = replace[layer["name"]]
    augment = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "augment",
            "trainable": True,
            "dtype": _DTYPE,
            "layers": [
                _input("input_layer_1", [SIZE, SIZE, 3]),
                _layer(
                    "RandomFlip",
                    "random_flip",
                    mode="horizontal",
                    seed=None,
                    data_format="channels_last",
                ),
                _layer(
                    "RandomContrast",
                    "random_contrast",
                    factor=[0.1, 0.1],
                    value_range=[0, 255],
                    seed=None,
                    data_format="channels_last",
                ),
            ],
            "build_input_shape": [None, SIZE, SIZE, 3],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, SIZE, SIZE, 3]},
    }
    backbone = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": "backbone",
            "trainable": True,
            "layers": backbone_layers,
            "input_layers": ["bb_in", 0, 0],
            "output_layers": ["gap", 0, 0],
        },
        "registered_name": "Functional",
        "build_config": {"input_shape": None},
    }
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "toy",
            "trainable": True,
            "dtype": _DTYPE,
            "layers": [
                _input("input_layer", [SIZE, SIZE, 3]),
                augment,
                _layer("Rescaling", "rescaling", scale=1 / 127.5, offset=-1.0),
                backbone,
                _layer("Dropout", "dropout", rate=0.5, seed=None, noise_shape=None),
                _layer("Dense", "dense", units=5, activation="relu", use_bias=True),
                _layer("Dense", "dense_1", units=1, activation="linear", use_bias=True),
            ],
            "build_input_shape": [None, SIZE, SIZE, 3],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, SIZE, SIZE, 3]},
    }


def toy_weights(seed: int = 0) -> dict[str, tuple[str, list[np.ndarray]]]:
    """Layer path -> (h5 group in Keras 3's class-named layout, variables)."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def bn(channels: int) -> list[np.ndarray]:
        gamma = (1.0 + 0.2 * rng.standard_normal(channels)).astype(np.float32)
        variance = rng.uniform(0.2, 2.0, channels).astype(np.float32)
        return [gamma, normal(channels, scale=0.1), normal(channels, scale=0.3), variance]

    fn = "layers/functional/layers/"
    return {
        "augment/random_flip": ("layers/sequential/layers/random_flip", []),
        "augment/random_contrast": ("layers/sequential/layers/random_contrast", []),
        "rescaling": ("layers/rescaling", []),
        "backbone/bb_in": (fn + "input_layer", []),
        "backbone/pad": (fn + "zero_padding2d", []),
        "backbone/dw": (fn + "depthwise_conv2d", [normal(3, 3, 3, 2), normal(6, scale=0.1)]),
        "backbone/stem": (fn + "conv2d", [normal(3, 3, 3, 4)]),
        "backbone/dw_bn": (fn + "batch_normalization", bn(6)),
        "backbone/stem_bn": (fn + "batch_normalization_1", bn(4)),
        "backbone/dw_relu": (fn + "re_lu", []),
        "backbone/stem_relu": (fn + "re_lu_1", []),
        "backbone/proj": (fn + "conv2d_1", [normal(1, 1, 6, 4), normal(4, scale=0.1)]),
        "backbone/add": (fn + "add", []),
        "backbone/gap": (fn + "global_average_pooling2d", []),
        "dropout": ("layers/dropout", []),
        "dense": ("layers/dense", [normal(4, 5), normal(5, scale=0.1)]),
        "dense_1": ("layers/dense_1", [normal(5, 1), np.array([30.0], np.float32)]),
    }


def write_archive(
    path: Path,
    config: dict | None = None,
    weights: dict[str, tuple[str, list[np.ndarray]]] | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    config = config if config is not None else toy_config()
    weights = weights if weights is not None else toy_weights()
    h5_path = path.with_suffix(".h5.tmp")
    with h5py.File(h5_path, "w") as h5:
        for layer_path, (group, arrays) in weights.items():
            vars_group = h5.require_group(group).require_group("vars")
            vars_group.attrs["name"] = layer_path.rsplit("/", 1)[-1]
            for index, array in enumerate(arrays):
                vars_group.create_dataset(str(index), data=array)
        h5.require_group("layers/functional/vars").attrs["name"] = "backbone"
        h5.require_group("layers/sequential/vars").attrs["name"] = "augment"
        h5.require_group("vars").attrs["name"] = "toy"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.13.2", "date_saved": "x"}))
        zf.writestr("config.json", json.dumps(config))
        zf.write(h5_path, "model.weights.h5")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    h5_path.unlink()
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_archive(tmp_path_factory.mktemp("keras") / "toy.keras")


@pytest.fixture(scope="module")
def toy_onnx(toy: Path, tmp_path_factory: pytest.TempPathFactory):
    return convert_keras_archive(
        toy, tmp_path_factory.mktemp("onnx") / "toy.onnx", reference="numpy"
    )


def _batch(n: int = 5, seed: int = 1) -> np.ndarray:
    """NCHW pixels in 0..255, as the Rescaling layer expects."""
    return np.random.default_rng(seed).uniform(0, 255, (n, 3, SIZE, SIZE)).astype(np.float32)


# --- reading ----------------------------------------------------------------------------------


def test_snake_case_matches_keras_names() -> None:
    assert to_snake_case("ReLU") == "re_lu"
    assert to_snake_case("DepthwiseConv2D") == "depthwise_conv2d"
    assert to_snake_case("ZeroPadding2D") == "zero_padding2d"
    assert to_snake_case("GlobalAveragePooling2D") == "global_average_pooling2d"
    assert to_snake_case("BatchNormalization") == "batch_normalization"


def test_weights_are_keyed_by_layer_path_through_nesting(toy: Path) -> None:
    archive = read_keras_archive(toy)
    expected = toy_weights()
    assert set(archive.weights) == set(expected)
    for name, (_, arrays) in expected.items():
        assert len(archive.weights[name]) == len(arrays)
        for got, want in zip(archive.weights[name], arrays, strict=True):
            np.testing.assert_array_equal(got, want)
    assert archive.metadata["keras_version"] == "3.13.2"
    assert archive.sha256 and len(archive.sha256) == 64


def test_same_padding_is_tensorflow_asymmetric() -> None:
    assert same_pads(8, 3, 2, 1) == (0, 1)  # even input, stride 2: the extra row goes after
    assert same_pads(9, 3, 2, 1) == (1, 1)
    assert same_pads(200, 3, 1, 1) == (1, 1)
    assert same_pads(7, 1, 1, 1) == (0, 0)


# --- parity -----------------------------------------------------------------------------------


def test_onnx_and_torch_match_the_numpy_reference(toy: Path, toy_onnx) -> None:
    graph = parse_graph(read_keras_archive(toy))
    x = _batch()
    expected = numpy_forward(graph, x.transpose(0, 2, 3, 1))
    assert expected.shape == (5, 1)
    assert np.ptp(expected) > 0.1  # the inputs move the output: the test can fail
    session = ort.InferenceSession(str(toy_onnx.onnx_path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"images": x})
    np.testing.assert_allclose(onnx_out, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(toy_onnx.reference(x)["age"], expected, rtol=0, atol=1e-12)
    for fold in (True, False):
        module = build_torch_module(graph, fold_batchnorm=fold)
        with torch.no_grad():
            torch_out = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(torch_out, expected, rtol=0, atol=1e-5)


def test_numpy_reference_follows_keras_semantics(toy: Path) -> None:
    """Recompute the toy by hand from its weights, independently of the op implementations."""
    w = {k: [a.astype(np.float64) for a in v] for k, (_, v) in toy_weights().items()}
    x = _batch(2).transpose(0, 2, 3, 1).astype(np.float64) / 127.5 - 1.0

    def bn(y: np.ndarray, p: list[np.ndarray]) -> np.ndarray:
        return (y - p[2]) / np.sqrt(p[3] + 1e-3) * p[0] + p[1]

    # stem: 3x3 stride 2 'same' on 8x8 = zero row/column after, taps at rows 0, 2, 4, 6
    padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    stem = np.zeros((2, 4, 4, 4))
    dw = np.zeros((2, 4, 4, 6))
    for i in range(4):
        for j in range(4):
            patch = padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]  # (2, 3, 3, 3)
            stem[:, i, j] = np.einsum("nhwc,hwco->no", patch, w["backbone/stem"][0])
            # depthwise, multiplier 2: output channel c * 2 + m
            dw[:, i, j] = np.einsum("nhwc,hwcm->ncm", patch, w["backbone/dw"][0]).reshape(2, 6)
    a = np.clip(bn(stem, w["backbone/stem_bn"]), 0, 6)
    b = np.maximum(bn(dw + w["backbone/dw"][1], w["backbone/dw_bn"]), 0)
    b = b @ w["backbone/proj"][0][0, 0] + w["backbone/proj"][1]
    feat = (a + b).mean(axis=(1, 2))
    hidden = np.maximum(feat @ w["dense"][0] + w["dense"][1], 0)
    by_hand = hidden @ w["dense_1"][0] + w["dense_1"][1]
    graph = parse_graph(read_keras_archive(toy))
    np.testing.assert_allclose(
        numpy_forward(graph, _batch(2).transpose(0, 2, 3, 1)), by_hand, rtol=1e-12, atol=1e-12
    )


def test_onnx_graph_is_clean_nchw_with_dynamic_batch(toy_onnx) -> None:
    model = onnx.load(str(toy_onnx.onnx_path))
    ops = Counter(node.op_type for node in model.graph.node)
    # augmentation and Dropout are gone; BatchNormalization is folded into the convolutions,
    # the asymmetric pads into the Conv; nothing is transposed or cast
    assert set(ops) <= {"Conv", "Clip", "Relu", "Add", "Mul", "ReduceMean", "Gemm"}, ops
    assert ops["Conv"] == 3 and ops["Clip"] == 1
    names = " ".join(n.name for n in model.graph.node).lower()
    assert "random" not in names and "dropout" not in names
    notes = toy_onnx.notes
    assert notes["skipped_layers"] == [
        "augment/random_flip",
        "augment/random_contrast",
        "dropout",
    ]
    assert notes["batchnorm_folded"] == 2 and notes["pads_fused_into_conv"] == 2
    assert notes["nodes"] == len(model.graph.node)
    assert notes["input_layout"] == "NCHW"
    pads = {
        tuple(next(a.ints for a in node.attribute if a.name == "pads"))
        for node in model.graph.node
        if node.op_type == "Conv"
    }
    assert (0, 0, 1, 1) in pads  # [top, left, bottom, right]: the stem and the padded dw
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "images" and graph_output.name == "age"
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["N", 3, SIZE, SIZE]
    assert [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim] == [
        "N",
        1,
    ]
    session = ort.InferenceSession(str(toy_onnx.onnx_path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        assert session.run(None, {"images": _batch(n)})[0].shape == (n, 1)


def test_apmoe_manifest_is_a_valid_manifest(tmp_path: Path) -> None:
    from agebench.models.manifest import parse_manifest

    doc = {**kg.APMOE_MANIFEST, "sha256": "0" * 64}
    spec = parse_manifest(doc, where="APMOE_MANIFEST", base_dir=tmp_path)
    assert spec.name == "apmoe-mobilenetv2" and spec.framework == "keras"
    assert (spec.input.layout, spec.input.height, spec.input.width) == ("NCHW", 200, 200)
    assert spec.input.mean == (0.0, 0.0, 0.0)
    assert spec.input.std == pytest.approx((255.0, 255.0, 255.0))
    assert spec.age_head.decoder == "regression" and spec.age_head.output == "age"
    assert spec.license == "MIT"


# --- refusals ---------------------------------------------------------------------------------


def test_lambda_layer_is_refused(tmp_path: Path) -> None:
    lam = _layer(
        "Lambda",
        "add",
        ["stem_relu", "proj"],
        function={"class_name": "__lambda__", "config": {"code": "AAAA", "defaults": None}},
        arguments={},
    )
    path = write_archive(tmp_path / "lambda.keras", toy_config(replace={"add": lam}))
    with pytest.raises(KerasGraphError, match=r"'backbone/add' is a 'Lambda'.*refused"):
        convert_keras_archive(path, tmp_path / "x.onnx", reference="numpy")
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_layer_is_refused(tmp_path: Path) -> None:
    custom = _layer("MyAttention", "add", ["stem_relu", "proj"])
    custom["module"], custom["registered_name"] = "evil_pkg.layers", "evil_pkg>MyAttention"
    path = write_archive(tmp_path / "custom.keras", toy_config(replace={"add": custom}))
    with pytest.raises(KerasGraphError, match="MyAttention"):
        parse_graph(read_keras_archive(path))


def test_path_traversal_entry_is_refused(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "evil.keras", extra={"../evil": b"x"})
    with pytest.raises(KerasGraphError, match=r"unsafe zip entry '\.\./evil'"):
        read_keras_archive(path)
    absolute = write_archive(tmp_path / "abs.keras", extra={"/etc/evil": b"x"})
    with pytest.raises(KerasGraphError, match="unsafe zip entry"):
        read_keras_archive(absolute)


def test_unexpected_and_oversized_entries_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_archive(tmp_path / "extra.keras", extra={"assets/vocab.txt": b"x"})
    with pytest.raises(KerasGraphError, match=r"unexpected zip entry 'assets/vocab\.txt'"):
        read_keras_archive(path)
    path = write_archive(tmp_path / "big.keras")
    monkeypatch.setitem(kg.ARCHIVE_LIMITS, "config.json", 1000)
    with pytest.raises(KerasGraphError, match=r"config\.json is \d+ bytes, over the 1000"):
        read_keras_archive(path)


def test_weights_of_another_layer_are_refused(tmp_path: Path) -> None:
    weights = toy_weights()
    weights["backbone/stem"], weights["backbone/proj"] = (
        ("layers/functional/layers/conv2d_1", weights["backbone/stem"][1]),
        ("layers/functional/layers/conv2d", weights["backbone/proj"][1]),
    )
    path = write_archive(tmp_path / "swapped.keras", weights=weights)
    with pytest.raises(KerasGraphError, match="belong to layer"):
        read_keras_archive(path)


def test_weights_no_layer_owns_are_refused(tmp_path: Path) -> None:
    weights = toy_weights()
    weights["ghost"] = ("layers/dense_7", [np.zeros(3, np.float32)])
    path = write_archive(tmp_path / "ghost.keras", weights=weights)
    with pytest.raises(KerasGraphError, match="no layer of the config owns"):
        read_keras_archive(path)


def test_wrong_weight_shapes_are_refused(tmp_path: Path) -> None:
    weights = toy_weights()
    group, arrays = weights["dense"]
    weights["dense"] = (group, [arrays[0][:, :3], arrays[1]])
    path = write_archive(tmp_path / "shapes.keras", weights=weights)
    with pytest.raises(KerasGraphError, match="dense: weights have shapes"):
        parse_graph(read_keras_archive(path))


# --- Keras itself, where installed -------------------------------------------------------------

needs_keras = pytest.mark.skipif(not keras_available(), reason="Keras 3 is not installed")


@pytest.mark.slow
@needs_keras
def test_keras_agrees_with_onnx_and_numpy(toy: Path, toy_onnx) -> None:
    reference = KerasReference(toy)
    try:
        x = _batch()
        keras_out = reference(x)["age"]
    finally:
        reference.close()
    graph = parse_graph(read_keras_archive(toy))
    expected = numpy_forward(graph, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(keras_out, expected, rtol=0, atol=1e-5)
    session = ort.InferenceSession(str(toy_onnx.onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"images": x})[0], keras_out, rtol=0, atol=1e-5)


@pytest.mark.slow
@needs_keras
def test_keras_safe_mode_refuses_a_lambda(tmp_path: Path) -> None:
    """Our reference loads with safe_mode=True; prove Keras then refuses a serialised lambda."""
    import base64
    import marshal

    marker = tmp_path / "ran"
    code = compile(f"lambda x: open({str(marker)!r}, 'w') and x", "<evil>", "eval")
    lambda_code = next(c for c in code.co_consts if hasattr(c, "co_code"))
    function = {
        "class_name": "__lambda__",
        "config": {
            "code": base64.b64encode(marshal.dumps(lambda_code)).decode(),
            "defaults": None,
            "closure": None,
        },
    }
    lam = _layer("Lambda", "add", ["proj"], function=function, arguments={})
    path = write_archive(tmp_path / "lambda.keras", toy_config(replace={"add": lam}))
    with pytest.raises(KerasGraphError, match="'backbone/add' is a 'Lambda'"):
        KerasReference(path)(_batch(1))  # this module's own check comes first
    reference = KerasReference(path, check=False)
    try:
        with pytest.raises(KerasGraphError, match=r"deserialization of a `Lambda` layer"):
            reference(_batch(1))
    finally:
        reference.close()
    assert not marker.exists()
