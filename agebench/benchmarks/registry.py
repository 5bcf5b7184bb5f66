"""Benchmark specs by name: built-in modules load lazily, third parties add their own through
the ``agebench.benchmarks`` entry-point group (a target giving a BenchmarkSpec)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from agebench.benchmarks.spec import BenchmarkError, BenchmarkSpec
from agebench.core.registry import Registry, RegistryError

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


@dataclass(frozen=True)
class BenchInfo:
    """One benchmark of ``agebench.benches.list()``: what ``agebench benches list`` shows."""

    name: str
    title: str
    version: str
    protocols: tuple[str, ...]
    splits: tuple[str, ...]
    targets: tuple[str, ...]
    #: what its images are: "tight" or "margin" face crops, or whole "photo"s
    crops: str
    crop_margin: float
    default_faces: str
    spec: BenchmarkSpec = field(repr=False)


def bench_infos() -> list[BenchInfo]:
    """Every benchmark agebench can read (built in and plugged in), by name."""
    infos = []
    for name in benchmarks().names():
        spec = get_benchmark(name)
        infos.append(
            BenchInfo(
                name=name,
                title=spec.title,
                version=str(spec.version),
                protocols=tuple(spec.all_protocols),
                splits=tuple(spec.splits),
                targets=tuple(spec.targets),
                crops=spec.crops.kind,
                crop_margin=float(spec.crops.margin),
                default_faces=spec.default_faces,
                spec=spec,
            )
        )
    return infos
