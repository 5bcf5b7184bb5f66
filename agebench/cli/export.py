"""``agebench export``: a finished run's table as CSV or parquet, for spreadsheets and pandas."""

from __future__ import annotations

from pathlib import Path

import click

from agebench.api_results import export as export_run
from agebench.cli.common import friendly_errors
from agebench.core.tables import TABLE_FORMATS, TableFormat


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(TABLE_FORMATS),
    default="csv",
    show_default=True,
    help="csv, or parquet (needs pyarrow: pip install pyarrow).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File to write (default: predictions.FORMAT in RUN; comparison.FORMAT for a compare).",
)
@friendly_errors
def export(run: Path, fmt: TableFormat, out: Path | None) -> None:
    """Write a finished predict, eval or compare RUN as one table: one row per record,
    attributes and extra heads flattened into columns. Prints the file written."""
    click.echo(export_run(run, fmt, out))
