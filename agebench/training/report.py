"""A training run's ``report.html``: one row per fold, then each fold's curves.

Built as the eval and compare reports are (``agebench.report.document`` rendered by
``agebench.report.html``, plots from ``agebench.report.figures.figure``), so it has their
layout, inline SVG and no network. Nothing is computed here but the plotted points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from agebench.core.atomic import write_text_atomic
from agebench.report.document import Document, Figure, Section, Table, key_value_table
from agebench.report.figures import figure
from agebench.report.html import render_html

History = Sequence[Mapping[str, Any]]


def _curve(history: History, key: str, label: str) -> Any:
    """One metric per epoch; the best epoch (by validation MAE) marked."""
    fig, ax = figure()
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row[key] for row in history], marker="o", markersize=3)
    best = [row for row in history if row.get("best")]
    if best and key == "val_mae":
        last = best[-1]
        ax.plot([last["epoch"]], [last[key]], marker="*", markersize=10, linestyle="none")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    return fig


def _cell(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def train_document(summary: Mapping[str, Any], histories: Mapping[str, History]) -> Document:
    rows = []
    for fold in summary["folds"]:
        speed = fold["images_per_second"]
        rows.append(
            [
                str(fold["fold"]),
                str(fold["model"]),
                str(fold["epochs_run"]),
                str(fold["best_epoch"]),
                _cell(fold["start_val_mae"]),
                _cell(fold["best_val_mae"]),
                _cell(sum(speed) / len(speed) if speed else None, ".1f"),
                _cell(fold["train_seconds"], ".1f"),
            ]
        )
    headers = [
        "fold",
        "model",
        "epochs",
        "best epoch",
        "val MAE untrained",
        "best val MAE",
        "images/s",
        "seconds",
    ]
    overview = Section(
        "Folds",
        paragraphs=[
            "Validation MAE is on the part held out of the training folds for early stopping "
            "and model selection; the test folds are scored by agebench eval:",
            *summary["evaluate"],
        ],
        tables=[Table(headers, rows), key_value_table(summary["training"], "training data")],
    )
    sections = [overview]
    for fold, history in histories.items():
        sections.append(
            Section(
                f"Fold {fold}",
                figures=[
                    Figure(
                        "training loss per epoch", partial(_curve, history, "train_loss", "loss")
                    ),
                    Figure(
                        "validation MAE per epoch (star: the exported epoch)",
                        partial(_curve, history, "val_mae", "MAE (years)"),
                    ),
                ],
            )
        )
    return Document("agebench training", str(summary["name"]), sections)


def write_train_report(
    path: Path, summary: Mapping[str, Any], histories: Mapping[str, History]
) -> None:
    write_text_atomic(path, render_html(train_document(summary, histories)))
