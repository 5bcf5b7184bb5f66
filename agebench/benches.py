"""``agebench.benches``: the benchmarks this installation can read, as data.

A small alias of ``agebench.benchmarks.registry`` under the command's name (``agebench benches
list``), so that ``agebench.benches.list()`` reads as the command does.
"""

from __future__ import annotations

import builtins

from agebench.benchmarks.registry import BenchInfo, bench_infos, get_benchmark

__all__ = ["BenchInfo", "get", "list"]


def list() -> builtins.list[BenchInfo]:
    """Every benchmark, as :class:`~agebench.benchmarks.registry.BenchInfo`, by name."""
    return bench_infos()


def get(name: str) -> BenchInfo:
    """One benchmark by name (an unknown one raises ``AgebenchError`` suggesting names)."""
    get_benchmark(name)  # the registry's one-line error, with close names, for a miss
    return next(info for info in bench_infos() if info.name == name)
