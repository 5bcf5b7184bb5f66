"""``agebench train``: parse, call ``agebench.train``, print one row per fold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

import agebench
from agebench.cli.common import (
    ProgressBar,
    benchmark_options,
    console,
    fmt,
    friendly_errors,
    json_option,
    parse_pairs,
    print_json,
    results,
    shown,
)
from agebench.core.types import QUANTIZE_TARGETS, FacesMode, QuantizeTarget


def _value(text: str) -> Any:
    """A ``--loss-option`` value: an int, a float, a comma list of numbers, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if "," in text:
        return [_value(part.strip()) for part in text.split(",")]
    return text


@click.command("train")
@benchmark_options(required=True)
@click.option(
    "--fold",
    "only_folds",
    multiple=True,
    metavar="LABEL",
    help="Train only this fold (repeatable; default: every fold of --protocol).",
)
@click.option(
    "--backbone",
    required=True,
    help="A registered model whose graph (cut before its head) is trained, or "
    "torch:pkg.module:build with --like.",
)
@click.option(
    "--like", default=None, help="torch: backbones: the registered model whose input and crops."
)
@click.option(
    "--loss",
    required=True,
    help="dex, mean-variance, coral, corn, regression or prototype.",
)
@click.option(
    "--loss-option",
    "loss_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="The loss's options (min_age=16, max_age=80, lambda1=0.2, norm=l2...).",
)
@click.option(
    "--name",
    required=True,
    help="The models are registered as NAME-fold{k} (NAME without --protocol).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True
)
@click.option("--weight-decay", type=click.FloatRange(min=0.0), default=1e-4, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Stop after this many epochs without a better validation MAE.",
)
@click.option(
    "--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (all).")
@click.option("--resume", is_flag=True, help="Continue the run NAME from its last checkpoints.")
@click.option(
    "--freeze-backbone",
    is_flag=True,
    help="Train the head only, on features computed once (no augmentation): cheap on a CPU.",
)
@click.option(
    "--quantize",
    multiple=True,
    type=click.Choice(QUANTIZE_TARGETS),
    help="Also export and gate this variant (repeatable).",
)
@click.option(
    "--out-root", type=click.Path(path_type=Path), default=Path("reports"), show_default=True
)
@json_option
@friendly_errors
def train(
    bench: str,
    root: Path,
    split: str | None,
    protocol: str | None,
    labels: Path | None,
    columns: tuple[str, ...],
    options: tuple[str, ...],
    folds: int,
    seed: int,
    faces: FacesMode | None,
    only_folds: tuple[str, ...],
    backbone: str,
    like: str | None,
    loss: str,
    loss_options: tuple[str, ...],
    name: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    device: str,
    threads: int | None,
    resume: bool,
    freeze_backbone: bool,
    quantize: tuple[QuantizeTarget, ...],
    out_root: Path,
    as_json: bool,
) -> None:
    """Train a backbone with a loss's head on a benchmark: one model per fold, exported
    through the conversion gate and registered for 'agebench eval'."""

    def on_epoch(fold: str, metrics: Any) -> None:
        console.print(
            f"fold {escape(fold)} epoch {metrics.epoch}: loss {metrics.train_loss:.4f}, "
            f"val MAE {metrics.val_mae:.2f}, {metrics.images_per_second:.0f} images/s",
            highlight=False,
        )

    with ProgressBar("train") as on_progress:
        result = agebench.train(
            bench,
            root,
            backbone=backbone,
            loss=loss,
            name=name,
            protocol=protocol,
            split=split,
            labels=labels,
            columns=parse_pairs(columns, "--column"),
            options=parse_pairs(options, "--option"),
            faces=faces,
            folds=folds,
            only_folds=only_folds,
            seed=seed,
            like=like,
            loss_options={
                k: _value(v) for k, v in parse_pairs(loss_options, "--loss-option").items()
            },
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            patience=patience,
            device=device,
            threads=threads,
            resume=resume,
            freeze_backbone=freeze_backbone,
            quantize=quantize,
            out_root=out_root,
            progress=on_progress,
            on_epoch=on_epoch,
        )
    if as_json:
        print_json({**result.summary, "out": str(result.out)})
        return
    table = Table(title=escape(f"agebench train: {name}"))
    for column in ("fold", "model", "epochs", "best epoch", "best val MAE", "images/s"):
        table.add_column(column, justify="right")
    for fold in result.summary["folds"]:
        speed = fold["images_per_second"]
        table.add_row(
            escape(str(fold["fold"])),
            escape(str(fold["model"])),
            str(fold["epochs_run"]),
            str(fold["best_epoch"]),
            fmt(fold["best_val_mae"]),
            fmt(sum(speed) / len(speed) if speed else None, ".0f"),
        )
    out = results()
    out.print(table)
    out.print("score the test folds with:", highlight=False)
    for command in result.summary["evaluate"]:
        out.print(f"  {escape(command)}", highlight=False, soft_wrap=True)
    out.print(f"outputs: {escape(shown(result.out))}", highlight=False)
