"""``agebench compare``: parse, call ``agebench.compare``, print the ranking."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

import agebench
from agebench.api_results import CompareResult
from agebench.cli.common import (
    MISSING,
    benchmark_options,
    cluster_options,
    console,
    execution_options,
    fmt,
    friendly_errors,
    image_progress,
    json_option,
    parse_pairs,
    print_json,
    results,
    shown,
)
from agebench.core.config import ClusterConfig, ExecutionConfig
from agebench.core.types import FacesMode

#: the pairs printed on the terminal; the report has them all
MAX_PAIRS_PRINTED = 10


@click.command("compare")
@click.argument("models_or_runs", nargs=-1, required=True)
@benchmark_options(required=False)
@execution_options
@cluster_options
@click.option(
    "--out-root",
    type=click.Path(path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Evals go to OUT_ROOT/eval/..., the comparison to OUT_ROOT/compare-<id>/.",
)
@click.option(
    "--bootstrap",
    "n_boot",
    type=click.IntRange(min=100),
    default=2000,
    show_default=True,
    help="Bootstrap resamples (the MAE CIs and the paired MAE-difference CIs).",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Significance level of the Holm-corrected pairwise tests.",
)
@click.option(
    "--target",
    default=None,
    help="Target to compare (default: the benchmark's headline, e.g. age).",
)
@click.option(
    "--wide",
    is_flag=True,
    help="All columns (epsilon, coverage, provider, CIs of pairs, who is closer).",
)
@json_option
@friendly_errors
def compare(
    models_or_runs: tuple[str, ...],
    bench: str | None,
    root: Path | None,
    split: str | None,
    protocol: str | None,
    labels: Path | None,
    columns: tuple[str, ...],
    options: tuple[str, ...],
    faces: FacesMode | None,
    folds: int,
    seed: int,
    out_root: Path,
    n_boot: int,
    alpha: float,
    target: str | None,
    wide: bool,
    as_json: bool,
    execution: ExecutionConfig,
    cluster: ClusterConfig,
) -> None:
    """Compare models (run on one benchmark) or finished eval runs, record by record.

    MODELS_OR_RUNS are model names or manifests (run with --bench and --root, reusing any
    finished eval of the same model on the same data, with the same --faces and execution
    options for every model) or finished eval run folders (holding summary.json and
    predictions.jsonl), in any mix. Writes OUT_ROOT/compare-<id>/ with comparison.json,
    report.md and report.html.
    """
    bars = image_progress()
    tasks: dict[str, Any] = {}

    def on_progress(item: str, event: str, amount: int) -> None:
        if item not in tasks:
            tasks[item] = bars.add_task(escape(f"eval {item}"), total=None)
        if event == "total":
            bars.update(tasks[item], total=amount)
        else:
            bars.advance(tasks[item], amount)

    with bars:
        result = agebench.compare(
            list(models_or_runs),
            bench=bench,
            root=root,
            split=split,
            protocol=protocol,
            labels=labels,
            columns=parse_pairs(columns, "--column"),
            options=parse_pairs(options, "--option"),
            faces=faces,
            folds=folds,
            seed=seed,
            out_root=out_root,
            n_boot=n_boot,
            alpha=alpha,
            target=target,
            **execution.as_options(),
            **cluster.as_options(),
            progress=on_progress,
        )
    if as_json:
        extra = {"out": result.out, "report": result.report, "reused": result.reused}
        print_json({**result.comparison, **extra})
    else:
        print_comparison(result, wide=wide)


def print_comparison(result: CompareResult, *, wide: bool = False) -> None:
    """How each run was obtained (status, on stderr), then on stdout the three tables, the
    findings and the report's path. The tables fit 80 columns unless ``wide``; the report
    has every column."""
    out = results()
    comparison = result.comparison
    for run, reused in zip(comparison["runs"], result.reused, strict=True):
        how = "read" if reused is None else ("reused" if reused else "evaluated")
        console.print(
            escape(f"{how}: {run['label']}  {run['path']}"), highlight=False, soft_wrap=True
        )
    out.print(ranking_table(comparison, wide=wide))
    out.print(models_table(comparison, wide=wide))
    if len(comparison["pairs"]) <= MAX_PAIRS_PRINTED:
        out.print(pairs_table(comparison, wide=wide))
    for finding in comparison.get("findings") or []:
        out.print(
            f"[bold yellow]{escape(finding['model'])}: {escape(finding['kind'])}:[/] "
            f"{escape(finding['message'])}",
            highlight=False,
            soft_wrap=True,
        )
    inter = comparison["intersection"]
    out.print(
        f"headline over the {inter['n_scored_by_all']} of {inter['n_label_rows']} label rows "
        f"scored by every model; {inter['n_failed_records']} record(s) failed by at least one "
        "model (listed in the report)",
        highlight=False,
    )
    out.print(
        f"report: {escape(shown(result.out / 'report.html'))}", soft_wrap=True, highlight=False
    )


# --- terminal tables -----------------------------------------------------------------------------


def _best(values: list[float | None], lower: bool) -> set[int]:
    """Indexes of the best value (all of them on a tie); none when nothing is known."""
    known = [v for v in values if v is not None]
    if not known:
        return set()
    best = min(known) if lower else max(known)
    return {i for i, v in enumerate(values) if v is not None and v == best}


#: (header, value per row, format, better: "low" | "high" | "abs-low" | None)
Column = tuple[str, list[Any], str, str | None]


def _marked_table(title: str, keys: list[tuple[str, list[str]]], columns: list[Column]) -> Table:
    """``keys`` (left, as given) then ``columns``, the best value of each in bold green (every
    one of them on a tie)."""
    table = Table(box=box.SIMPLE_HEAD, title=title)
    for header, _ in keys:
        if header == "rank":
            table.add_column(header, justify="right", no_wrap=True)
        else:  # a model's name whole: a split one reads as two
            table.add_column(header, no_wrap=True)
    for header, *_ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    winners: list[set[int]] = []
    for _, values, _, better in columns:
        if better is None:
            winners.append(set())
        elif better == "abs-low":
            winners.append(_best([None if v is None else abs(v) for v in values], True))
        else:
            winners.append(_best(values, better == "low"))
    for i in range(len(keys[0][1])):
        cells = []
        for (_, values, spec, _), best in zip(columns, winners, strict=True):
            value = values[i]
            if spec == "ci":
                text = f"{fmt(value[0])}-{fmt(value[1])}" if value else MISSING
            elif spec == "text":
                text = "-" if value is None else str(value)
            else:
                text = fmt(value, spec)
            cells.append(f"[bold green]{escape(text)}[/]" if i in best else escape(text))
        table.add_row(*(escape(values[i]) for _, values in keys), *cells)
    return table


def ranking_table(comparison: Mapping[str, Any], *, wide: bool = False) -> Table:
    """The ranking by MAE on the images every model scored, one model a row."""
    models = {m["label"]: m for m in comparison["models"]}
    order = comparison["ranking"]["order"]
    rows = [models[entry["model"]] for entry in order]
    bench = comparison["benchmark"]
    inter = comparison["intersection"]
    keys = [
        ("rank", [str(e["rank"]) for e in order]),
        ("model", [e["model"] for e in order]),
        ("group", [e.get("groups") or "" for e in order]),
    ]
    columns: list[Column] = [
        ("MAE", [m["mae"] for m in rows], ".2f", "low"),
        ("95% CI", [m["mae_ci"] for m in rows], "ci", None),
        ("CS@5", [m["metrics"].get("cs5") for m in rows], ".3f", "high"),
        ("bias", [m["metrics"].get("bias") for m in rows], "+.2f", "abs-low"),
    ]
    if wide and any(m.get("epsilon_error") is not None for m in rows):
        columns.append(("epsilon", [m.get("epsilon_error") for m in rows], ".3f", "low"))
    # a model that has seen the test set is never hidden behind --wide: it changes the ranking
    if any(e.get("contamination") for e in order):
        seen = [", ".join(e.get("contamination") or []) or "no" for e in order]
        columns.append(("seen test set", seen, "text", None))
    title = (
        f"agebench compare: {bench['name']} ({bench['protocol']}, {bench['split'] or 'all'}), "
        f"{comparison['target']}, on the {inter['n_scored_by_all']} images every model scored"
    )
    table = _marked_table(title, keys, columns)
    table.caption = (
        f"same group letter: not distinguishable at alpha {comparison['ranking']['alpha']:g} "
        "(Wilcoxon on |error|, Holm-corrected); best in bold green"
    )
    return table


def models_table(comparison: Mapping[str, Any], *, wide: bool = False) -> Table:
    """Each model's own full set, failures, speed and size, in ranking order."""
    models = {m["label"]: m for m in comparison["models"]}
    rows = [models[entry["model"]] for entry in comparison["ranking"]["order"]]
    provider = [
        str(m["throughput"].get("onnx_provider") or m["throughput"].get("device") or "-")
        for m in rows
    ]
    size = [None if m["model_size_bytes"] is None else m["model_size_bytes"] / 1e6 for m in rows]
    coverage: list[Column] = [
        ("coverage", [m["full_set"].get("coverage") for m in rows], ".1%", "high")
    ]
    on: list[Column] = [
        ("on", [p.removesuffix("ExecutionProvider") for p in provider], "text", None)
    ]
    columns: list[Column] = [
        ("all MAE", [m["full_set"].get("mae") for m in rows], ".2f", "low"),
        *(coverage if wide else []),
        ("failed", [m["failures"]["records"] for m in rows], "d", "low"),
        ("images/s", [m["throughput"].get("images_per_second") for m in rows], ".1f", "high"),
        *(on if wide else []),
        ("MB", size, ".1f", "low"),
    ]
    table = _marked_table(
        "each model on its own full set", [("model", [m["label"] for m in rows])], columns
    )
    table.caption = "failed: records with no face, a failure, a missing image or no prediction"
    return table


