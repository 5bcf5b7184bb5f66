"""The literal types every layer shares, each defined once with the tuple of its values.

A value set written out twice drifts: the runner, the API's checks and the command line's
``click.Choice`` once each listed the faces modes and devices by hand. Here each ``Literal`` is
the definition and its tuple (``typing.get_args``, in the order the command line shows them)
is what validation and the choices iterate, so adding a value is one edit.
"""

from __future__ import annotations

from typing import Literal, get_args

#: how faces are found: "none" takes each image as one ready face crop, "detect" finds them
#: (MTCNN), "box" uses the boxes a benchmark gives (detecting inside them to align)
FacesMode = Literal["none", "detect", "box"]
FACES_MODES: tuple[FacesMode, ...] = get_args(FacesMode)

#: the faces modes of images that come without boxes (``predict``, ``agebench.load``)
PredictFacesMode = Literal["detect", "none"]
PREDICT_FACES_MODES: tuple[PredictFacesMode, ...] = get_args(PredictFacesMode)

#: where the graph runs; "auto": the fastest path there is (the summary records which)
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = get_args(Device)

#: what runs the graph; "auto": onnxruntime-gpu, else torch on CUDA, else onnxruntime on CPU
Backend = Literal["auto", "onnxruntime", "torch"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)

#: torch on CUDA's float precision; "auto": fp16 when the model's fp16 variant passed its gate
Precision = Literal["auto", "fp32", "fp16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

#: onnxruntime session settings: the fastest measured here (cached), the manifest's, or
#: measure again
Tuning = Literal["auto", "manifest", "retune"]
TUNINGS: tuple[Tuning, ...] = get_args(Tuning)

#: the variants ``agebench models quantize`` makes
QuantizeTarget = Literal["fp16", "int8"]
QUANTIZE_TARGETS: tuple[QuantizeTarget, ...] = get_args(QuantizeTarget)

#: how a gate reduces a batch's age differences to the one figure it bounds
AgeStatistic = Literal["max", "mean"]

#: what runs a predict or eval: this process's threads, or a Ray cluster (``--executor``)
Executor = Literal["local", "ray"]
EXECUTORS: tuple[Executor, ...] = get_args(Executor)
