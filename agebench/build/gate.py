"""The faithful-conversion gate: a converted (or quantized) graph is registered only if it
provably computes what its source does.

``run_gate`` checks, in order: ``onnx.checker``; a symbolic batch dimension that really runs
at batch sizes 1 and 3 with the same per-face result; the manifest's preprocessing written into
the graph's ``metadata_props`` (so the file alone still says how to feed it); and onnxruntime's
outputs against an independent ``reference`` forward, on random images and on real face chips,
per raw output and on the decoded age. The report becomes the manifest's ``[gate]`` table with
the real-faces MAE, so ``models list`` shows parity and accuracy side by side.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agebench.core.config import REFERENCE_CPU
from agebench.core.errors import AgebenchError
from agebench.core.types import AgeStatistic
from agebench.models.manifest import ModelSpec, spec_to_dict

METADATA_KEY = "agebench.manifest"
GATE_BATCH_SIZES = (1, 3)
_CHUNK = 16

Reference = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class GateFailed(AgebenchError):
    """A conversion differs from its source beyond the stated tolerance; nothing registered."""

    def __init__(self, report: GateReport) -> None:
        super().__init__(f"model {report.model!r} failed the gate: {'; '.join(report.failures)}")
        self.report = report


@dataclass
class GateReport:
    model: str
    #: bound on every raw output's max |difference|; None: reported, not gated (int8 variants,
    #: whose raw outputs move by design; their decoded age is what is held to a bound)
    tolerance: float | None
    age_tolerance: float
    #: ``tolerance`` is a fraction of each output's magnitude (max |reference|, at least 1):
    #: fp16 keeps about three significant digits whatever the output's scale
    tolerance_relative: bool = False
    #: "max": every face's age within ``age_tolerance``; "mean": the mean |difference|
    age_statistic: AgeStatistic = "max"
    #: the input sets whose differences decide ``passed`` (the others are reported)
    gated_sets: tuple[str, ...] = ("random", "real")
    #: set ("random", "real") -> graph output -> max |onnxruntime - reference|
    max_abs_diff: dict[str, dict[str, float]] = field(default_factory=dict)
    #: set -> max |decoded age (onnxruntime) - decoded age (reference)| in years
    max_abs_diff_age: dict[str, float] = field(default_factory=dict)
    #: set -> mean |decoded age difference| in years
    mean_abs_diff_age: dict[str, float] = field(default_factory=dict)
    #: max |batch-of-1 output - the same face in a batch of 3|
    batch_max_abs_diff: float = 0.0
    real_faces: dict[str, Any] = field(default_factory=dict)
    n_random: int = 0
    seed: int = 0
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    #: the graph file's sha256 after the gate wrote its metadata
    sha256: str = ""
    onnxruntime: str = ""
    onnx: str = ""
    date: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def max_output_diff(self) -> float:
        values = [v for per_set in self.max_abs_diff.values() for v in per_set.values()]
        return max(values, default=0.0)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``[gate]`` table (TOML-ready: no None anywhere)."""
        table: dict[str, Any] = {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "tolerance_relative": self.tolerance_relative or None,
            "age_tolerance": self.age_tolerance,
            "age_statistic": self.age_statistic,
            "gated_sets": list(self.gated_sets),
            "max_abs_diff": {k: _sig(v) for k, v in self.max_abs_diff.items()},
            "max_abs_diff_age": _sig(self.max_abs_diff_age),
            "mean_abs_diff_age": _sig(self.mean_abs_diff_age),
            "batch_sizes": list(GATE_BATCH_SIZES),
            "batch_max_abs_diff": float(f"{self.batch_max_abs_diff:.3g}"),
            "random_inputs": self.n_random,
            "seed": self.seed,
            "real_faces": {k: v for k, v in self.real_faces.items() if v is not None},
            "checks": list(self.checks),
            "onnxruntime": self.onnxruntime,
            "onnx": self.onnx,
            "date": self.date,
        }
        if self.failures:
            table["failures"] = list(self.failures)
        return {k: v for k, v in table.items() if v is not None}


def _sig(values: Mapping[str, float]) -> dict[str, float]:
    """Differences to 3 significant digits: the manifest is read by people."""
    return {k: float(f"{v:.3g}") for k, v in values.items()}


