"""Where models come from: manifests in the weights folders, entry-point plugins, ad-hoc files.

A third party ships a model without touching our code by declaring, in its own package::

    [project.entry-points."agebench.models"]
    my-model = "my_pkg.models:MANIFEST"   # a manifest path, a ModelSpec, or a callable giving one

Entry points are resolved lazily: listing names imports nothing heavy, and a broken plugin
only fails when it is used (``models list`` shows its error instead of crashing).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agebench.errors import AgebenchError, ManifestError, ModelNotFoundError
from agebench.models.manifest import ModelSpec, load_manifest
from agebench.registry import Registry, RegistryError

ENTRY_POINT_GROUP = "agebench.models"
DEFAULT_MODEL = "dlib-age-v1"


def bundled_weights_dir() -> Path:
    """``weights/`` beside the package: the embedded default model lives here."""
    return Path(__file__).resolve().parents[2] / "weights"


def agebench_home() -> Path:
    """Root for pulled weights and caches; ``AGEBENCH_HOME`` moves it."""
    env = os.environ.get("AGEBENCH_HOME")
    return Path(env).expanduser() if env else bundled_weights_dir().parent


def weights_dirs() -> list[Path]:
    dirs = [agebench_home() / "weights", bundled_weights_dir()]
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    origin: str
    spec: ModelSpec | None
    error: str | None


class ModelCatalog:
    """All models this installation knows, by name."""

    def __init__(
        self, dirs: list[Path] | None = None, *, entry_point_group: str | None = ENTRY_POINT_GROUP
    ) -> None:
        self._registry: Registry[ModelSpec | Callable[[], object] | str | Path] = Registry("model")
        self._broken: dict[str, str] = {}
        for directory in dirs if dirs is not None else weights_dirs():
            self._scan(directory)
        if entry_point_group:
            self._registry.load_entry_points(entry_point_group)

    def _scan(self, directory: Path) -> None:
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.toml")):
            try:
                spec = load_manifest(path)
            except ManifestError as error:
                # keep the others usable; the broken one reports itself when listed or used
                self._broken[path.stem] = str(error)
                self._registry.register(path.stem, path, origin=str(path))
                continue
            self._registry.register(spec.name, spec, origin=str(path))

    def names(self) -> list[str]:
        return self._registry.names()

    def get(self, name: str) -> ModelSpec:
        if name in self._broken:
            raise ManifestError(self._broken[name])
        try:
            target = self._registry.get(name)
        except RegistryError as error:
            raise ModelNotFoundError(str(error)) from None
        spec = _as_spec(target, origin=self._registry.origin(name))
        if spec.name != name:
            raise ManifestError(
                f"{self._registry.origin(name)}: registered as {name!r} but its manifest "
                f"names {spec.name!r}"
            )
        return spec

    def entries(self) -> list[CatalogEntry]:
        rows = []
        for name in self.names():
            origin = self._registry.origin(name)
            try:
                rows.append(CatalogEntry(name, origin, self.get(name), None))
            except AgebenchError as error:
                rows.append(CatalogEntry(name, origin, None, str(error)))
        return rows


def _as_spec(target: object, *, origin: str) -> ModelSpec:
    """An entry point may give a ModelSpec, a manifest path, or a callable returning either."""
    if callable(target) and not isinstance(target, ModelSpec):
        try:
            target = target()
        except Exception as error:
            raise ManifestError(
                f"{origin}: plugin failed: {type(error).__name__}: {error}"
            ) from None
    if isinstance(target, ModelSpec):
        return target
    if isinstance(target, str | os.PathLike):
        return load_manifest(Path(target))
    raise ManifestError(f"{origin}: gave {type(target).__name__}, not a ModelSpec or manifest path")


def resolve_model(
    model: str, manifest: Path | None = None, catalog: ModelCatalog | None = None
) -> ModelSpec:
    """``--model`` as a registered name, a manifest path, or an ONNX path with ``--manifest``."""
    if manifest is not None:
        onnx = Path(model) if model.lower().endswith(".onnx") else None
        if onnx is not None and not onnx.is_file():
            raise AgebenchError(f"{onnx}: model file not found")
        return load_manifest(manifest, file_override=onnx)
    if model.lower().endswith(".toml"):
        return load_manifest(Path(model))
    if model.lower().endswith(".onnx"):
        raise AgebenchError(
            f"{model}: an ONNX file alone does not say how to preprocess faces or read its "
            "outputs; pass its manifest with --manifest"
        )
    return (catalog or ModelCatalog()).get(model)
