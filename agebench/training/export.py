"""A trained backbone + head -> a gated, registered ONNX model that ``agebench eval`` runs.

The exported graph takes exactly what the backbone's source model takes (same input name,
layout and size; normalisation stays in the manifest, not in the graph), so the Predictor
prepares a trained model's crops with the steps eval uses for its source. It outputs what the
head's decoder reads (logits, the scaled age, or the prototype head's embedding), and the
manifest's ``[decoder]`` comes from the head, so a trained model is decoded by the same code
as every other model.

Export goes through the machinery of ``models convert torch``: ``torch.onnx.export`` at the
opset every converter uses, then the conversion gate (onnxruntime against the torch module on
random inputs and real faces, the real-face MAE where chips are labelled), and registration
only when the gate passed (``agebench.build.register``). ``quantize`` variants go through the
existing quantize gate, as ``models quantize`` makes them.

The manifest records what the model was trained from (the backbone model's name, sha256 and
licence, in ``[provenance]`` and a NOTICE beside it) and on what: ``training_data`` names the
benchmark, so evaluating on it is flagged as contamination, and ``[training]`` keeps the run's
bench, version, fingerprint, protocol, folds, seed, loss, epochs and best validation MAE.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agebench.build.convert.torch_export import export_torchscript
from agebench.build.convert.torch_module import DEFAULT_OPSET
from agebench.core.errors import AgebenchError
from agebench.training.backbone import TORCH_PREFIX, Backbone
from agebench.training.heads import DecoderSection, Head, PrototypeHead, RegressionHead

if TYPE_CHECKING:
    from agebench.build.convert import Conversion
    from agebench.build.gate import GateReport
    from agebench.build.register import BuildResult, StageCallback
    from agebench.core.types import QuantizeTarget
    from agebench.models.manifest import InputSpec, ModelSpec

FRAMEWORK = "torch (agebench train)"
#: the keys of ``training`` that the manifest's ``[training]`` table keeps (``bench`` required)
TRAINING_KEYS = (
    "bench",
    "benchmark_version",
    "data_fingerprint",
    "protocol",
    "split",
    "folds",
    "train_folds",
    "test_fold",
    "test_images",
    "images",
    "backbone",
    "validation",
    "seed",
    "loss",
    "loss_options",
    "epochs",
    "best_epoch",
    "best_val_mae",
)


@dataclass(frozen=True)
class ExportResult:
    """What was registered: the spec, what its gate measured, and the variants."""

    spec: ModelSpec
    report: GateReport
    #: "fp16" / "int8" -> the registered variant
    variants: dict[str, BuildResult] = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float:
        """The worst raw-output difference, onnxruntime against the torch module."""
        return self.report.max_output_diff

    @property
    def max_abs_diff_age(self) -> float:
        """The worst decoded-age difference in years, over random and real inputs."""
        return max(self.report.max_abs_diff_age.values(), default=0.0)

    @property
    def mae(self) -> float | None:
        """The real-face MAE the gate measured (None without labelled chips)."""
        value = self.report.real_faces.get("mae")
        return float(value) if isinstance(value, int | float) else None


class ExportedModel(nn.Module):
    """Backbone then the head's exported part: the model's input tensor -> the decoder's input."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.backbone(x))
        return out


def exported_module(backbone: Backbone, head: Head) -> ExportedModel:
    """A float32 CPU copy in eval mode (the caller's modules, maybe on a GPU, stay as they
    are): the module that is exported and the reference the gate holds the graph to."""
    module = ExportedModel(copy.deepcopy(backbone), copy.deepcopy(head.export_module()))
    return module.float().cpu().eval()


def output_name(head: Head) -> str:
    """The graph output's name, saying what the decoder reads."""
    if isinstance(head, PrototypeHead):
        return "embedding"
    if isinstance(head, RegressionHead):
        return "age_scaled"
    return "logits"


