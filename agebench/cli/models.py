"""``agebench models``: list and inspect registered models; pull, convert and quantize them
(those three, the build commands, are in ``cli/model_build.py`` and grouped here)."""

from __future__ import annotations

import json
from typing import Any

import click
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
@friendly_errors
def models_list(as_json: bool) -> None:
    """Every model this installation knows, and whether its weights are present."""
    from agebench.build.gate import gate_summary

    if as_json:
        print_json([info_data(info) for info in agebench.models.list()])
        return

    table = Table(title="agebench models")
    table.add_column("name", no_wrap=True)
    for column in ("framework", "input", "decoder", "crop", "licence", "parity / MAE", "weights"):
        table.add_column(column)
    problems: list[str] = []
    for info in agebench.models.list():
        if info.spec is None:
            if info.pullable:
                state = f"[yellow]{escape(str(info.error))}[/]"
            else:
                state = "[red]invalid (below)[/]"
                problems.append(f"{info.name}: {info.error}")
            table.add_row(escape(info.name), "-", "-", "-", "-", "-", "-", state)
            continue
        table.add_row(
            escape(info.name),
            escape(str(info.framework)),
            escape(str(info.input)),
            escape(", ".join(info.heads)),
            escape(str(info.crop)),
            escape(_short_licence(info.license or "")),
            escape(gate_summary(info.spec.extra)),
            "[green]present[/]" if info.weights_present else "[yellow]missing[/]",
        )
    out = results()
    out.print(table)
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