def default_faces_dir() -> Path | None:
    """Real chips for the gate: ``AGEBENCH_GATE_FACES``, else the shared UTKFace chips beside
    a checkout (``../shared/faces/utkface-48``) when present, else none (random inputs only)."""
    env = os.environ.get("AGEBENCH_GATE_FACES")
    if env:
        return Path(env).expanduser()
    from agebench.core.provenance import checkout_root

    root = checkout_root()
    shared = root.parent / "shared" / "faces" / "utkface-48" if root is not None else None
    return shared if shared is not None and shared.is_dir() else None


# --- metadata ---------------------------------------------------------------------------------


def preprocessing_metadata(spec: ModelSpec) -> str:
    """The manifest's input, normalisation, crop and heads as the JSON kept in the graph."""
    data = spec_to_dict(spec)
    doc = {
        "schema": "agebench.manifest/1",
        "name": spec.name,
        "input": data["input"],
        "crop": data["crop"],
        "heads": data["heads"],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def write_metadata(onnx_path: Path, spec: ModelSpec) -> str:
    """Put the preprocessing into ``metadata_props`` (atomically) and return the new sha256."""
    import onnx

    from agebench.models.hashing import model_sha256

    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = preprocessing_metadata(spec)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    tmp = onnx_path.with_name(f".{onnx_path.name}.tmp-{os.getpid()}")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, onnx_path)
    finally:
        tmp.unlink(missing_ok=True)
    return model_sha256(onnx_path)


def read_metadata(onnx_path: Path) -> dict[str, Any] | None:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


