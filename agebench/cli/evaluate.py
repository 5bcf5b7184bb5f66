"""``agebench eval``: parse, call ``agebench.evaluate``, print the metrics."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

import agebench
from agebench.api_results import EvalResult
from agebench.cli.common import (
    MISSING,
    ProgressBar,
    alerts,
    benchmark_options,
    cluster_options,
    execution_options,
    fmt,
    friendly_errors,
    json_option,
    notify_wait,
    parse_pairs,
    print_decoder_warnings,
    print_json,
    results,
    run_folder_options,
    shown,
)
from agebench.core.config import ClusterConfig, ExecutionConfig
from agebench.core.types import FacesMode
from agebench.models.catalog import DEFAULT_MODEL

#: the label problems listed on the terminal; the report has them all
MAX_PROBLEMS_PRINTED = 5


@click.command("eval")
@benchmark_options(required=True)
@click.option(
    "--model",
    "-m",
    default=None,
    help="Model name, manifest, or .onnx with --manifest; "
    "'{fold}' in a name picks one model per fold.",
)
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False), default=None)
@execution_options
@cluster_options
@click.option(
    "--out-root", type=click.Path(path_type=Path), default=Path("reports"), show_default=True
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Exact output folder (default: a deterministic folder under --out-root).",
)
@click.option(
    "--under-age",
    type=float,
    default=18.0,
    show_default=True,
    help="Threshold for the age-verification rates.",
)
@click.option(
    "--bootstrap", "n_boot", type=click.IntRange(min=100), default=2000, show_default=True
)
@click.option(
    "--reuse/--no-reuse",
    default=True,
    show_default=True,
    help="Reuse a finished or interrupted run of the same model on the same data.",
)
@json_option
@run_folder_options
@friendly_errors
def eval_command(
    bench: str,
    root: Path,
    model: str | None,
    manifest: Path | None,
    split: str | None,
    protocol: str | None,
    labels: Path | None,
    columns: tuple[str, ...],
    options: tuple[str, ...],
    folds: int,
    seed: int,
    faces: FacesMode | None,
    out_root: Path,
    out: Path | None,
    under_age: float,
    n_boot: int,
    reuse: bool,
    wait: bool,
    strict: bool,
    as_json: bool,
    execution: ExecutionConfig,
    cluster: ClusterConfig,
) -> None:
    """Score a model on a benchmark laid out as its authors publish it."""
    with ProgressBar("eval") as on_progress:
        result = agebench.evaluate(
            bench,
            root,
            model or DEFAULT_MODEL,
            manifest=manifest,
            split=split,
            protocol=protocol,
            labels=labels,
            columns=parse_pairs(columns, "--column"),
            options=parse_pairs(options, "--option"),
            folds=folds,
            seed=seed,
            faces=faces,
            out_root=out_root,
            out=out,
            under_age=under_age,
            n_boot=n_boot,
            reuse=reuse,
            wait=wait,
            strict=strict,
            **execution.as_options(),
            **cluster.as_options(),
            progress=on_progress,
            notify=notify_wait,
        )
    if as_json:
        print_json({**result.summary, "out": result.out, "report": result.report})
    else:
        print_summary(result)


def print_summary(result: EvalResult) -> None:
    """The metrics per target, the counts, findings and the report's path on stdout; label
    problems and decoder warnings on stderr."""
    out = results()
    counts = result.counts
    title = (
        f"{result.model.name} on {result.benchmark} ({result.protocol}, {result.split or 'all'})"
    )
    table = Table(title=escape(title + (" - reused" if result.reused else "")))
    for column in ("target", "MAE", "95% CI", "RMSE", "bias", "CS@5", "epsilon", "coverage"):
        table.add_column(column, justify="right")
    for target, m in result.metrics.items():
        table.add_row(
            target,
            fmt(m.mae),
            f"{fmt(m.mae_ci[0])}-{fmt(m.mae_ci[1])}" if m.mae_ci else MISSING,
            fmt(m.rmse),
            fmt(m.bias, "+.2f"),
            fmt(m.cs5, ".3f"),
            fmt(m.epsilon_error, ".3f"),
            fmt(m.coverage, ".1%"),
        )
    out.print(table)
    groups = result.group_metrics
    if groups:
        out.print(
            f"group accuracy {fmt(groups.get('accuracy'), '.3f')}, "
            f"one-off {fmt(groups.get('one_off'), '.3f')}"
        )
    out.print(
        f"records {counts.records}, scored {counts.scored}, no face {counts.no_face}, "
        f"failed {counts.failed}, missing {counts.missing}, "
        f"label problems {counts.label_problems}",
        highlight=False,
    )
    print_decoder_warnings(counts.decoder_warnings)
    for problem in result.problems[:MAX_PROBLEMS_PRINTED]:
        alerts.print(f"  [yellow]label problem[/] {escape(problem)}", highlight=False)
    for finding in result.findings:
        out.print(
            f"[bold yellow]{escape(finding['kind'])}:[/] {escape(finding['message'])}",
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"report: {escape(shown(result.out / 'report.html'))}", soft_wrap=True, highlight=False
    )
