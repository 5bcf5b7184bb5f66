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
from dataclasses import dataclass, field
from pathlib import Path

from agebench.core.errors import AgebenchError, ManifestError, ModelNotFoundError
from agebench.core.provenance import checkout_root
from agebench.core.registry import Registry, RegistryError
from agebench.models.manifest import ModelSpec, load_manifest

ENTRY_POINT_GROUP = "agebench.models"
DEFAULT_MODEL = "dlib-age-v1"


def bundled_weights_dir() -> Path:
    """``agebench/weights``: the embedded default model, shipped as package data, so a source
    checkout and an installed wheel find it at the same place beside the code."""
    return Path(__file__).resolve().parents[1] / "weights"


def agebench_home() -> Path:
    """Root of what agebench writes: pulled models (``weights/``) and caches (``cache/``).

    ``AGEBENCH_HOME`` when set; else a source checkout's own folder (its ``weights/`` and
    ``cache/`` are git-ignored, and its tests' fetched wheels stay with it); else the user's
    cache directory (``~/.cache/agebench`` on Linux), never inside site-packages.
    """
    env = os.environ.get("AGEBENCH_HOME")
    if env:
        return Path(env).expanduser()
    root = checkout_root()
    if root is not None:
        return root
    import platformdirs

    return Path(platformdirs.user_cache_dir("agebench", appauthor=False))


def weights_dirs() -> list[Path]:
    """``$AGEBENCH_HOME/weights`` (pulled, converted, quantized), then the embedded models.

    A model in the home hides an embedded one of the same name (``ModelCatalog.shadowed``).
    """
    return [agebench_home() / "weights", bundled_weights_dir()]


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    origin: str
    spec: ModelSpec | None
    error: str | None
    #: a model ``agebench models pull NAME`` can fetch, not pulled yet (``spec`` is None)
    pullable: bool = False


def pullable_names() -> list[str]:
    """Models with a pull recipe (``agebench/models/recipes.py``), pulled or not."""
    from agebench.models.recipes import RECIPES

    return sorted(RECIPES)


def not_pulled_message(name: str) -> str:
    return f"model {name!r} is not pulled yet: run agebench models pull {name}"


class ModelCatalog:
    """All models this installation knows, by name."""

    def __init__(
        self, dirs: list[Path] | None = None, *, entry_point_group: str | None = ENTRY_POINT_GROUP
    ) -> None:
        self._registry: Registry[ModelSpec | Callable[[], object] | str | Path] = Registry("model")
        self._broken: dict[str, str] = {}
        self._dir_of: dict[str, Path] = {}
        #: manifests hidden by a same-named model in an earlier weights folder
        self.shadowed: dict[str, Path] = {}
        if dirs is not None:
            for directory in dirs:
                self._scan(directory)
        else:
            for directory in weights_dirs():
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
                if self._shadowed_by_earlier_dir(path.stem, directory, path):
                    continue
                self._broken[path.stem] = str(error)
                self._registry.register(path.stem, path, origin=str(path))
                self._dir_of[path.stem] = directory
                continue
            if self._shadowed_by_earlier_dir(spec.name, directory, path):
                continue
            self._registry.register(spec.name, spec, origin=str(path))
            self._dir_of[spec.name] = directory

    def _shadowed_by_earlier_dir(self, name: str, directory: Path, path: Path) -> bool:
        """``$AGEBENCH_HOME/weights`` comes before the embedded models: a model there hides
        one of the same name further down the path. Two manifests of one name in the same folder are
        still refused (by the registry)."""
        earlier = self._dir_of.get(name)
        if earlier is None or earlier == directory:
            return False
        self.shadowed[name] = path
        return True

    def names(self) -> list[str]:
        return self._registry.names()

    def origin(self, name: str) -> str:
        """Where a registered model comes from (its manifest path, or the entry point)."""
        return self._registry.origin(name)

    def get(self, name: str) -> ModelSpec:
        if name in self._broken:
            raise ManifestError(self._broken[name])
        try:
            target = self._registry.get(name)
        except RegistryError as error:
            if name in pullable_names():
                raise ModelNotFoundError(not_pulled_message(name)) from None
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
        registered = set(self.names())
        for name in pullable_names():
            if name not in registered:
                message = f"not pulled (agebench models pull {name})"
                rows.append(CatalogEntry(name, "pull recipe", None, message, pullable=True))
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


@dataclass(frozen=True)
class ModelInfo:
    """One model of ``agebench.models.list()``: what ``agebench models list`` shows, as data.

    ``spec`` is None (and ``error`` says why) for a broken manifest or a pullable model not
    pulled yet; the other fields are then None too.
    """

    name: str
    origin: str
    #: where it comes from, in a word: "built in", "pulled", "local" (converted or quantized
    #: here), "plugin" (a package's entry point) or "not pulled" (a pull recipe)
    source: str
    framework: str | None
    input: str | None
    heads: tuple[str, ...]
    crop: str | None
    license: str | None
    sha256: str | None
    weights_present: bool
    pullable: bool
    error: str | None
    spec: ModelSpec | None = field(repr=False)


def model_source(entry: CatalogEntry) -> str:
    """``ModelInfo.source``: ``origin`` (a manifest's path, an entry point) in a word."""
    if entry.pullable:
        return "not pulled"
    if entry.origin.startswith("entry point"):
        return "plugin"
    if Path(entry.origin).parent == bundled_weights_dir():
        return "built in"
    return "pulled" if entry.name in pullable_names() else "local"


def model_infos(catalog: ModelCatalog | None = None) -> list[ModelInfo]:
    """Every model this installation knows (registered, broken or pullable), by name."""
    infos = []
    for entry in (catalog or ModelCatalog()).entries():
        spec = entry.spec
        if spec is None:
            infos.append(
                ModelInfo(
                    name=entry.name,
                    origin=entry.origin,
                    source=model_source(entry),
                    framework=None,
                    input=None,
                    heads=(),
                    crop=None,
                    license=None,
                    sha256=None,
                    weights_present=False,
                    pullable=entry.pullable,
                    error=entry.error,
                    spec=None,
                )
            )
            continue
        i = spec.input
        infos.append(
            ModelInfo(
                name=spec.name,
                origin=entry.origin,
                source=model_source(entry),
                framework=spec.framework,
                input=f"{i.layout} {i.height}x{i.width} {i.color}",
                heads=tuple(f"{h.name}:{h.decoder}" for h in spec.heads),
                crop=spec.crop.policy,
                license=spec.license,
                sha256=spec.sha256,
                weights_present=spec.weights_present,
                pullable=entry.pullable,
                error=None,
                spec=spec,
            )
        )
    return infos
