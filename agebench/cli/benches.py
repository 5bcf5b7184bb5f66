"""``agebench benches``: the benchmarks agebench reads and how to lay their data out."""

from __future__ import annotations

import click
from rich import box
from rich.markup import escape
from rich.table import Table

import agebench  # agebench.benches loads on first use: the registry reads plugins
from agebench.cli.common import friendly_errors, info_data, print_json, results


@click.group("benches")
def benches() -> None:
    """List benchmarks and show how to lay their data out."""


@benches.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.option("--wide", is_flag=True, help="All columns (protocols, splits, targets, images) too.")
@friendly_errors
def benches_list(as_json: bool, wide: bool) -> None:
    """Every benchmark agebench can read (one line each; --wide for all columns,
    'benches info NAME' for the layout)."""
    infos = agebench.benches.list()
    if as_json:
        print_json([info_data(info) for info in infos])
        return
    table = Table(title="agebench benchmarks", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    table.add_column("faces", no_wrap=True)
    wide_columns = ("protocols", "splits", "targets", "images are") if wide else ()
    for column in wide_columns:
        table.add_column(column, overflow="fold")
    table.add_column("title", overflow="fold")
    for info in infos:
        crops = info.crops + (f" (margin {info.crop_margin:g})" if info.crop_margin else "")
        wide_cells = (
            ", ".join(info.protocols),
            ", ".join(info.splits) or "-",
            ", ".join(info.targets),
            crops,
        )
        table.add_row(
            escape(info.name),
            info.default_faces,
            *(wide_cells if wide else ()),
            escape(info.title),
        )
    results().print(table)


@benches.command("info")
@click.argument("name")
@friendly_errors
def benches_info(name: str) -> None:
    """Expected layout, label files and columns, protocols, options and citation."""
    spec = agebench.benches.get(name).spec
    out = results()
    out.print(f"[bold]{spec.name}[/] (spec version {spec.version}): {spec.title}", highlight=False)
    out.print(f"citation: {spec.citation}", highlight=False)
    out.print(f"url: {spec.url}", highlight=False)
    out.print("\n[bold]layout under --root[/]", highlight=False)
    out.print(spec.layout.rstrip(), highlight=False, markup=False)
    out.print("\n[bold]labels[/]", highlight=False)
    out.print(spec.labels.rstrip(), highlight=False, markup=False)
    out.print("\n[bold]protocols[/] (first is the default)")
    for protocol, text in spec.all_protocols.items():
        out.print(f"  {protocol}: {text}", highlight=False, markup=False)
    if spec.splits:
        out.print(f"[bold]splits[/]: {', '.join(spec.splits)} (default {spec.default_split})")
    out.print(f"[bold]targets[/]: {', '.join(spec.targets)}")
    crops = spec.crops
    out.print(
        f"[bold]images are[/]: {crops.kind}"
        + (f", margin {crops.margin:g}" if crops.margin else "")
        + (", aligned" if crops.aligned else "")
        + (f" - {crops.description}" if crops.description else ""),
        highlight=False,
    )
    out.print(f"[bold]default --faces[/]: {spec.default_faces}")
    if spec.groups:
        out.print(f"[bold]age groups[/]: {', '.join(f'{lo:g}-{hi:g}' for lo, hi in spec.groups)}")
    if spec.options:
        out.print("[bold]--option KEY=VALUE[/]")
        for key, text in spec.options.items():
            out.print(f"  {key}: {text}", highlight=False, markup=False)
    if spec.notes:
        out.print(f"\n{spec.notes.strip()}", highlight=False, markup=False)
