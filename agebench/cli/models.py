"""``agebench models``: list and inspect registered models; pull, convert and quantize them
(those three, the build commands, are in ``cli/model_build.py`` and grouped here)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

import agebench
from agebench.cli.common import friendly_errors, info_data, print_json, results
from agebench.cli.model_build import models_convert, models_pull, models_quantize
from agebench.core.errors import AgebenchError


@click.group("models")
def models() -> None:
    """List and inspect registered models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.option("--wide", is_flag=True, help="All columns (input, decoder, crop, parity / MAE) too.")
@friendly_errors
def models_list(as_json: bool, wide: bool) -> None:
    """Every model this installation knows, where it comes from and whether its weights are
    present (the columns fit 80; --wide shows them all, 'models info NAME' the rest)."""
    from agebench.build.gate import gate_summary

    infos = agebench.models.list()
    if as_json:
        print_json([info_data(info) for info in infos])
        return
    table = Table(title="agebench models", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    columns = ["source", "framework"]
    columns += ["input", "decoder", "crop"] if wide else []
    columns += ["licence"] + (["parity / MAE"] if wide else []) + ["weights"]
    for column in columns:
        table.add_column(column, overflow="fold")
    problems: list[str] = []
    to_pull: list[str] = []
    for info in infos:
        if info.spec is None:
            if info.pullable:
                to_pull.append(info.name)
                state = "-"  # its source says "not pulled"; the command is under the table
            else:
                state = "[red]invalid (below)[/]"
                problems.append(f"{info.name}: {info.error}")
            cells = {"source": info.source, "weights": state}
        else:
            cells = {
                "source": info.source,
                "framework": escape(str(info.framework)),
                "input": escape(str(info.input)),
                "decoder": escape(", ".join(info.heads)),
                "crop": escape(str(info.crop)),
                "licence": escape(_short_licence(info.license or "")),
                "parity / MAE": escape(gate_summary(info.spec.extra)),
                "weights": "[green]present[/]" if info.weights_present else "[yellow]missing[/]",
            }
        table.add_row(escape(info.name), *(cells.get(column, "-") for column in columns))
    out = results()
    out.print(table)
    for name in to_pull:  # the command whole, on its own line: a cell would cut or wrap it
        out.print(f"not pulled: agebench models pull {escape(name)}", highlight=False)
    for problem in problems:  # in full, one per line: a table cell would wrap it illegibly
        out.print(f"[red]invalid[/] {escape(problem)}", highlight=False, soft_wrap=True)


def _short_licence(text: str) -> str:
    """The licence's name for a table ('MIT (upstream...); ...' -> 'MIT'); info has the rest."""
    return text.split(";")[0].split(" (")[0].strip() or text


@models.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved manifest as JSON.")
@friendly_errors
def models_info(name: str, as_json: bool) -> None:
    """Show a model's full manifest and verify its weights' sha256."""
    from agebench.core.errors import IntegrityError
    from agebench.models.catalog import resolve_model
    from agebench.models.hashing import verify_model_sha256
    from agebench.models.manifest import spec_to_dict

    spec = resolve_model(name)
    info = spec_to_dict(spec)
    if "gate" in spec.extra:  # the conversion gate's results, as the manifest records them
        info["gate"] = spec.extra["gate"]
    if not spec.file.is_file():
        info["sha256_check"] = "weights missing"
    else:
        try:
            verify_model_sha256(spec.file, spec.sha256)
            info["sha256_check"] = "ok"
        except IntegrityError as error:
            info["sha256_check"] = f"MISMATCH: {error}"
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        out = results()
        for key, value in info.items():
            if isinstance(value, dict):
                out.print(f"[bold]{escape(key)}[/]")
                for k, v in value.items():
                    out.print(f"  {k}: {_short(v)}", highlight=False, markup=False)
            elif isinstance(value, list):
                out.print(f"[bold]{escape(key)}[/]")
                for v in value:
                    out.print(f"  - {_short(v)}", highlight=False, markup=False)
            else:
                out.print(f"[bold]{escape(key)}[/]: {escape(str(value))}", highlight=False)
    if info["sha256_check"] != "ok":
        raise AgebenchError(f"model {spec.name!r}: sha256 check: {info['sha256_check']}")


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


models.add_command(models_pull)
models.add_command(models_convert)
models.add_command(models_quantize)
