"""Smaller, faster variants of a registered model: fp16 and int8, each gated against its
float32 parent and registered as a model of its own (``<name>-fp16``, ``<name>-int8``).

- ``fp16``: ``onnxruntime.transformers.float16`` with float32 inputs and outputs kept, so the
  manifest's preprocessing and decoders are unchanged.
- ``int8`` with calibration crops: static QDQ quantization (``quantize_static``: MinMax
  ranges over face crops cut with the model's own policy, uint8 activations, 7-bit int8
  weights per channel, output nodes kept in float) after onnxruntime's pre-pass. The variant
  runs at graph optimisation level "all", where the QDQ pairs become integer kernels.
  Without calibration data: dynamic quantization (``quantize_dynamic``, uint8 weights,
  activation ranges computed per batch, so a face's result depends slightly on its batch;
  on CPU it is *slower* than float32 for conv nets: a smaller file, not a faster model).

Gates and what they measured on the 48 shared UTKFace chips (onnxruntime 1.32, x86 CPU with
AVX2 and no VNNI; static int8 calibrated on those chips):

| variant | gated on | bound | dlib-age-v1 | yu4u-wrn-16-8 |
| --- | --- | --- | --- | --- |
| fp16 | each raw output, random and real | 1e-2 x max(1, max abs output) | 5.3e-3 | 1.1e-3 |
| fp16 | every face's decoded age | 0.1 year | 0.067 | 0.023 |
| int8 static | mean decoded-age difference, real faces | 1.5 years | 0.31 | 0.25 |
| int8 dynamic | the same | 1.5 years | 0.32 | 0.27 |

Real-faces MAE, float32 / fp16 / static / dynamic int8: dlib-age-v1 7.31 / 7.30 / 7.36 /
7.23; WRN-16-8 8.39 / 8.39 / 8.40 / 8.42. Static int8 ran 1.7x (WRN) and 2.1x (dlib) faster
than float32 on a batch of 48 crops; dynamic int8 ran 0.9x and 0.35x. int8's raw outputs, per-face
maxima (static: 1.7 and 0.7 years) and random-input differences are reported in ``[gate]``
but do not decide: quantization moves single outputs by design and is calibrated on faces,
not noise. apmoe-mobilenetv2 fails both: fp16 moves single faces by 0.65 year, int8 by 17
years on average, so the gate registers neither.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agebench.core.config import REFERENCE_CPU
from agebench.core.errors import AgebenchError
from agebench.core.types import QUANTIZE_TARGETS, QuantizeTarget
from agebench.models.manifest import ModelSpec
from agebench.models.variants import GATES

if TYPE_CHECKING:
    from agebench.build.convert import Conversion, Reference
    from agebench.build.pull import BuildResult, FacesDir, StageCallback


_CALIBRATION_BATCH = 8


def manifest_doc(spec: ModelSpec) -> dict[str, Any]:
    """A spec back in manifest (TOML) form, without ``file``, ``sha256`` and ``[gate]``."""
    i, c = spec.input, spec.crop
    doc: dict[str, Any] = {
        "schema_version": 1,
        "name": spec.name,
        "framework": spec.framework,
        "description": spec.description,
        "input": {
            "name": i.name,
            "layout": i.layout,
            "size": [i.height, i.width],
            "color": i.color,
            "normalize": {
                "mean": list(i.mean),
                "std": list(i.std),
                "per_image_standardization": i.per_image_standardization,
            },
        },
        "crop": {
            "policy": c.policy,
            "template": c.template,
            "padding": c.padding,
            "margin": c.margin,
            "square": c.square,
            "pixel_grid": c.pixel_grid,
            "notes": c.notes,
        },
        "heads": [
            {"name": h.name, "output": h.output, "decoder": h.decoder, "params": dict(h.params)}
            for h in spec.heads
        ],
        "runtime": {"graph_optimization": spec.runtime.graph_optimization},
        "provenance": dict(spec.provenance),
    }
    for key, value in spec.extra.items():
        if key != "gate":
            doc.setdefault(key, value)
    return doc


def onnx_reference(path: Path) -> Reference:
    """The float32 parent run by onnxruntime on CPU: the reference its variants are gated on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def forward(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {input_name: x}), strict=True))

    return forward


