"""Pick the fastest onnxruntime settings for one model on this machine, and remember them.

Which graph optimisation level is fastest depends on the model *and* the CPU: on a 2-core
AVX-512 EPYC dlib-age-v1 ran 1,650 images/s at ``all`` and under 1,000 at ``basic`` (its
manifest's level), while on other machines ``all`` was the slowest of the four. So a run measures
each level once per (model sha256, onnxruntime version, CPU, cores) in a fraction of a second,
keeps the fastest whose outputs agree with the manifest's level (different levels fuse
different kernels: a level is only taken when its outputs stay within ``PARITY`` of the
manifest level's), and caches the choice in ``$AGEBENCH_HOME/cache/ort-tuning.json``.
Every summary records the settings and where they came from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agebench.models.ort_engine import OPT_LEVELS, OrtEngine, SessionSettings

#: outputs of a candidate level may differ from the manifest level's by this much
#: (relative to the output's magnitude): float32 reassociation, not a different model
PARITY = 1e-4
#: each candidate is timed for about this long after one warm-up batch
_MEASURE_SECONDS = 0.25
_TUNING_BATCH = 32
_lock = threading.Lock()


def cpu_signature() -> str:
    """The processor model name: tuning measured on one CPU says nothing about another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(sha256: str, cores: int) -> str:
    import onnxruntime as ort

    raw = f"{sha256}|ort {ort.__version__}|{cpu_signature()}|{cores} cores"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _cache_file() -> Path:
    from agebench.models.catalog import agebench_home

    return agebench_home() / "cache" / "ort-tuning.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_settings(sha256: str, cores: int) -> SessionSettings | None:
    entry = _read_cache(_cache_file()).get(cache_key(sha256, cores))
    if not isinstance(entry, dict) or entry.get("graph_optimization") not in OPT_LEVELS:
        return None
    try:
        return SessionSettings(
            graph_optimization=entry["graph_optimization"],
            intra_op_threads=int(entry["intra_op_threads"]),
            lanes=int(entry["lanes"]),
            source="tuning cache",
        )
    except (KeyError, TypeError, ValueError):
        return None


def _store(sha256: str, cores: int, settings: SessionSettings, measured: dict[str, Any]) -> None:
    from agebench.core.atomic import write_json_atomic

    path = _cache_file()
    with _lock:
        data = _read_cache(path)
        data[cache_key(sha256, cores)] = {
            "graph_optimization": settings.graph_optimization,
            "intra_op_threads": settings.intra_op_threads,
            "lanes": settings.lanes,
            "model_sha256": sha256,
            "cpu": cpu_signature(),
            "cores": cores,
            "images_per_second": measured,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)


def throughput(run: Callable[[], Any], lanes: int, batch: int, seconds: float) -> float:
    """Images/s of ``lanes`` threads calling ``run`` concurrently for about ``seconds``."""
    run()  # warm-up: first runs allocate and pick kernels
    counts = [0] * lanes
    deadline = time.perf_counter() + seconds

    def loop(lane: int) -> None:
        while True:
            run()
            counts[lane] += 1
            if time.perf_counter() >= deadline:
                return

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) * batch / (time.perf_counter() - start)


def _close(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    for x, y in zip(a, b, strict=True):
        scale = max(1.0, float(np.max(np.abs(y))) if y.size else 1.0)
        if x.shape != y.shape or float(np.max(np.abs(x - y), initial=0.0)) > PARITY * scale:
            return False
    return True


def tune(
    file: Path,
    *,
    input_name: str | None,
    input_shape: tuple[int, ...],
    manifest_level: str,
    cores: int,
    model_name: str,
    sha256: str,
    seconds: float = _MEASURE_SECONDS,
) -> tuple[SessionSettings, dict[str, float | None]]:
    """Measure every level as ``cores`` lanes x 1 thread, then the best as 1 lane x ``cores``.

    ``input_name`` None: the graph's first input. Returns the fastest settings whose outputs
    match the manifest level's, and what each candidate measured (images/s), and stores the
    choice in the tuning cache.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((_TUNING_BATCH, *input_shape), dtype=np.float32)
    measured: dict[str, float | None] = {}
    best: tuple[float, SessionSettings] | None = None
    # the manifest level first: it gives the names, and the outputs the others must match
    first = _engine(file, SessionSettings(manifest_level, 1, cores, "tuned"), model_name)
    name = input_name or first.input_names[0]
    outputs = first.output_names
    reference = first.run(name, x, outputs)
    for level in [manifest_level, *(level for level in OPT_LEVELS if level != manifest_level)]:
        settings = SessionSettings(level, intra_op_threads=1, lanes=cores, source="tuned")
        engine = first if level == manifest_level else _engine(file, settings, model_name)
        if engine is not first and not _close(engine.run(name, x, outputs), reference):
            measured[f"{level} x{cores} lanes"] = None  # outputs disagree: never chosen
            continue
        speed = throughput(functools.partial(engine.run, name, x, outputs), cores, len(x), seconds)
        measured[f"{level} x{cores} lanes"] = round(speed, 1)
        if best is None or speed > best[0]:
            best = (speed, settings)
    assert best is not None  # the manifest level is always measured
    if cores > 1:
        level = best[1].graph_optimization
        single = SessionSettings(level, intra_op_threads=cores, lanes=1, source="tuned")
        engine = _engine(file, single, model_name)
        speed = throughput(lambda: engine.run(name, x, outputs), 1, len(x), seconds)
        measured[f"{level} 1 lane x{cores} threads"] = round(speed, 1)
        if speed > best[0] * 1.05:  # lanes are steadier beside decode threads: keep on a tie
            best = (speed, single)
    _store(sha256, cores, best[1], measured)
    return best[1], measured


def _engine(file: Path, settings: SessionSettings, model_name: str) -> OrtEngine:
    return OrtEngine(
        file, providers=["CPUExecutionProvider"], settings=settings, model_name=model_name
    )
