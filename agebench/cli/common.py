"""What every command shares: the consoles (results on stdout; progress, status and warnings
on stderr), one-line errors, progress bars and the option decorators, so that a flag reads and
behaves the same on every command that has it.

Command modules import from here, never from ``agebench.cli`` (the package that registers
them), which keeps the import graph a tree: ``cli/__init__`` -> command module -> ``common``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agebench.core.config import EXECUTION_FIELDS, ClusterConfig, ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.core.types import BACKENDS, DEVICES, EXECUTORS, FACES_MODES, PRECISIONS, TUNINGS

F = TypeVar("F", bound=Callable[..., Any])
#: progress and status, on stderr: ``--quiet`` silences it, and stdout holds only results
console = Console(stderr=True)
#: errors and warnings, on stderr: shown even with ``--quiet`` (a user must see what went wrong)
alerts = Console(stderr=True)
#: the width results are laid out at when stdout is piped and COLUMNS is unset: wide enough
#: that no line is hard-wrapped, so a ``grep`` or a file sees each row whole
PIPED_WIDTH = 10_000
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def friendly_errors(fn: F) -> F:
    """A user error is one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AgebenchError as error:
            alerts.print(
                f"[bold red]error:[/] {escape(str(error))}",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_ERROR)
        except OSError as error:  # the environment failed us (disk, permissions): one line
            where = f"{error.filename}: " if error.filename else ""
            alerts.print(
                f"[bold red]error:[/] {escape(where + (error.strerror or str(error)))}",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            alerts.print(
                "[yellow]interrupted[/]: finished images are saved; rerun with --resume to continue"
            )
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


# --- streams and verbosity ------------------------------------------------------------------


def results() -> Console:
    """The stdout console for result tables and summaries, made per call so that it writes
    to the stdout of the moment (tests swap it). At a terminal, or with COLUMNS set, it fits
    the width; piped, lines are not hard-wrapped."""
    tty = Console()
    if tty.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return tty
    return Console(width=PIPED_WIDTH)


def print_json(data: Any) -> None:
    """``--json``: the result as data, the only thing on stdout (paths as strings)."""
    click.echo(json.dumps(data, indent=2, default=str))


def info_data(info: Any) -> dict[str, Any]:
    """A listing's row (``ModelInfo``, ``BenchInfo``) as data: its fields but the parsed spec,
    which ``models info`` / ``benches info`` show in full."""
    return {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name != "spec"}


#: the handler ``-v`` adds to the ``agebench`` logger (kept to be replaced, never duplicated)
_log_handler: logging.Handler | None = None


def set_verbosity(quiet: bool, verbose: int) -> None:
    """``--quiet``: no progress or status (results, warnings and errors stay); ``-v``/``-vv``:
    the library's ``logging`` at INFO/DEBUG on stderr (WARNING otherwise, Python's default)."""
    global _log_handler
    console.quiet = quiet
    logger = logging.getLogger("agebench")
    if _log_handler is not None:
        logger.removeHandler(_log_handler)
        _log_handler = None
    if verbose:
        _log_handler = logging.StreamHandler(sys.stderr)
        _log_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(_log_handler)
        logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    else:
        logger.setLevel(logging.NOTSET)


def json_option(fn: F) -> F:
    """--json: the result as JSON on stdout and nothing else there (progress stays on stderr)."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the result as JSON on stdout (and nothing else there).",
    )(fn)


# --- shared options --------------------------------------------------------------------------


def run_folder_options(fn: F) -> F:
    """--wait (a run whose output folder another run holds waits for it instead of failing)
    and --strict (decoder warnings fail an image), shared by predict and eval."""
    fn = click.option(
        "--strict",
        is_flag=True,
        help="Fail an image whose decoder warned about damaged data, instead of scoring it "
        "with the warning in its notes.",
    )(fn)
    return click.option(
        "--wait",
        is_flag=True,
        help="If another run holds the output folder, wait for it to finish instead of refusing.",
    )(fn)


#: the execution options, in the order ``--help`` lists them: (``ExecutionConfig`` field, click
#: type, help); each default is the config's own
_EXECUTION_OPTIONS: tuple[tuple[str, click.ParamType, str], ...] = (
    (
        "batch_size",
        click.IntRange(min=1),
        "Faces per model call (default: 64 on a CPU, 256 on a GPU).",
    ),
    (
        "device",
        click.Choice(DEVICES),
        "auto: the fastest path there is (the summary says which it took).",
    ),
    ("workers", click.IntRange(min=1), "Decode/detect threads (default: one per core)."),
    (
        "backend",
        click.Choice(BACKENDS),
        "What runs the graph (auto: onnxruntime-gpu, else torch on CUDA, else onnxruntime on CPU).",
    ),
    (
        "precision",
        click.Choice(PRECISIONS),
        "torch on CUDA: fp16 (auto: when the model's fp16 variant passed its gate).",
    ),
    (
        "tuning",
        click.Choice(TUNINGS),
        "onnxruntime settings: the fastest measured on this machine (cached), the manifest's, "
        "or measure again.",
    ),
)


def execution_options(fn: F) -> F:
    """--batch-size, --device, --workers, --backend, --precision and --tuning: how the model
    runs, the same flags on every command that runs one (summaries record the choices).

    The command receives them as one checked ``execution: ExecutionConfig`` keyword instead
    of six loose ones, so each command forwards them whole.
    """

    @functools.wraps(fn)
    def with_execution(*args: Any, **kwargs: Any) -> Any:
        execution = ExecutionConfig(**{name: kwargs.pop(name) for name in EXECUTION_FIELDS})
        return fn(*args, execution=execution, **kwargs)

    return _with_options(
        cast(F, with_execution), _config_options(ExecutionConfig(), _EXECUTION_OPTIONS)
    )


def _config_options(
    defaults: object, table: Sequence[tuple[str, click.ParamType, str]]
) -> list[Callable[[Any], Any]]:
    """One click option per (field, type, help) row, its default the config's own."""
    return [
        click.option(
            "--" + name.replace("_", "-"),
            type=kind,
            default=getattr(defaults, name),
            show_default=getattr(defaults, name) is not None,
            help=text,
        )
        for name, kind, text in table
    ]


#: the executor options, in ``--help`` order: (``ClusterConfig`` field, click type, help)
_CLUSTER_OPTIONS: tuple[tuple[str, click.ParamType, str], ...] = (
    (
        "executor",
        click.Choice(EXECUTORS),
        "local: threads in this process; ray: a Ray cluster (same outputs; README "
        "'On a Ray cluster').",
    ),
    (
        "ray_address",
        click.STRING,
        "With --executor ray: 'auto' (the cluster this machine joined) or ray://HOST:10001; "
        "unset: start Ray on this machine.",
    ),
    (
        "cpus_per_worker",
        click.FloatRange(min=0.01),
        "With --executor ray: CPUs each decode/detect worker holds (--workers: how many; "
        "default: the CPUs the inference actors leave).",
    ),
    (
        "gpus_per_worker",
        click.FloatRange(min=0.0),
        "With --executor ray: GPUs each inference actor holds (default: 1 when the cluster "
        "has GPUs, else CPU actors).",
    ),
    (
        "inference_actors",
        click.IntRange(min=1),
        "With --executor ray: model actors (default: one per GPU, or one per node).",
    ),
)


def cluster_options(fn: F) -> F:
    """--executor, --ray-address, --cpus-per-worker, --gpus-per-worker, --inference-actors:
    where the images run; the command receives one checked ``cluster: ClusterConfig``."""

    @functools.wraps(fn)
    def with_cluster(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name, _, _ in _CLUSTER_OPTIONS}
        if values["executor"] == "local":
            given = [name for name, value in values.items() if value != getattr(defaults, name)]
            if given:
                flags = ", ".join("--" + name.replace("_", "-") for name in given)
                raise click.UsageError(f"{flags}: only with --executor ray")
        return fn(*args, cluster=ClusterConfig(**values), **kwargs)

    defaults = ClusterConfig()
    return _with_options(cast(F, with_cluster), _config_options(defaults, _CLUSTER_OPTIONS))


def _with_options(fn: F, options: Sequence[Callable[[Any], Any]]) -> F:
    """``fn`` with ``options`` applied so that ``--help`` lists them in the given order."""
    for option in reversed(options):  # click lists options in decorator order, top first
        fn = option(fn)
    return fn


def benchmark_options(*, required: bool) -> Callable[[F], F]:
    """--bench, --root, --split, --protocol, --labels, --column, --option, --folds, --seed
    and --faces: which benchmark data a run scores, one definition for eval and compare so
    that the two read the same data from the same flags.

    ``required``: eval always runs a benchmark; compare needs one only for the models it runs
    (finished run folders bring their own).
    """

    def decorate(fn: F) -> F:
        options = [
            click.option(
                "--bench",
                "-b",
                required=required,
                default=None,
                help="Benchmark name (see 'agebench benches list').",
            ),
            click.option(
                "--root",
                type=click.Path(path_type=Path),
                required=required,
                default=None,
                help="The benchmark's folder.",
            ),
            click.option(
                "--split", default=None, help="Split to score (default: the benchmark's)."
            ),
            click.option(
                "--protocol", default=None, help="Protocol (default: the benchmark's first)."
            ),
            click.option(
                "--labels",
                type=click.Path(path_type=Path),
                default=None,
                help="Label file (csv, morph, mivolo-csv, facebase).",
            ),
            click.option(
                "--column",
                "columns",
                multiple=True,
                metavar="ROLE=NAME",
                help="csv: which column holds a role (path, age, subject, fold, split, std...).",
            ),
            click.option(
                "--option",
                "options",
                multiple=True,
                metavar="KEY=VALUE",
                help="Benchmark-specific option (see 'agebench benches info NAME').",
            ),
            click.option(
                "--folds",
                type=click.IntRange(min=2),
                default=5,
                show_default=True,
                help="k for subject-disjoint k-fold protocols.",
            ),
            click.option(
                "--seed",
                type=int,
                default=0,
                show_default=True,
                help="Seed for folds and bootstraps.",
            ),
            click.option(
                "--faces",
                type=click.Choice(FACES_MODES),
                default=None,
                help="none: images are face crops; detect: find faces; box: use the given boxes "
                "(default: the benchmark's).",
            ),
        ]
        return _with_options(fn, options)

    return decorate


def parse_pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    """``--column ROLE=NAME`` / ``--option KEY=VALUE`` pairs as a mapping (a malformed one is
    a usage error naming the flag)."""
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:  # a usage error (exit 2, with the usage line), as click's own
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint=flag)
        pairs[key.strip()] = item.strip()
    return pairs