# --- calibration crops ------------------------------------------------------------------------


def crops_from_dir(spec: ModelSpec, folder: Path, limit: int) -> np.ndarray:
    """Up to ``limit`` tight face chips (``*.jpg``) from ``folder``, cut as the gate cuts them."""
    from agebench.build.gate import load_chips

    if not folder.is_dir():
        raise AgebenchError(f"calibration folder {folder} not found")
    chips = load_chips(spec, folder, limit=limit)
    if not chips:
        raise AgebenchError(f"calibration folder {folder} has no readable .jpg face chips")
    return np.stack([crop for _, crop in chips])


def _spread(items: list[Any], count: int) -> list[Any]:
    """``count`` items evenly spaced through ``items`` (all of them when fewer), in order."""
    if len(items) <= count:
        return items
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def calibration_crops(
    spec: ModelSpec,
    bench: str,
    root: Path,
    limit: int,
    *,
    options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Up to ``limit`` face crops from a benchmark, cut with the model's crop policy the way
    ``agebench eval`` cuts them (ready crops reframed, photos detected, given boxes used).

    The images are spread evenly through the loader's order rather than taken from its head,
    which for many layouts is sorted by age or subject.
    """
    from agebench.benchmarks.registry import get_benchmark
    from agebench.benchmarks.spec import LoadOptions
    from agebench.runner.config import DetectConfig
    from agebench.runner.stack import PredictStack

    benchmark = get_benchmark(bench)
    opts = dict(options or {})
    data = benchmark.load(LoadOptions(root=root, options=opts))
    mode = benchmark.faces_for(opts)
    if mode == "box" and not any(r.box for r in data.records):
        mode = "detect"
    preparer = PredictStack.build(
        spec,
        mode,
        REFERENCE_CPU,
        detect=DetectConfig(max_faces=1),  # one face per record, as eval scores it
        ready_crop=benchmark.ready_crop(opts),
        source=bench,
    ).preparer
    crops: list[np.ndarray] = []
    # a few spares for images that fail or show no face
    for record in _spread(data.records, limit + max(8, limit // 4)):
        item = preparer(root / record.image, Path(record.image), box=record.box)
        if item.status == "ok" and item.crops is not None and len(item.crops):
            crops.append(item.crops[0])
        if len(crops) >= limit:
            break
    if not crops:
        raise AgebenchError(f"{bench} at {root}: no usable face crop for calibration")
    return np.stack(crops)


# --- the variants -----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice at WARNING through the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _to_fp16(parent: Path, out: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(parent))
    with _quiet():
        half = convert_float_to_float16(model, keep_io_types=True)
    _topological_sort(half.graph)  # the converter appends its input casts after their users
    onnx.save(half, str(out))
    return {"method": "fp16 weights and activations, float32 inputs and outputs kept"}


def _topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (stable)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    available.add("")  # an omitted optional input
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or an undefined input: leave the rest for the checker
            ordered.extend(pending)
            break
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    nodes = [type(n)() for n in ordered]
    for copy, node in zip(nodes, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _preprocessed(parent: Path, tmp: Path) -> Path:
    """onnxruntime's recommended pre-pass (shape inference, folding); the parent if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = tmp / "pre-quantization.onnx"
    try:
        with _quiet():
            quant_pre_process(str(parent), str(target))
        return target
    except Exception:  # an optional optimisation; the plain graph quantizes too
        target.unlink(missing_ok=True)
        return parent


def _reader(input_name: str, tensor: np.ndarray) -> Any:
    """A CalibrationDataReader over a preprocessed tensor, in small batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                [
                    {input_name: tensor[i : i + _CALIBRATION_BATCH]}
                    for i in range(0, len(tensor), _CALIBRATION_BATCH)
                ]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return Reader()


def _runs(path: Path, input_name: str, batch: np.ndarray) -> bool:
    """Whether onnxruntime (all optimisations: the integer kernels) loads and runs a graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {input_name: batch})
    except Exception:  # onnxruntime raises its own untyped errors
        return False
    return True


