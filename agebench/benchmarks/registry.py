"""Benchmark specs by name: built-in modules load lazily, third parties add their own through
the ``agebench.benchmarks`` entry-point group (a target giving a BenchmarkSpec)."""

from __future__ import annotations

from functools import lru_cache

from agebench.benchmarks.spec import BenchmarkError, BenchmarkSpec
from agebench.registry import Registry, RegistryError

ENTRY_POINT_GROUP = "agebench.benchmarks"
_BUILT_IN = {
    "appa-real": "agebench.benchmarks.appa_real:SPEC",
    "fgnet": "agebench.benchmarks.fgnet:SPEC",
    "utkface": "agebench.benchmarks.utkface:SPEC",
    "morph": "agebench.benchmarks.morph:SPEC",
    "aaf": "agebench.benchmarks.aaf:SPEC",
    "imdb-wiki": "agebench.benchmarks.imdb_wiki:SPEC",
    "adience": "agebench.benchmarks.adience:SPEC",
    "lagenda": "agebench.benchmarks.lagenda:SPEC",
    "mivolo-csv": "agebench.benchmarks.lagenda:MIVOLO_CSV_SPEC",
    "facebase": "agebench.benchmarks.facebase:SPEC",
    "csv": "agebench.benchmarks.csv_generic:SPEC",
}


@lru_cache(maxsize=1)
def benchmarks() -> Registry[BenchmarkSpec]:
    registry: Registry[BenchmarkSpec] = Registry("benchmark")
    for name, target in _BUILT_IN.items():
        registry.register(name, target)
    registry.load_entry_points(ENTRY_POINT_GROUP)
    return registry


def get_benchmark(name: str) -> BenchmarkSpec:
    try:
        spec = benchmarks().get(name)
    except RegistryError as error:
        raise BenchmarkError(str(error)) from None
    if not isinstance(spec, BenchmarkSpec):
        raise BenchmarkError(f"benchmark {name!r} resolved to {type(spec).__name__}, not a spec")
    return spec
