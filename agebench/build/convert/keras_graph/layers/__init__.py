"""The Keras layer types this converter reproduces, as one table: class name -> ``LayerRule``
(its checks and its NumPy forward), assembled from one module per layer family. Anything not
in the table, or in ``IDENTITY_LAYERS``, is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agebench.build.convert.keras_graph.archive import KerasGraphError
from agebench.build.convert.keras_graph.layers import conv, head, norm
from agebench.build.convert.keras_graph.ops import LayerCall, LayerRule, Op, Shape

#: layers with a computation of their own, re-implemented here in PyTorch and NumPy
LAYERS: dict[str, LayerRule] = {**norm.RULES, **conv.RULES, **head.RULES}
COMPUTE_LAYERS = frozenset(LAYERS)

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


def make_op(
    kind: str,
    name: str,
    config: Mapping[str, Any],
    inputs: tuple[str, ...],
    in_shapes: tuple[Shape, ...],
    weights: tuple[np.ndarray, ...],
) -> Op:
    """Check one computing layer against its rule and describe it as an ``Op``."""
    rule = LAYERS[kind]
    if not rule.many_inputs and len(inputs) != 1:
        raise KerasGraphError(f"{name}: {kind} takes one input, got {len(inputs)}")
    shape = in_shapes[0]
    if rule.needs_image and len(shape) != 3:
        raise KerasGraphError(f"{name}: {kind} needs an image tensor, got shape {shape}")
    out_shape, pads = rule.check(LayerCall(kind, name, config, inputs, in_shapes, weights))
    for array in weights:
        if not np.all(np.isfinite(array)):
            raise KerasGraphError(f"{name}: weights hold NaN or infinity")
    return Op(name, kind, dict(config), inputs, in_shapes, out_shape, weights, pads)