def _to_int8(
    spec: ModelSpec, out: Path, tmp: Path, calibration: np.ndarray | None
) -> dict[str, Any]:
    """Static QDQ with calibration crops, dynamic without.

    x86 CPUs without VNNI multiply uint8 activations by int8 weights with saturating 16-bit
    sums, which wrecked WRN-16-8 (8.9 years off on average) until the weights were quantized
    to 7 bits (``reduce_range``); per-channel weight scales then bring it to 0.25. The nodes
    producing graph outputs (softmax) stay in float: 8-bit probabilities of 101 age bins lose
    the expected value. Dynamic quantization uses uint8 weights, which ConvInteger runs
    natively.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from agebench.runner.stack import build_predictor

    source = _preprocessed(spec.file, tmp)
    try:
        if calibration is None:
            with _quiet():
                quantize_dynamic(str(source), str(out), weight_type=QuantType.QUInt8)
            return {"method": "int8 dynamic (uint8 weights, activation ranges per batch)"}
        predictor = build_predictor(spec, REFERENCE_CPU, verify=False)  # quantize() verified
        tensor = predictor.preprocess(calibration)
        graph = onnx.load(str(source), load_external_data=False).graph
        outputs = {o.name for o in graph.output}
        keep_float = [n.name for n in graph.node if n.name and set(n.output) & outputs]
        for per_channel in (True, False):
            with _quiet():
                quantize_static(
                    str(source),
                    str(out),
                    _reader(predictor.input_name, tensor),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=per_channel,
                    reduce_range=True,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=keep_float,
                )
            # some graphs' per-channel scales do not fit their layers (dlib's affine layers
            # before onnxruntime's pre-pass folds them): fall back to per-tensor scales
            if _runs(out, predictor.input_name, tensor[:1]):
                break
        scales = "per-channel" if per_channel else "per-tensor"
        return {
            "method": (
                f"int8 static QDQ (MinMax, uint8 activations, 7-bit int8 weights {scales}; "
                "output nodes in float)"
            ),
            "calibration_images": len(calibration),
        }
    finally:
        if source != spec.file:
            source.unlink(missing_ok=True)


def quantize(
    spec: ModelSpec,
    to: QuantizeTarget,
    *,
    calibration: np.ndarray | None = None,
    calibration_source: str | None = None,
    faces_dir: FacesDir = "auto",
    home: Path | None = None,
    tolerance: float | None = None,
    age_tolerance: float | None = None,
    force: bool = False,
    on_stage: StageCallback | None = None,
) -> BuildResult:
    """Make, gate and register ``<spec.name>-<to>``.

    ``calibration``: (N, H, W, 3) uint8 RGB face crops at the model's input size (int8 only;
    static quantization with them, dynamic without). ``tolerance``/``age_tolerance`` override
    the variant's ``GATES`` entry. The parent must be present and match its sha256.
    """
    import onnxruntime as ort

    from agebench.build.pull import build_and_register
    from agebench.core.version import __version__
    from agebench.models.catalog import agebench_home
    from agebench.models.hashing import verify_model_sha256

    if to not in GATES:
        raise AgebenchError(f"--to {to!r}: one of {', '.join(QUANTIZE_TARGETS)}")
    if calibration is not None and to != "int8":
        raise AgebenchError("calibration data is for int8 only")
    if calibration is not None:
        expected = (spec.input.height, spec.input.width, 3)
        if calibration.ndim != 4 or calibration.shape[1:] != expected or not len(calibration):
            raise AgebenchError(
                f"calibration crops must be (N, {expected[0]}, {expected[1]}, 3), "
                f"got {calibration.shape}"
            )
    if not spec.file.is_file():
        raise AgebenchError(f"model {spec.name!r}: weights file {spec.file} is missing")
    verify_model_sha256(spec.file, spec.sha256)
    gate = GATES[to]
    name = f"{spec.name}-{to}"
    stage = on_stage or (lambda _message: None)
    doc = manifest_doc(spec)
    notes: dict[str, Any] = {}

    def make(tmp: Path) -> Conversion:
        from agebench.build.convert import Conversion

        out = tmp / f"{name}.onnx"
        stage(f"quantizing {spec.name} to {to}")
        if to == "fp16":
            notes.update(_to_fp16(spec.file, out))
        else:
            notes.update(_to_int8(spec, out, tmp, calibration))
        return Conversion(out, onnx_reference(spec.file), {})

    def make_and_record(tmp: Path) -> Conversion:
        conversion = make(tmp)
        if to == "int8":  # QDQ pairs become integer kernels only at the "all" level
            doc["runtime"] = {"graph_optimization": "all"}
        parent = dict(spec.provenance)
        doc["description"] = f"{spec.description} ({to} variant)".strip()
        doc["provenance"] = {
            **parent,
            "source": f"{to} variant of {spec.name} (sha256 {spec.sha256})",
            "parent": spec.name,
            "parent_sha256": spec.sha256,
            "parent_source": str(parent.get("source", "")),
            "quantization": {
                "to": to,
                **notes,
                "calibration": calibration_source
                or ("none" if calibration is None else "given crops"),
                "tool": f"onnxruntime {ort.__version__}",
                "by": f"agebench {__version__}",
            },
        }
        return conversion

    return build_and_register(
        name,
        make_and_record,
        doc,
        home=home if home is not None else agebench_home(),
        faces_dir=faces_dir,
        tolerance=gate.tolerance if tolerance is None else tolerance,
        age_tolerance=gate.age_tolerance if age_tolerance is None else age_tolerance,
        status="quantized",
        force=force,
        on_stage=on_stage,
        tmp_prefix=".quantize",
        gate_options={
            "age_statistic": gate.age_statistic,
            "gate_random": gate.gate_random,
            "tolerance_relative": gate.tolerance_relative,
        },
    )


def quantize_model(
    model: str,
    to: QuantizeTarget,
    *,
    calibrate_on: str | None = None,
    root: Path | None = None,
    calibration_chips: Path | None = None,
    calibration_size: int = 64,
    faces_dir: FacesDir = "auto",
    home: Path | None = None,
    tolerance: float | None = None,
    age_tolerance: float | None = None,
    force: bool = False,
    on_stage: StageCallback | None = None,
) -> BuildResult:
    """``models quantize``: resolve the model and its calibration crops, then ``quantize``.

    int8 calibrates on ``calibration_size`` crops from the benchmark ``calibrate_on`` at
    ``root`` (or from the face chips in ``calibration_chips``); with neither it is dynamic.
    """
    from agebench.models.catalog import resolve_model

    if calibrate_on is not None and root is None:
        raise AgebenchError("--calibrate-on needs --root, the benchmark's folder")
    if root is not None and calibrate_on is None:
        raise AgebenchError("--root is the folder of the --calibrate-on benchmark; name it")
    if calibrate_on is not None and calibration_chips is not None:
        raise AgebenchError("give --calibrate-on or --calibration-chips, not both")
    if to != "int8" and (calibrate_on or calibration_chips):
        raise AgebenchError("calibration is for --to int8 only")
    spec = resolve_model(model)
    calibration = None
    source = None
    if calibrate_on is not None and root is not None:
        if on_stage:
            on_stage(f"cutting {calibration_size} calibration crops from {calibrate_on}")
        calibration = calibration_crops(spec, calibrate_on, root, calibration_size)
        source = f"{len(calibration)} images of {calibrate_on} ({root.name}), spread evenly"
    elif calibration_chips is not None:
        calibration = crops_from_dir(spec, calibration_chips, calibration_size)
        source = f"{len(calibration)} face chips from {calibration_chips.name}"
    return quantize(
        spec,
        to,
        calibration=calibration,
        calibration_source=source,
        faces_dir=faces_dir,
        home=home,
        tolerance=tolerance,
        age_tolerance=age_tolerance,
        force=force,
        on_stage=on_stage,
    )