# --- progress and shared output ----------------------------------------------------------------


def notify_wait(text: str) -> None:
    """The ``--wait`` message: whose run this one waits for."""
    console.print(f"waiting for {escape(text)} to finish", highlight=False, soft_wrap=True)


def image_progress(description: str = "[bold]{task.description}") -> Progress:
    """A rich progress display counting images, on stderr (one look for every command)."""
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("images"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class ProgressBar:
    """A rich bar fed by the runner's ``(event, amount)`` callbacks, drawn from the first
    one on: a run refused before its first image (folder busy, another run's folder) prints
    its one line without an empty bar above it."""

    def __init__(self, label: str = "predict") -> None:
        self.label = label
        self.progress: Progress | None = None
        self.task: Any = None
        # the runner reports from two threads (the total from its counting thread)
        self._lock = threading.Lock()

    def _start(self) -> Progress:
        with self._lock:
            if self.progress is not None:
                return self.progress
            progress = image_progress(f"[bold]{self.label}")
            progress.start()
            self.task = progress.add_task(self.label, total=None)
            self.progress = progress
            return progress

    def update(self, event: str, amount: int) -> None:
        progress = self._start()
        if event == "total":
            progress.update(self.task, total=amount)
        else:
            progress.advance(self.task, amount)

    def __enter__(self) -> Callable[[str, int], None]:
        return self.update

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


#: a metric that is unknown (no spread for epsilon, nothing scored): what the reports write
MISSING = "n/a"


def fmt(value: Any, spec: str = ".2f") -> str:
    """A metric for a table cell; ``n/a`` when it is unknown, as the reports write it."""
    return MISSING if value is None else format(value, spec)


def shown(path: Path) -> str:
    """A result's folder as the command line names it: results hold resolved paths, and a
    folder under the working one reads as it was given (``reports/eval/...``)."""
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except (OSError, ValueError):  # no working folder (deleted) or another drive
        return str(path)


def print_decoder_warnings(count: int) -> None:
    if count:
        alerts.print(
            f"[yellow]{count} image(s) decoded with warnings[/] (damaged data decoded around; "
            "their notes say what): --strict fails them",
            highlight=False,
        )
