"""Reading yu4u's Keras 2 HDF5 file: every weight by layer name, checked against the graph
``topology`` describes (names, shapes, finiteness) and against the file's own ``model_config``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agebench.build.convert.wrn.topology import (
    BN_EPSILON,
    Architecture,
    KerasH5Error,
    KerasLayer,
    infer_architecture,
    param_shapes,
)


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
    expected = param_shapes(arch)
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
