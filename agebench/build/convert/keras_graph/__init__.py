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

The modules, in the order a conversion runs them: ``archive`` (the zip and its HDF5 weights),
``graph`` (the topology walk), ``layers`` (one rule per layer type: checks and NumPy forward,
by family), ``torch_net`` (the PyTorch rebuild), ``export`` (ONNX through the shared
``convert.passes``, and ``convert_keras_archive``), ``reference`` and ``keras_reference`` (the
gate's references); ``apmoe`` describes the one published model converted this way.
"""

from __future__ import annotations

from agebench.build.convert.keras_graph.apmoe import APMOE_MANIFEST
from agebench.build.convert.keras_graph.archive import (
    ARCHIVE_LIMITS,
    KerasArchive,
    KerasGraphError,
    read_keras_archive,
    to_snake_case,
)
from agebench.build.convert.keras_graph.export import (
    convert_keras_archive,
    export_onnx,
    graph_output_shape,
)
from agebench.build.convert.keras_graph.graph import parse_graph
from agebench.build.convert.keras_graph.keras_reference import KerasReference, keras_available
from agebench.build.convert.keras_graph.layers import COMPUTE_LAYERS, IDENTITY_LAYERS
from agebench.build.convert.keras_graph.ops import KerasGraph, Op
from agebench.build.convert.keras_graph.reference import numpy_forward, numpy_reference
from agebench.build.convert.keras_graph.torch_net import build_torch_module

__all__ = [
    "APMOE_MANIFEST",
    "ARCHIVE_LIMITS",
    "COMPUTE_LAYERS",
    "IDENTITY_LAYERS",
    "KerasArchive",
    "KerasGraph",
    "KerasGraphError",
    "KerasReference",
    "Op",
    "build_torch_module",
    "convert_keras_archive",
    "export_onnx",
    "graph_output_shape",
    "keras_available",
    "numpy_forward",
    "numpy_reference",
    "parse_graph",
    "read_keras_archive",
    "to_snake_case",
]
