"""Peak memory of ``agebench predict`` and ``eval`` on small and large inputs: is it flat?

``predict`` walks a folder and streams its outputs; ``eval`` reads a label file of that many
records (the ``csv`` benchmark over the same images) and keeps a small scoring view of each
until its metrics. Each size runs in a child process of its own (``python -m agebench ...``),
and the peak resident set is read from ``getrusage(RUSAGE_CHILDREN)`` after the child is
reaped, so the figure includes everything the run touched and nothing of the parent. Folders
are built from the given images with hard links (``agebench.speed.workload``), so 100,000
images cost inodes, not gigabytes.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agebench.core.errors import AgebenchError
from agebench.speed.workload import build_workload


def peak_rss_of(command: list[str], env: dict[str, str] | None = None) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of ``command`` run to completion in a fresh process.

    ``ru_maxrss`` of RUSAGE_CHILDREN is the largest of all reaped children so far, so each
    measurement runs in a fork that reaps only the one child and reports back.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, check=False)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        os.write(write, f"{done.returncode} {peak} {seconds}".encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        text = fh.read()
    os.waitpid(pid, 0)
    code, peak_bytes, elapsed = text.split()
    if int(code) not in (0, 3):
        raise AgebenchError(f"{' '.join(command)} exited {code}")
    return int(peak_bytes), float(elapsed)


def _command(kind: str, workload: Any, out: Path) -> list[str]:
    if kind == "predict":
        return ["predict", str(workload.root / "images"), "--out", str(out), "--overwrite"]
    return [
        "eval",
        "--bench",
        "csv",
        "--root",
        str(workload.root),
        "--labels",
        str(workload.labels),
        "--option",
        "crop=tight",
        "--out",
        str(out),
        "--no-reuse",
    ]


def measure_memory(
    images: Path,
    work: Path,
    sizes: list[int],
    kind: str = "predict",
) -> list[dict[str, Any]]:
    """Peak RSS of ``agebench predict`` (or ``eval``) ``--faces none`` over each size."""
    if kind not in ("predict", "eval"):
        raise ValueError(f"no memory measurement for {kind!r}")
    results = []
    for size in sizes:
        folder = work / f"{kind}-n{size}"
        workload = build_workload(images, folder, size)
        command = [
            sys.executable,
            "-m",
            "agebench",
            *_command(kind, workload, folder / "out"),
            "--faces",
            "none",
        ]
        peak, seconds = peak_rss_of(command, env={**os.environ, "TERM": "dumb"})
        results.append(
            {
                "images": size,
                "peak_rss_mib": round(peak / 2**20, 1),
                "seconds": round(seconds, 1),
                "images_per_second": round(size / seconds, 1),
            }
        )
        shutil.rmtree(folder)
    return results