def training_table(training: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``[training]`` table: the known keys of ``training`` plus the commit."""
    from agebench.build.register import toml_ready
    from agebench.core.provenance import git_commit

    bench = training.get("bench")
    if not isinstance(bench, str) or not bench:
        raise AgebenchError("export: training['bench'] must name the benchmark trained on")
    unknown = sorted(set(training) - set(TRAINING_KEYS))
    if unknown:
        raise AgebenchError(
            f"export: unknown training keys {', '.join(unknown)} "
            f"(known: {', '.join(TRAINING_KEYS)})"
        )
    table = {k: training[k] for k in TRAINING_KEYS if k in training}
    table["git_commit"] = git_commit()
    ready: dict[str, Any] = toml_ready(table)
    return ready


def _source_spec(backbone: Backbone, source: str | None) -> ModelSpec:
    """The registered model whose input, crop policy and runtime the trained model keeps."""
    from agebench.models.catalog import resolve_model

    name = source or backbone.name
    if name.startswith(TORCH_PREFIX):
        raise AgebenchError(
            f"export: backbone {backbone.name!r} is a torch factory; pass source=MODEL, the "
            "registered model whose input and crop policy it was trained with"
        )
    spec = resolve_model(name)
    if spec.input != backbone.input_spec or spec.crop != backbone.crop:
        raise AgebenchError(
            f"export: backbone {backbone.name!r} does not take model {spec.name!r}'s input "
            "and crop policy; the trained model would be fed other crops than in training"
        )
    return spec


def _provenance(source: ModelSpec, backbone: Backbone, bench: str, notice: str) -> dict[str, Any]:
    """What the model was trained from and on. The backbone's own declared and suspected
    training data carry over: fine-tuning does not make a network forget what it saw."""
    from agebench.models.training_data import NOTES, SUSPECTED, TRAINING_DATA

    parent = source.provenance
    declared = [str(n) for n in parent.get(TRAINING_DATA) or [] if n != bench]
    suspected = [s for s in parent.get(SUSPECTED) or [] if s.get("name") != bench]
    from_torch = backbone.name.startswith(TORCH_PREFIX)
    provenance: dict[str, Any] = {
        "source": f"trained by agebench train on {bench}, backbone {backbone.name}"
        + ("" if from_torch else f" (sha256 {source.sha256})"),
        "backbone": backbone.name,
        "backbone_sha256": None if from_torch else source.sha256,
        "backbone_source": str(parent.get("source", "")),
        "license": "see NOTICE (a user's torch module)" if from_torch else parent["license"],
        "license_notice": notice,
        TRAINING_DATA: [bench, *declared],
        SUSPECTED: suspected or None,
        NOTES: parent.get(NOTES),
    }
    return provenance


def _notice(name: str, source: ModelSpec, backbone: Backbone, table: Mapping[str, Any]) -> str:
    weights = (
        f"the user's torch module `{backbone.name[len(TORCH_PREFIX) :]}` (its own licence "
        "applies), fed the input and crops of "
        f"`{source.name}`"
        if backbone.name.startswith(TORCH_PREFIX)
        else f"`{source.name}` (sha256 {source.sha256}), licence "
        f"{source.provenance.get('license')}; its source: {source.provenance.get('source')}"
    )
    folds = table.get("train_folds")
    return (
        f"# {name}\n\n"
        f"Trained by `agebench train` from the weights of {weights}.\n\n"
        f"Trained on the benchmark `{table['bench']}`"
        + (f", folds {folds}" if folds is not None else "")
        + (f", test fold {table['test_fold']}" if "test_fold" in table else "")
        + f", loss `{table.get('loss', '?')}`. The backbone's licence covers these weights, "
        "and the terms of the training data (see the benchmark's own licence) apply too.\n"
    )


def _renamed(section: DecoderSection, name: str) -> DecoderSection:
    """The head's tables named after the model (``NAME.prototypes.npz``): they sit beside
    every other registered model in one weights folder."""
    params = dict(section.params)
    tables = {}
    for table, arrays in section.tables.items():
        own = f"{name}.{table}"
        tables[own] = arrays
        params = {k: own if v == table else v for k, v in params.items()}
    return replace(section, params=params, tables=tables)


@contextlib.contextmanager
def _side_files(folder: Path, names: Sequence[str]) -> Iterator[None]:
    """Files written beside a manifest before it is registered (the decoder's tables, the
    NOTICE): restored to what they were, or removed, when registration fails."""
    previous = {n: (folder / n).read_bytes() if (folder / n).is_file() else None for n in names}
    try:
        yield
    except BaseException:
        for name, data in previous.items():
            if data is None:
                (folder / name).unlink(missing_ok=True)
            else:
                (folder / name).write_bytes(data)
        raise


def _export_onnx(module: nn.Module, spec: InputSpec, path: Path, output: str) -> None:
    """The TorchScript exporter every converter uses, dynamic batch, traced on one input of
    the source model's shape."""
    shape = (1, spec.channels, spec.height, spec.width)
    if spec.layout == "NHWC":
        shape = (1, spec.height, spec.width, spec.channels)
    example = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2.0 - 1.0
    data = export_torchscript(
        module,
        example,
        input_name=spec.name or "images",
        output_names=[output],
        opset=DEFAULT_OPSET,
    )
    path.write_bytes(data)


def export_trained(
    backbone: Backbone,
    head: Head,
    *,
    name: str,
    training: Mapping[str, Any],
    home: Path | None = None,
    quantize: Sequence[QuantizeTarget] = (),
    gate_images: Path | None = None,
    source: str | None = None,
    calibration: np.ndarray | None = None,
    force: bool = False,
    on_stage: StageCallback | None = None,
) -> ExportResult:
    """Export, gate and register ``backbone`` + ``head`` as model ``name``.

    ``training``: what the run was (``TRAINING_KEYS``; ``bench`` required). ``gate_images``:
    labelled chips for the gate (default: ``$AGEBENCH_GATE_FACES`` or the shared UTKFace
    chips). ``source``: the registered model whose input and crops the backbone takes, for a
    torch-factory backbone (default: the backbone's own model). ``quantize``: variants
    ``NAME-fp16`` / ``NAME-int8`` through the quantize gate (int8 static with
    ``calibration`` crops, dynamic without). A gate failure raises ``GateFailed`` and
    registers nothing.
    """
    import torch as _torch

    from agebench.build.convert import Conversion
    from agebench.build.pull import DEFAULT_AGE_TOLERANCE, DEFAULT_TOLERANCE
    from agebench.build.quantize import manifest_doc
    from agebench.build.quantize import quantize as quantize_variant
    from agebench.build.register import build_and_register, check_model_name
    from agebench.core.version import __version__
    from agebench.models.catalog import agebench_home
    from agebench.models.training_data import suspected_training_data

    check_model_name(name)
    spec = _source_spec(backbone, source)
    table = training_table(training)
    # whether the backbone had seen the benchmark before: then no fold is clean of it; and
    # what it is suspected of having seen (the model's own provenance declares the trained
    # benchmark instead, so a suspicion about it survives only here, for the findings)
    table["backbone_training_data"] = list(spec.provenance.get("training_data") or [])
    table["backbone_suspected_training_data"] = [
        {"name": entry["name"], "reason": entry["reason"]}
        for entry in suspected_training_data(spec.provenance)
    ]
    section = _renamed(head.decoder_section(), name)
    if quantize and section.tables:
        raise AgebenchError(
            f"export: the {section.decoder} decoder reads a table beside the model, which the "
            "quantize gate does not carry; export without quantize"
        )
    home = home if home is not None else agebench_home()
    weights = home / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    module = exported_module(backbone, head)
    output = output_name(head)
    notice = f"{name}.NOTICE.md"
    doc = manifest_doc(spec)
    doc.update(
        name=name,
        framework=FRAMEWORK,
        description=f"{table.get('loss', 'trained')} head on {backbone.name}, trained on "
        f"{table['bench']} by agebench {__version__}",
        provenance=_provenance(spec, backbone, table["bench"], notice),
        training=table,
    )

    def make(tmp: Path) -> Conversion:
        if on_stage:
            on_stage(f"exporting {name} to ONNX")
        onnx_path = tmp / f"{name}.onnx"
        _export_onnx(module, spec.input, onnx_path, output)
        heads = section.write(tmp)  # the gate reads the tables beside the graph in tmp
        for table_name in section.tables:
            (weights / table_name).write_bytes((tmp / table_name).read_bytes())
        (weights / notice).write_text(_notice(name, spec, backbone, table))
        doc["heads"] = [{"name": "age", "output": output, **heads}]

        def reference(x: np.ndarray) -> dict[str, np.ndarray]:
            with _torch.no_grad():
                out = module(_torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            return {output: out.numpy()}

        notes = {
            "exporter": "torch.onnx.export (TorchScript-based), dynamic batch",
            "torch": _torch.__version__,
            "opset": DEFAULT_OPSET,
        }
        return Conversion(onnx_path, reference, notes)

    with _side_files(weights, [notice, *section.tables]):
        result = build_and_register(
            name,
            make,
            doc,
            home=home,
            faces_dir="auto" if gate_images is None else gate_images,
            tolerance=DEFAULT_TOLERANCE,
            age_tolerance=DEFAULT_AGE_TOLERANCE,
            status="trained",
            force=force,
            on_stage=on_stage,
            tmp_prefix=".train",
        )
    assert result.report is not None  # a build always gates
    variants: dict[str, BuildResult] = {}
    for to in quantize:
        crops = calibration if to == "int8" else None
        variants[to] = quantize_variant(
            result.spec,
            to,
            calibration=crops,
            calibration_source=None if crops is None else f"{len(crops)} training crops",
            faces_dir="auto" if gate_images is None else gate_images,
            home=home,
            force=force,
            on_stage=on_stage,
        )
    return ExportResult(result.spec, result.report, variants)
