"""A registered model (or a user's torch factory) as a trainable feature extractor.

A registered model's ONNX graph is cut at the input of its final head, the last Gemm or MatMul
before the age output (with whatever follows it: bias, softmax, flatten), and both halves
become torch modules through the torch backend's own converter (``convert_graph``): the
features ``(N, D)`` that a new head trains on, and the original head, kept so that a test can
prove the cut loses nothing (original head over the features = the model's output). The
backbone carries the model's input spec and crop policy, and normalises crops with the torch
backend's own steps, so training sees exactly the tensors eval feeds the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from agebench.core.errors import AgebenchError
from agebench.faces.crop import CropSpec
from agebench.models.catalog import resolve_model
from agebench.models.manifest import InputSpec, ModelSpec
from agebench.models.torch_convert import convert_graph
from agebench.models.torch_engine import normalise_constants, normalise_crops

if TYPE_CHECKING:
    import onnx

TORCH_PREFIX = "torch:"
#: the ops a head's linear layer is exported as
_LINEAR_OPS = ("Gemm", "MatMul")
#: ops allowed between that layer and the output (bias, activation, reshapes)
_TAIL_OPS = ("Add", "Softmax", "LogSoftmax", "Sigmoid", "Flatten", "Reshape", "Identity", "Squeeze")


@dataclass(frozen=True)
class GraphCut:
    """Where a graph was cut: the features tensor, the head's linear node, the output."""

    features: str
    head_node: str
    output: str


def find_cut(model: onnx.ModelProto, output: str) -> GraphCut:
    """Walk back from ``output`` through the tail ops to the last Gemm/MatMul; its data input
    (the one that is no initializer) is the features tensor."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    name = output
    while name in producer:
        node = producer[name]
        computed = [i for i in node.input if i and i not in constants]
        if node.op_type in _LINEAR_OPS:
            if len(computed) != 1:
                break
            return GraphCut(computed[0], node.name, output)
        if node.op_type not in _TAIL_OPS or len(computed) != 1:
            break
        name = computed[0]
    raise AgebenchError(
        f"output {output!r}: no Gemm or MatMul head found before it (only bias, activation "
        f"and reshape ops may follow the head: {', '.join(_TAIL_OPS)})"
    )


class Backbone(nn.Module):
    """``forward(x) -> (N, D)`` features of the model's input tensor ``x``; ``prepare``
    turns (N, H, W, 3) RGB crops (uint8 or float pixels) into that input."""

    _mean: torch.Tensor
    _inv_std: torch.Tensor
    _gray: torch.Tensor

    def __init__(
        self,
        name: str,
        features: nn.Module,
        dim: int,
        input_spec: InputSpec,
        crop: CropSpec,
        original_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.features = features
        self.dim = dim
        self.input_spec = input_spec
        self.crop = crop
        #: the model's own final layers (features -> its output); None for a torch factory
        self.original_head = original_head
        mean, inv_std, gray = normalise_constants(input_spec, "cpu")
        # buffers: they follow the module to its device and are not trained
        self.register_buffer("_mean", mean, persistent=False)
        self.register_buffer("_inv_std", inv_std, persistent=False)
        self.register_buffer("_gray", gray, persistent=False)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_spec.height, self.input_spec.width

    def prepare(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) RGB crops -> the graph's normalised input (eval's float32 steps)."""
        height, width = self.input_size
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (height, width, 3):
            raise ValueError(f"expected (N, {height}, {width}, 3) crops, got {tuple(crops.shape)}")
        x = crops.to(self._mean.device, torch.float32)
        return normalise_crops(x, self.input_spec, self._mean, self._inv_std, self._gray)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features(x)
        return out.flatten(1)


def _load_onnx(spec: ModelSpec) -> onnx.ModelProto:
    import onnx

    try:
        return onnx.load(str(spec.file))
    except Exception as error:  # protobuf's decode errors are untyped
        raise AgebenchError(
            f"model {spec.name!r}: {spec.file} is not a loadable ONNX graph: {error}"
        ) from None


def _graph_input(model: onnx.ModelProto, name: str) -> str:
    constants = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise AgebenchError(f"model {name!r}: a backbone needs a graph of one input")
    return inputs[0]


def _age_output(model: onnx.ModelProto, spec: ModelSpec) -> str:
    output = spec.age_head.output if any(h.name == "age" for h in spec.heads) else None
    return output or model.graph.output[0].name


def _feature_width(module: nn.Module, spec: InputSpec) -> int:
    """D, by one forward pass of a zero input of the model's shape."""
    shape = (1, spec.channels, spec.height, spec.width)
    if spec.layout == "NHWC":
        shape = (1, spec.height, spec.width, spec.channels)
    with torch.no_grad():
        out = module(torch.zeros(shape))
    if not isinstance(out, torch.Tensor):
        raise AgebenchError(f"the backbone gives {type(out).__name__}, not one features tensor")
    return int(out.flatten(1).shape[1])


def backbone_from_model(spec: ModelSpec) -> Backbone:
    """A registered model's graph, cut before its final head, as a trainable backbone."""
    from onnx.shape_inference import infer_shapes
    from onnx.utils import Extractor

    # the Extractor finds the cut's tensor only in value_info, which not every graph carries
    model = infer_shapes(_load_onnx(spec))
    source = _graph_input(model, spec.name)
    cut = find_cut(model, _age_output(model, spec))
    try:
        extractor = Extractor(model)
        body = extractor.extract_model([source], [cut.features])
        tail = extractor.extract_model([cut.features], [cut.output])
    except Exception as error:  # onnx raises bare exceptions on graphs it cannot walk
        raise AgebenchError(f"model {spec.name!r}: cannot cut its graph: {error}") from None
    features, _ = convert_graph(body, spec.name)
    head, _ = convert_graph(tail, spec.name)
    dim = _feature_width(features, spec.input)
    return Backbone(spec.name, features, dim, spec.input, spec.crop, original_head=head)


def backbone_from_factory(factory: str, like: ModelSpec) -> Backbone:
    """A user's module (``pkg.module:build``, called with no arguments, as ``models convert
    torch`` takes it) whose forward gives features, fed the input and crops of model ``like``."""
    from agebench.build.convert.torch_module import build_factory

    module = build_factory(factory)
    dim = _feature_width(module.eval(), like.input)
    return Backbone(f"{TORCH_PREFIX}{factory}", module, dim, like.input, like.crop)


def load_backbone(name: str, *, like: str | None = None) -> Backbone:
    """``name``: a registered model (or a manifest path), or ``torch:pkg.module:build``; a
    torch factory needs ``like``, the registered model whose input and crop policy it uses."""
    if name.startswith(TORCH_PREFIX):
        if like is None:
            raise AgebenchError(
                f"backbone {name!r}: a torch factory needs the model whose input size, "
                "normalisation and crop policy it takes (like=MODEL)"
            )
        return backbone_from_factory(name[len(TORCH_PREFIX) :], resolve_model(like))
    return backbone_from_model(resolve_model(name))


def describe(backbone: Backbone) -> dict[str, Any]:
    """What a training run records about its backbone."""
    trainable = sum(p.numel() for p in backbone.features.parameters() if p.requires_grad)
    return {
        "name": backbone.name,
        "features": backbone.dim,
        "trainable_parameters": int(trainable),
        "input": {"size": list(backbone.input_size), "color": backbone.input_spec.color},
        "crop": backbone.crop.policy,
    }
