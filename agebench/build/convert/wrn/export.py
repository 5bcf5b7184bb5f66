"""yu4u's Keras WRN HDF5 -> ONNX: the PyTorch rebuild exported, then the shared passes fold
the exporter's pad arithmetic, TF's uneven 'same' pads into the Convs and the pooling's slice
into the AveragePool."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from agebench.build.convert import Conversion
from agebench.build.convert.passes import (
    fold_constants,
    fold_slices_into_avgpools,
    fuse_pads_into_convs,
)
from agebench.build.convert.torch_export import export_torchscript, write_checked
from agebench.build.convert.wrn.h5 import read_keras_h5
from agebench.build.convert.wrn.reference import numpy_reference
from agebench.build.convert.wrn.topology import (
    AGE_OUTPUT,
    GENDER_OUTPUT,
    INPUT_NAME,
    infer_architecture,
)
from agebench.build.convert.wrn.torch_net import wide_resnet_class

OPSET = 17


def convert_wrn_h5(h5_path: Path, onnx_path: Path) -> Conversion:
    """yu4u's Keras WRN HDF5 -> ONNX at ``onnx_path``, with the NumPy forward as reference.

    The graph takes ``images`` (N, 3, 64, 64) float32: 0..255 BGR, as the Keras model saw
    them (it has no normalisation of its own), and returns ``age_probabilities`` (N, 101) and
    ``gender_probabilities`` (N, 2; index 0 = female). BatchNorms that follow a convolution
    are folded into it and TF's uneven 'same' pads into the Conv; everything else is the
    Keras graph, op for op.
    """
    import onnx
    import torch

    h5_path, onnx_path = Path(h5_path), Path(onnx_path)
    weights, info = read_keras_h5(h5_path)
    arch = infer_architecture(weights)
    model = wide_resnet_class()(arch.depth, arch.k, arch.image_size)
    fused = model.load_keras_weights(weights).fused_for_export()
    dummy = torch.zeros(1, 3, arch.image_size, arch.image_size)
    graph = onnx.load_from_string(
        export_torchscript(
            fused,
            dummy,
            input_name=INPUT_NAME,
            output_names=[AGE_OUTPUT, GENDER_OUTPUT],
            opset=OPSET,
        )
    )
    exported_nodes = len(graph.graph.node)
    constants_folded = fold_constants(graph)
    pads_folded = fuse_pads_into_convs(graph)
    slices_folded = fold_slices_into_avgpools(graph)
    graph.doc_string = (
        f"yu4u WRN-{arch.depth}-{arch.k} (age-gender-estimation, IMDB-WIKI) from {h5_path.name}; "
        f"input {INPUT_NAME} NCHW 0..255 BGR; {AGE_OUTPUT} over ages 0..100; "
        f"{GENDER_OUTPUT} [female, male]"
    )
    data = write_checked(graph, onnx_path)

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
        "bytes": len(data),
    }

    def reference(images_nchw: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images_nchw)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) batch, got {images.shape}")
        return numpy_reference(weights, images.transpose(0, 2, 3, 1))

    return Conversion(onnx_path=onnx_path, reference=reference, notes=notes)
