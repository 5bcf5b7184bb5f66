"""The model's (possibly nested) Sequential/Functional description flattened into a list of
checked ``Op`` s in execution order, with every layer's config and weights validated.

Only the layer types of ``layers.LAYERS`` and ``layers.IDENTITY_LAYERS`` are accepted; a
shared layer, a call argument that is not a tensor, or a dtype policy other than float32 is
refused with an error naming the layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agebench.build.convert.keras_graph.archive import (
    MAX_NESTING,
    KerasArchive,
    KerasGraphError,
    is_container,
    layer_name,
)
from agebench.build.convert.keras_graph.layers import COMPUTE_LAYERS, IDENTITY_LAYERS, make_op
from agebench.build.convert.keras_graph.ops import KerasGraph, Op, Shape

_IGNORED_CALL_KWARGS = frozenset({"mask", "training"})


class _GraphBuilder:
    def __init__(self, weights: Mapping[str, list[np.ndarray]]) -> None:
        self.weights = weights
        self.ops: list[Op] = []
        self.shapes: dict[str, Shape] = {}
        self.skipped: list[str] = []
        self.names: set[str] = set()

    # -- containers

    def container(self, entry: Mapping[str, Any], inputs: list[str], prefix: str, depth: int):
        if depth > MAX_NESTING:
            raise KerasGraphError(f"models nested more than {MAX_NESTING} deep")
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
        by_name = {layer_name(layer): layer for layer in layers}
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
                name = layer_name(layer)
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
                names = ", ".join(layer_name(layer) for layer in pending[:5])
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
            raise KerasGraphError(f"{prefix}{layer_name(layer)}: input dtype {dtype!r}")
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
                f"{prefix}{layer_name(layer)}: declares shape {shape}, is fed (None, "
                f"{', '.join(map(str, actual))})"
            )

    # -- layers

    def apply_multi(self, entry: Mapping[str, Any], inputs: list[str], prefix: str, depth: int):
        if is_container(entry):
            return self.container(entry, inputs, f"{prefix}{layer_name(entry)}/", depth + 1)
        return [self.apply(entry, inputs, prefix, depth)]

    def apply(self, entry: Mapping[str, Any], inputs: list[str], prefix: str, depth: int) -> str:
        kind = entry.get("class_name")
        name = f"{prefix}{layer_name(entry)}"
        if is_container(entry):
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
        op = make_op(kind, name, config, tuple(inputs), in_shapes, weights)
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
            and is_container(first)
        ):
            entry, layers = first, first["config"]["layers"]
            continue
        shape = config.get("build_input_shape")
        break
    if not isinstance(shape, list) or len(shape) < 2:
        raise KerasGraphError(f"cannot tell the model's input shape (got {shape!r})")
    return tuple(shape[1:])
