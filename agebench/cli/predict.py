"""``agebench predict``: parse, call ``agebench.predict``, print the summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

import agebench
from agebench.api_results import PredictResult
from agebench.cli.common import (
    ProgressBar,
    cluster_options,
    execution_options,
    friendly_errors,
    json_option,
    notify_wait,
    print_decoder_warnings,
    print_json,
    results,
    run_folder_options,
)
from agebench.core.config import ClusterConfig, ExecutionConfig
from agebench.core.types import PREDICT_FACES_MODES, PredictFacesMode
from agebench.models.catalog import DEFAULT_MODEL

#: the failures listed on the terminal; summary.json has them all
MAX_FAILURES_PRINTED = 10
#: up to this many images, each face's age is printed too: someone trying agebench on a photo
#: or a handful wants the ages, not counts; above it predictions.jsonl has them
MAX_IMAGES_LISTED = 20


@click.command("predict")
# a str, not a Path: INPUT may be a URI (s3://bucket/prefix/), which Path() would mangle
@click.argument("input", type=click.Path())
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder: one JSON per image (mirroring INPUT), predictions.jsonl, summary.json "
    "(default: reports/predict-<INPUT's name>).",
)
@click.option(
    "--model",
    "-m",
    default=None,
    help="Registered model name, a manifest .toml, or an .onnx with --manifest.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Manifest for an ad-hoc --model path/to/model.onnx.",
)
@click.option(
    "--faces",
    type=click.Choice(PREDICT_FACES_MODES),
    default="detect",
    show_default=True,
    help="detect: find faces with MTCNN; none: every image is a ready face crop.",
)
@click.option(
    "--min-face-size",
    type=click.IntRange(min=12),
    default=20,
    show_default=True,
    help="Smallest face to detect, in pixels of the original photo.",
)
@click.option(
    "--max-faces",
    type=click.IntRange(min=1),
    default=None,
    help="Keep at most N faces per image, largest first.",
)
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option(
    "--resume/--overwrite",
    default=True,
    show_default=True,
    help="Skip images already written in --out, or start the folder afresh.",
)
@click.option(
    "--crop-margin",
    type=click.FloatRange(min=0.0, max=2.0),
    default=0.0,
    show_default=True,
    help="With --faces none: the margin each crop has around the face, as a fraction of the "
    "face box (0: tight crops such as UTKFace chips; 0.4: APPA-REAL _face.jpg).",
)
@click.option(
    "--save-raw", is_flag=True, help="Also write raw model outputs (probabilities, ranks...)."
)
@json_option
@run_folder_options
@execution_options
@cluster_options
@friendly_errors
def predict(
    input: str,
    out: Path | None,
    model: str | None,
    manifest: Path | None,
    faces: PredictFacesMode,
    min_face_size: int,
    max_faces: int | None,
    recursive: bool,
    resume: bool,
    crop_margin: float,
    save_raw: bool,
    wait: bool,
    strict: bool,
    as_json: bool,
    execution: ExecutionConfig,
    cluster: ClusterConfig,
) -> None:
    """Estimate the age of every face in the images under INPUT (a folder, a file, or a
    URI such as s3://bucket/prefix/)."""
    with ProgressBar() as on_progress:
        result = agebench.predict(
            input,
            out,
            model=model or DEFAULT_MODEL,
            manifest=manifest,
            faces=faces,
            min_face_size=min_face_size,
            max_faces=max_faces,
            crop_margin=crop_margin,
            recursive=recursive,
            resume=resume,
            save_raw=save_raw,
            wait=wait,
            strict=strict,
            **execution.as_options(),
            **cluster.as_options(),
            progress=on_progress,
            notify=notify_wait,
        )
    if as_json:
        print_json({**result.summary, "out": result.out})
    else:
        print_summary(result)
    sys.exit(result.exit_code)


def print_summary(result: PredictResult) -> None:
    """The counts table, the first failures and where the outputs are, on stdout."""
    out = results()
    if result.counts.images <= MAX_IMAGES_LISTED:
        out.print(faces_table(result.rows()))
    counts, speed = result.counts, result.images_per_second
    table = Table(title=escape(f"agebench predict: {result.model.name} on {result.provider}"))
    for column in ("images", "faces", "no face", "failed", "resumed", "images/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(counts.images),
        str(counts.faces),
        str(counts.images_no_face),
        str(counts.images_failed),
        str(counts.skipped_resumed),
        f"{speed:.1f}" if speed else "-",
    )
    out.print(table)
    for failure in result.failures[:MAX_FAILURES_PRINTED]:
        out.print(
            f"  [yellow]{escape(str(failure['status']))}[/] "
            f"{escape(str(failure['image']))}: {escape(str(failure['error']))}",
            highlight=False,
        )
    if len(result.failures) > MAX_FAILURES_PRINTED:
        out.print(
            f"  ... and {len(result.failures) - MAX_FAILURES_PRINTED} more in "
            f"{escape(str(result.out))}/summary.json"
        )
    print_decoder_warnings(counts.decoder_warnings)
    out.print(f"outputs: {escape(str(result.out))}", highlight=False)


def faces_table(rows: list[dict[str, Any]]) -> Table:
    """One row per face (file, face box, age +- the model's spread); an image without a face
    or that failed is one row saying so."""
    table = Table(title="ages")
    table.add_column("file", overflow="fold")
    table.add_column("box (x0, y0, x1, y1)", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    for row in rows:
        box = row.get("box")
        if row.get("status") != "ok" or row.get("age") is None:
            age = f"[yellow]{escape(str(row.get('status', '-')).replace('_', ' '))}[/]"
        elif row.get("age_std") is not None:
            age = f"{row['age']:.1f} ± {row['age_std']:.1f}"
        else:
            age = f"{row['age']:.1f}"
        table.add_row(
            escape(str(row.get("image"))),
            ", ".join(f"{v:.0f}" for v in box) if box else "-",
            age,
        )
    return table
