"""The ONNX graph passes every converter runs on what the TorchScript exporter wrote.

The exporter leaves arithmetic on constants in the graph (the pads of ``F.pad`` as a
Cast/Concat/Slice/Transpose chain) and cannot express TensorFlow's uneven 'same' padding in a
convolution or an average pool, so each converter's rebuild pads explicitly and these passes
fold that back: constants are evaluated once, a zero ``Pad`` goes into the ``pads`` of the
``Conv`` that reads it, and a ``Slice`` that drops a stride-1 ``AveragePool``'s leading
outputs becomes smaller begin pads. Each pass edits the model in place, returns a count for the
gate report, and leaves no initializer or ``Constant`` that nothing reads.

onnx is imported inside the passes so that importing a converter (for its manifest) stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "FOLDABLE_OPS",
    "fold_constants",
    "fold_slices_into_avgpools",
    "fuse_pads_into_convs",
    "node_attributes",
    "prune_unused",
    "set_ints",
]

#: ops whose value is the same every run, and so may be computed once at export
FOLDABLE_OPS = frozenset(
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
#: the largest constant (in elements) folded: pad arithmetic is tiny, and folding a weight-sized
#: expression would only copy it
FOLD_MAX_ELEMENTS = 1 << 16
#: an ONNX ``Slice`` end meaning "to the end of the axis", as the exporter writes it
_SLICE_TO_END = 2**31 - 1


def node_attributes(node: Any) -> dict[str, Any]:
    """A node's attributes as plain Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def set_ints(node: Any, name: str, values: list[int]) -> None:
    """Replace (or add) the integer-list attribute ``name`` of ``node``."""
    from onnx import helper

    for attr in [a for a in node.attribute if a.name == name]:
        node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(name, [int(v) for v in values]))


def _initializers(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _readers(model: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it; a graph output counts as a reader (``None``)."""
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for out in model.graph.output:
        readers.setdefault(out.name, []).append(None)
    return readers


def prune_unused(model: Any) -> None:
    """Drop initializers and ``Constant`` nodes that no node and no graph output reads."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    used |= {out.name for out in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)


def fold_constants(model: Any) -> int:
    """Evaluate each small node of ``FOLDABLE_OPS`` whose inputs are all constant (``Constant``
    nodes included) into an initializer. Anything the ONNX reference runtime cannot evaluate is
    left for onnxruntime. Returns how many nodes were folded."""
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
            name in values or int(np.prod(known[name].dims)) <= FOLD_MAX_ELEMENTS
            for name in inputs
            if name in known or name in values
        )
        if (
            node.domain in ("", "ai.onnx")
            and node.op_type in FOLDABLE_OPS
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
                np.asarray(v).size <= FOLD_MAX_ELEMENTS for v in outputs
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
    prune_unused(model)
    return folded


def _zero_spatial_pads(pad: Any, constants: Mapping[str, np.ndarray]) -> list[int] | None:
    """The 8 pads of a constant zero NCHW ``Pad`` that pads only H and W, else None."""
    if node_attributes(pad).get("mode", b"constant") != b"constant":
        return None
    inputs = [*pad.input, "", "", ""][:4]
    if inputs[1] not in constants or inputs[3]:  # pads not constant, or axes given
        return None
    if inputs[2] and (inputs[2] not in constants or np.any(constants[inputs[2]] != 0)):
        return None
    pads = [int(p) for p in constants[inputs[1]].reshape(-1)]
    if len(pads) != 8 or min(pads) < 0 or pads[:2] != [0, 0] or pads[4:6] != [0, 0]:
        return None
    return pads


def _takes_pads(node: Any, padded: str) -> bool:
    """A ``Conv`` reading ``padded`` as its data (only), with explicit ``pads``."""
    return (
        node is not None
        and node.op_type == "Conv"
        and node.input[0] == padded
        and padded not in node.input[1:]
        and node_attributes(node).get("auto_pad", b"NOTSET") in (b"", b"NOTSET")
    )


def fuse_pads_into_convs(model: Any) -> int:
    """Fold zero ``Pad`` nodes that feed only Convs into the Convs' own (asymmetric) ``pads``.

    PyTorch cannot pad a convolution unevenly, so TF's 'same' padding of a stride-2 conv
    exports as Pad + Conv; an ONNX Conv takes begin and end pads separately. The exporter
    merges identical pads, so one Pad may feed several Convs. Returns how many Convs took a
    Pad in (the WRN's Pads each feed one Conv; MobileNetV2's may feed two).
    """
    constants, readers = _initializers(model), _readers(model)
    fused = []
    convs_padded = 0
    for pad in model.graph.node:
        pads = _zero_spatial_pads(pad, constants) if pad.op_type == "Pad" else None
        convs = readers.get(pad.output[0], []) if pads is not None else []
        if pads is None or not convs or not all(_takes_pads(c, pad.output[0]) for c in convs):
            continue
        for conv in convs:
            top, left, bottom, right = node_attributes(conv).get("pads", [0, 0, 0, 0])
            new = [top + pads[2], left + pads[3], bottom + pads[6], right + pads[7]]
            set_ints(conv, "pads", new)
            conv.input[0] = pad.input[0]
            convs_padded += 1
        fused.append(pad)
    for pad in fused:
        model.graph.node.remove(pad)
    prune_unused(model)
    return convs_padded


def fold_slices_into_avgpools(model: Any) -> int:
    """Fold a Slice that drops leading rows/columns of a stride-1 AveragePool's output into
    smaller begin pads: a symmetric pad + slice becomes TF's uneven padding ([3, 3, 4, 4] for an
    8x8 window) in one node. Returns how many Slices went."""
    folded = 0
    while True:
        constants, readers = _initializers(model), _readers(model)
        producers = {out: node for node in model.graph.node for out in node.output}
        for node in model.graph.node:
            pool = producers.get(node.input[0]) if node.op_type == "Slice" else None
            if pool is None or pool.op_type != "AveragePool" or len(readers[pool.output[0]]) != 1:
                continue
            pads = _avgpool_pads_after_slice(pool, node, constants)
            if pads is None:
                continue
            set_ints(pool, "pads", pads)
            pool.output[0] = node.output[0]
            model.graph.node.remove(node)
            folded += 1
            break
        else:
            break
    prune_unused(model)
    return folded


def _avgpool_pads_after_slice(
    pool: Any, slice_node: Any, constants: Mapping[str, np.ndarray]
) -> list[int] | None:
    """The pool's pads that make it output what the Slice keeps, or None if it cannot."""
    attrs = node_attributes(pool)
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
        if not 0 <= dim < spatial or step != 1 or end < _SLICE_TO_END:
            return None
        if not 0 <= start <= pads[dim]:
            return None
        pads[dim] -= int(start)
    return pads
