"""Command line: a thin shell over the public API (``agebench.predict/evaluate/compare``,
``agebench.models``, ``agebench.benches``): parse, call, print. No computing happens here.

This package only builds the ``agebench`` group and registers each command module's commands
on it, once. Command modules import their shared helpers from ``agebench.cli.common`` and
never this package, so importing any one of them alone works and the imports form no cycle.
"""

from __future__ import annotations

import click

from agebench.cli.bench import bench as bench_command
from agebench.cli.benches import benches as benches_group
from agebench.cli.common import set_verbosity
from agebench.cli.compare import compare as compare_command
from agebench.cli.evaluate import eval_command
from agebench.cli.export import export as export_command
from agebench.cli.models import models as models_group
from agebench.cli.predict import predict as predict_command
from agebench.cli.train import train as train_command
from agebench.core.version import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="agebench")
@click.option(
    "--quiet", "-q", is_flag=True, help="No progress or status: results (and errors) only."
)
@click.option(
    "--verbose",
    "-v",
    count=True,
    help="Log what the library does on stderr: -v at INFO, -vv at DEBUG.",
)
def main(quiet: bool, verbose: int) -> None:
    """Run facial age estimation models over many images, and measure them honestly.

    Results go to stdout; progress, status, warnings and errors to stderr.
    """
    set_verbosity(quiet, verbose)


# in the order ``agebench --help`` lists them (click sorts them by name anyway)
for _command in (
    predict_command,
    models_group,
    benches_group,
    eval_command,
    bench_command,
    compare_command,
    train_command,
    export_command,
):
    main.add_command(_command)
