"""What the Ray executor costs and how it scales: ``agebench bench IMAGES --ray 1,2,4``.

The same workload as the bench (the chips repeated to ``count`` files, scored by ``eval
--faces none``), run by the local executor and by the Ray executor, interleaved round by
round so that a noisy machine slows both alike; each figure is the median over rounds.

* **overhead**: at the machine's CPU count, Ray's end-to-end eval time over the local one's.
  Ray's own start-up (``ray.init``: raylet, object store) is measured apart; the actors'
  start-up and the model loads inside them are in Ray's time, and also shown alone as the time
  to its first result, so the steady rate after it can be compared with the local rate.
* **scaling**: the Ray executor on a Ray instance of each CPU count (1, 2, 4, 8, 16 where the
  machine has the cores), one worker per CPU, images/s once started and the efficiency per
  CPU against one CPU.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agebench.core.config import ClusterConfig, ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.core.provenance import provenance
from agebench.models.predictor import available_cores
from agebench.runner.evaluate import EvalConfig, EvalRun
from agebench.runner.ray_executor import import_ray
from agebench.runner.sink import write_json_atomic
from agebench.speed.workload import build_workload

Progress = Callable[[str], None]


@dataclass
class ClusterBenchConfig:
    images: Path
    out: Path
    model: str
    cpus: Sequence[int] = (1, 2, 4, 8, 16)
    count: int = 2400
    rounds: int = 3
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)


def _start(ray: Any, cpus: int) -> float:
    started = time.perf_counter()
    ray.init(
        num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    return time.perf_counter() - started


class _Runs:
    def __init__(self, config: ClusterBenchConfig) -> None:
        self.config = config
        self.workload = build_workload(config.images, config.out / "work", config.count)

    def eval(self, label: str, cluster: ClusterConfig, workers: int | None) -> dict[str, Any]:
        config = self.config
        execution = replace(config.execution, workers=workers)
        outcome = EvalRun(
            EvalConfig(
                bench="csv",
                root=self.workload.root,
                labels=self.workload.labels,
                options={"crop": "tight"},
                model=config.model,
                faces="none",
                execution=execution,
                cluster=cluster,
                out=config.out / f"eval-{label}",
                reuse=False,
                n_boot=100,
            )
        ).run()
        summary = outcome.summary
        seconds = summary["timing"]["seconds"]
        images = summary["counts"]["processed_this_run"]
        ray = summary["execution"].get("ray") or {}
        first = ray.get("first_result_seconds")
        # the local executor's start-up is its model load, which eval times apart
        steady = ray.get("images_per_second_after_first_result") or images / seconds
        return {
            "seconds": seconds,
            "images": images,
            "images_per_second": images / seconds,
            "first_result_seconds": first,
            "steady_images_per_second": steady,
            "mae": summary["metrics"].get("age", {}).get("mae"),
        }


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def run_cluster_bench(
    config: ClusterBenchConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """Measure, write ``OUT/cluster-bench.json`` (and the scaling plot) and return it."""
    ray = import_ray()
    say = progress or (lambda message: None)
    if ray.is_initialized():
        raise AgebenchError("bench --ray starts its own Ray instances: this process has one")
    cores = available_cores()
    counts = sorted({n for n in config.cpus if n >= 1})
    measured = [n for n in counts if n <= cores]
    runs = _Runs(config)
    result: dict[str, Any] = {
        "schema": "agebench.cluster-bench/1",
        "images": config.count,
        "rounds": config.rounds,
        "cores": cores,
        "not_measured": [n for n in counts if n > cores],
        "model": config.model,
    }
    # overhead: all cores, Ray's defaults against the local executor's, interleaved
    say(f"overhead: local vs ray on {cores} CPUs")
    startup = _start(ray, cores)
    local_rows, ray_rows = [], []
    try:
        for round_ in range(config.rounds):
            say(f"round {round_ + 1}/{config.rounds}: local")
            local_rows.append(runs.eval("local", ClusterConfig(), None))
            say(f"round {round_ + 1}/{config.rounds}: ray")
            ray_rows.append(runs.eval("ray", ClusterConfig(executor="ray"), None))
    finally:
        ray.shutdown()
    local_s, ray_s = _median(local_rows, "seconds"), _median(ray_rows, "seconds")
    local_ips = _median(local_rows, "images_per_second")
    steady = _median(ray_rows, "steady_images_per_second")
    result["overhead"] = {
        "ray_startup_seconds": round(startup, 3),
        "local_seconds": local_s,
        "ray_seconds": ray_s,
        "ratio": round(ray_s / local_s, 3) if local_s and ray_s else None,
        "ray_first_result_seconds": _median(ray_rows, "first_result_seconds"),
        "local_images_per_second": local_ips,
        "ray_steady_images_per_second": steady,
        "steady_ratio": round(steady / local_ips, 3) if steady and local_ips else None,
        "mae": {"local": _median(local_rows, "mae"), "ray": _median(ray_rows, "mae")},
        "rounds": {"local": local_rows, "ray": ray_rows},
    }
    scaling: list[dict[str, Any]] = []
    for cpus in measured:
        say(f"scaling: ray on {cpus} CPU(s)")
        started = _start(ray, cpus)
        try:
            rows = [
                runs.eval(f"ray-{cpus}", ClusterConfig(executor="ray"), cpus)
                for _ in range(config.rounds)
            ]
        finally:
            ray.shutdown()
        scaling.append(
            {
                "cpus": cpus,
                "ray_startup_seconds": round(started, 3),
                "images_per_second": _median(rows, "images_per_second"),
                "steady_images_per_second": _median(rows, "steady_images_per_second"),
            }
        )
    base = scaling[0]["steady_images_per_second"] if scaling else None
    for row in scaling:
        ips = row["steady_images_per_second"]
        speedup = ips / base if base and ips else None
        row["speedup"] = None if speedup is None else round(speedup, 3)
        row["efficiency_per_cpu"] = (
            None if speedup is None else round(speedup / (row["cpus"] / scaling[0]["cpus"]), 3)
        )
    result["scaling"] = scaling
    result["provenance"] = provenance()
    config.out.mkdir(parents=True, exist_ok=True)
    if scaling:
        result["plot"] = str(_plot(scaling, config.out / "ray-scaling.png"))
    write_json_atomic(config.out / "cluster-bench.json", result)
    return result


def _plot(scaling: list[dict[str, Any]], path: Path) -> Path:
    """Images/s against CPUs, beside perfect scaling from one CPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpus = [row["cpus"] for row in scaling]
    ips = [row["steady_images_per_second"] for row in scaling]
    figure, axes = plt.subplots(figsize=(5, 3.4), dpi=120)
    axes.plot(cpus, ips, "o-", label="--executor ray (steady)")
    axes.plot(cpus, [ips[0] * n / cpus[0] for n in cpus], "--", color="grey", label="linear")
    axes.set_xlabel("Ray CPUs (one worker each: decode + model)")
    axes.set_ylabel("images/s")
    axes.set_xticks(cpus)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