def pairs_table(comparison: Mapping[str, Any], *, wide: bool = False) -> Table:
    """Each pair on the images every model scored: MAE difference, Holm p (``wide``: the
    difference's CI and who is closer too)."""
    table = Table(box=box.SIMPLE_HEAD, title="pairs (A - B, on the same images)")
    for column in ("A", "B"):
        table.add_column(column, no_wrap=True)
    numbers = (
        ("MAE A-B", "95% CI", "Holm p", "closer: A / B / tie") if wide else ("MAE A-B", "Holm p")
    )
    for column in numbers:
        table.add_column(column, justify="right", no_wrap=True)
    for p in comparison["pairs"]:
        ci = p.get("mae_diff_ci") or [None, None]
        closer = p["closer"]
        p_holm = p["wilcoxon"].get("p_holm")
        shares = [closer.get(k) for k in ("share_a_closer", "share_b_closer", "share_ties")]
        holm = ("<0.0001" if p_holm is not None and p_holm < 1e-4 else fmt(p_holm, ".4f")) + (
            "*" if p.get("significant") else ""
        )
        diff = fmt(p.get("mae_diff"), "+.2f")
        interval = escape(f"[{fmt(ci[0], '+.2f')}, {fmt(ci[1], '+.2f')}]")
        closer_text = " / ".join(fmt(v, ".0%") for v in shares)
        cells = (diff, interval, holm, closer_text) if wide else (diff, holm)
        table.add_row(escape(p["a"]), escape(p["b"]), *cells)
    table.caption = "* significant after Holm correction"
    return table