# --- the gate ---------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if a64.size == 0:
        return 0.0
    d = np.abs(a64 - b64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    d[both_nan] = 0.0
    value = float(np.nanmax(np.where(np.isnan(d), np.inf, d)))
    return value


def _check_graph(spec: ModelSpec, report: GateReport) -> None:
    import onnx

    from agebench.build.sources import check_onnx_external_data

    check_onnx_external_data(spec.file)
    try:
        onnx.checker.check_model(str(spec.file))
        report.checks.append("onnx.checker")
    except Exception as error:
        report.failures.append(f"onnx.checker: {_one_line(error)}")
    model = onnx.load(str(spec.file), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    wanted = spec.input.name or (inputs[0].name if inputs else None)
    graph_input = next((i for i in inputs if i.name == wanted), None)
    if graph_input is None:
        report.failures.append(f"graph has no input {wanted!r}")
        return
    dims = graph_input.type.tensor_type.shape.dim
    if not dims or dims[0].HasField("dim_value"):
        first = dims[0].dim_value if dims else "none"
        report.failures.append(
            f"input {wanted!r} has a fixed batch dimension ({first}); export it symbolic"
        )
    else:
        report.checks.append(f"symbolic batch dimension {dims[0].dim_param or '?'!r}")


def _outputs(predictor: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    names = list(dict.fromkeys(predictor.output_names))
    values = predictor.session.run(names, {predictor.input_name: x})
    return dict(zip(names, values, strict=True))


def _chunked(fn: Callable[[np.ndarray], Mapping[str, np.ndarray]], x: np.ndarray) -> dict:
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), _CHUNK):
        out = fn(x[start : start + _CHUNK])
        for name, value in out.items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _age(predictor: Any, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    for head, decoder, name in zip(
        predictor.spec.heads, predictor.decoders, predictor.output_names, strict=True
    ):
        if head.name == "age":
            return np.asarray(decoder.decode(outputs[name]).fields["age"], dtype=np.float64)
    raise AssertionError("manifests always have an age head")


def _compare(
    predictor: Any,
    reference: Reference,
    x: np.ndarray,
    label: str,
    report: GateReport,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Compare onnxruntime with the reference on one input set; return both decoded ages."""
    gated = label in report.gated_sets
    try:
        ours = _chunked(lambda batch: _outputs(predictor, batch), x)
    except Exception as error:  # onnxruntime raises its own untyped errors
        report.failures.append(f"{label}: onnxruntime failed: {_one_line(error)}")
        return None
    try:
        theirs = _chunked(reference, x)
    except AgebenchError:
        raise
    except Exception as error:  # a converter's reference is code we do not own
        report.failures.append(f"{label}: the reference forward raised {type(error).__name__}")
        return None
    diffs: dict[str, float] = {}
    ok = True
    for name, value in ours.items():
        if name not in theirs:
            report.failures.append(f"{label}: the reference gives no output {name!r}")
            ok = False
            continue
        ref = np.asarray(theirs[name])
        if ref.shape != value.shape:
            report.failures.append(
                f"{label}: output {name!r} is {value.shape} but the reference's is {ref.shape}"
            )
            ok = False
            continue
        diffs[name] = _diff(value, ref)
        bound = _bound(report, ref)
        if gated and bound is not None and not diffs[name] <= bound:
            report.failures.append(
                f"{label}: output {name!r} differs by {diffs[name]:.3g} (tolerance {bound:.3g})"
            )
    report.max_abs_diff[label] = diffs
    if not ok:
        return None
    age, ref_age = _age(predictor, ours), _age(predictor, theirs)
    report.max_abs_diff_age[label] = _diff(age, ref_age)
    report.mean_abs_diff_age[label] = float(np.mean(np.abs(age - ref_age)))
    if report.age_statistic == "mean":
        age_diff, what = report.mean_abs_diff_age[label], "on average"
    else:
        age_diff, what = report.max_abs_diff_age[label], "at most"
    if gated and not age_diff <= report.age_tolerance:
        report.failures.append(
            f"{label}: decoded age differs by {age_diff:.3g} years {what} "
            f"(tolerance {report.age_tolerance:g})"
        )
    return age, ref_age


def _bound(report: GateReport, reference: np.ndarray) -> float | None:
    """The raw-output bound for one output (None: not gated)."""
    if report.tolerance is None:
        return None
    if not report.tolerance_relative or not np.size(reference):
        return report.tolerance
    magnitude = float(np.nanmax(np.abs(np.asarray(reference, dtype=np.float64))))
    return report.tolerance * max(1.0, magnitude if math.isfinite(magnitude) else 1.0)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:240] or type(error).__name__


def _check_batches(predictor: Any, x: np.ndarray, report: GateReport) -> bool:
    """Batches of 1 and 3 run and agree per face; False when they cannot run at all."""
    try:
        three = _outputs(predictor, x[:3])
        singles = [_outputs(predictor, x[i : i + 1]) for i in range(3)]
    except Exception as error:  # onnxruntime raises its own untyped errors
        report.failures.append(
            f"batch sizes {', '.join(map(str, GATE_BATCH_SIZES))}: onnxruntime failed: "
            f"{_one_line(error)}"
        )
        return False
    worst = 0.0
    for name, value in three.items():
        if len(value) != 3 or any(len(s[name]) != 1 for s in singles):
            report.failures.append(f"output {name!r} does not follow the batch size")
            return False
        for i, single in enumerate(singles):
            worst = max(worst, _diff(single[name][0], value[i]))
    report.batch_max_abs_diff = worst
    sizes = ", ".join(map(str, GATE_BATCH_SIZES))
    bound = _bound(report, np.concatenate([np.ravel(v) for v in three.values()]))
    if bound is None:
        # dynamic int8 picks its activation scales per batch: reported, not gated
        report.checks.append(f"batch sizes {sizes} (per-face change {worst:.3g}, reported)")
    elif worst > bound:
        report.failures.append(
            f"a face's output changes with the batch it is in (by {worst:.3g}; "
            f"tolerance {bound:.3g})"
        )
    else:
        report.checks.append(f"batch sizes {sizes}")
    return True


def chip_label(path: Path) -> float | None:
    """The age in a UTKFace-style chip name (``[age]_...``), or None."""
    head = path.name.split("_", 1)[0]
    try:
        value = float(head)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def load_chips(spec: ModelSpec, faces_dir: Path, *, limit: int | None = None) -> list[tuple]:
    """``(path, crop)`` for each ``*.jpg`` in ``faces_dir``, cut by the model's crop policy
    with each chip taken as a tight face crop (as ``--faces none`` does)."""
    from agebench.benchmarks.spec import ReadyCrop
    from agebench.faces.align import warp
    from agebench.runner.imageio import ImageDecodeError, decode_image
    from agebench.runner.reconcile import plan_ready_crops

    plan = plan_ready_crops(ReadyCrop(kind="tight"), spec.crop, bench=str(faces_dir))
    size = (spec.input.height, spec.input.width)
    chips = []
    for path in sorted(faces_dir.glob("*.jpg"))[:limit]:
        try:
            image = decode_image(path)
        except ImageDecodeError:
            continue
        matrix = plan.matrix(image.width, image.height, size)
        chips.append((path, warp(image.rgb, matrix, size)))
    return chips


def run_gate(
    spec: ModelSpec,
    reference: Reference,
    *,
    faces_dir: Path | None,
    tolerance: float | None,
    age_tolerance: float,
    n_random: int = 8,
    seed: int = 0,
    age_statistic: AgeStatistic = "max",
    gate_random: bool = True,
    tolerance_relative: bool = False,
) -> GateReport:
    """Gate ``spec``'s graph against ``reference``; writes the graph's metadata (the returned
    report's ``sha256`` is the file's new hash). Never registers anything.

    ``gate_random=False`` reports the random-input differences without letting them decide,
    when real faces are available (quantized graphs are calibrated on faces, not on noise).
    """
    import onnx
    import onnxruntime as ort

    from agebench.core.metrics import cumulative_score, mean_absolute_error
    from agebench.runner.stack import build_predictor

    report = GateReport(
        model=spec.name,
        tolerance=None if tolerance is None else float(tolerance),
        tolerance_relative=tolerance_relative,
        age_tolerance=float(age_tolerance),
        n_random=n_random,
        seed=seed,
        age_statistic=age_statistic,
        onnxruntime=ort.__version__,
        onnx=onnx.__version__,
        date=_now(),
    )
    if not spec.file.is_file():
        raise AgebenchError(f"model {spec.name!r}: {spec.file} is missing")
    if faces_dir is not None and not faces_dir.is_dir():
        raise AgebenchError(f"gate faces folder {faces_dir} not found")
    chips = load_chips(spec, faces_dir) if faces_dir is not None else []
    report.gated_sets = ("random", "real") if gate_random or not chips else ("real",)
    _check_graph(spec, report)
    report.sha256 = write_metadata(spec.file, spec)
    if read_metadata(spec.file) == json.loads(preprocessing_metadata(spec)):
        report.checks.append(f"metadata_props {METADATA_KEY!r}")
    else:
        report.failures.append("the graph's metadata_props did not keep the preprocessing")
    spec = replace(spec, sha256=report.sha256)
    # a bare predictor, no preparer: the graph is not registered yet, and the chips are cut
    # by load_chips at full size, the same pixels for every gate on every machine
    predictor = build_predictor(spec, REFERENCE_CPU)

    rng = np.random.default_rng(seed)
    shape = (max(n_random, 3), spec.input.height, spec.input.width, 3)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    x = predictor.preprocess(images)
    if not _check_batches(predictor, x, report):
        return report  # a graph that cannot take batches is refused before any comparison
    _compare(predictor, reference, x[: max(n_random, 1)], "random", report)

    report.real_faces = {"n": len(chips), "dir": faces_dir.name if faces_dir else "none"}
    if chips:
        crops = np.stack([crop for _, crop in chips])
        ages = _compare(predictor, reference, predictor.preprocess(crops), "real", report)
        labels = np.array([chip_label(path) for path, _ in chips], dtype=object)
        known = np.array([v is not None for v in labels])
        if ages is not None and known.any():
            truth = labels[known].astype(np.float64)
            err, ref_err = ages[0][known] - truth, ages[1][known] - truth
            report.real_faces.update(
                labelled=int(known.sum()),
                mae=_round(mean_absolute_error(err)),
                cs5=_round(cumulative_score(err, 5)),
                reference_mae=_round(mean_absolute_error(ref_err)),
            )
    return report


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# --- display ----------------------------------------------------------------------------------


def _short_float(value: float) -> str:
    if value == 0:
        return "0"
    text = f"{value:.0e}"
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}"


def gate_summary(extra: Mapping[str, Any]) -> str:
    """``"1e-6 / 8.71"``: the worst output difference the gate saw, and the real-faces MAE."""
    gate = extra.get("gate")
    if not isinstance(gate, Mapping):
        return "-"
    diffs = [
        float(v)
        for per_set in (gate.get("max_abs_diff") or {}).values()
        if isinstance(per_set, Mapping)
        for v in per_set.values()
        if isinstance(v, int | float)
    ]
    parity = _short_float(max(diffs)) if diffs else "?"
    real = gate.get("real_faces") or {}
    mae = real.get("mae") if isinstance(real, Mapping) else None
    return f"{parity} / {mae:.2f}" if isinstance(mae, int | float) else f"{parity} / -"
