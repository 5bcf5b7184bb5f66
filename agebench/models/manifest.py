"""ModelSpec: one frozen, validated record of everything needed to run a model faithfully.

A model is an ONNX graph plus this manifest (TOML). Preprocessing lives here, never in code
branches on model names: an ONNX file that forgets its mean/std silently gives wrong ages.
Everything is validated when the manifest is loaded, not when a batch first meets it.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agebench.core.errors import ManifestError
from agebench.faces.crop import CROP_POLICIES, CropSpec
from agebench.models.training_data import parse_training_data

SCHEMA_VERSION = 1
Layout = Literal["NCHW", "NHWC"]
Color = Literal["RGB", "BGR", "GRAY"]
_LAYOUTS = ("NCHW", "NHWC")
_COLORS = ("RGB", "BGR", "GRAY")
_SHA256_LEN = 64


@dataclass(frozen=True)
class InputSpec:
    """The tensor the graph wants. ``mean``/``std`` are in 0..255 pixel units, per channel."""

    name: str | None
    layout: Layout
    height: int
    width: int
    color: Color
    mean: tuple[float, ...]
    std: tuple[float, ...]
    per_image_standardization: bool = False

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3


@dataclass(frozen=True)
class HeadSpec:
    name: str
    output: str | None
    decoder: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class RuntimeSpec:
    """onnxruntime settings that measurably matter for this graph."""

    graph_optimization: Literal["disable", "basic", "extended", "all"] = "basic"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: Path
    sha256: str
    framework: str
    description: str
    input: InputSpec
    crop: CropSpec
    heads: tuple[HeadSpec, ...]
    runtime: RuntimeSpec
    provenance: Mapping[str, Any]
    manifest_path: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    @property
    def age_head(self) -> HeadSpec:
        return next(h for h in self.heads if h.name == "age")

    @property
    def license(self) -> str:
        return str(self.provenance.get("license", "unknown"))

    @property
    def weights_present(self) -> bool:
        return self.file.is_file()


class _Reader:
    """Typed access to a TOML table with errors that name the manifest and the key."""

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        self.table = table
        self.where = where

    def fail(self, key: str, reason: str) -> ManifestError:
        return ManifestError(f"{self.where}: '{key}' {reason}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., /) -> Any:
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        # TOML ints are fine where floats are wanted; bools are not numbers here
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise self.fail(key, f"must be {_kind_name(kind)}, got {value!r}")
        return value

    def sub(self, key: str, required: bool = True) -> _Reader:
        value = self.table.get(key)
        if value is None:
            if required:
                raise self.fail(key, "table is required")
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        return _Reader(value, f"{self.where} [{key}]")

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> Any:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def floats(self, key: str, default: Any = ...) -> tuple[float, ...]:
        value = self.get(key, (list, int, float), default)
        values = value if isinstance(value, list) else [value]
        if not values or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise self.fail(key, f"must be a finite number or list of numbers, got {value!r}")
        return tuple(float(v) for v in values)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _input_spec(r: _Reader) -> InputSpec:
    size = r.get("size", list)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise r.fail("size", f"must be [height, width] positive integers, got {size!r}")
    color = r.choice("color", _COLORS)
    channels = 1 if color == "GRAY" else 3
    norm = r.sub("normalize", required=False)
    mean = norm.floats("mean", (0.0,))
    if "scale" in norm.table and "std" in norm.table:
        raise norm.fail("scale", "and 'std' are alternatives; give one")
    if "scale" in norm.table:
        std = tuple(1.0 / s if s else 0.0 for s in norm.floats("scale"))
    else:
        std = norm.floats("std", (1.0,))
    if any(s <= 0 for s in std):
        raise norm.fail("std", "must be positive (or 'scale' non-zero)")
    for key, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise norm.fail(key, f"needs 1 or {channels} values for {color}, got {len(values)}")
    return InputSpec(
        name=r.get("name", str, None),
        layout=r.choice("layout", _LAYOUTS, "NCHW"),
        height=size[0],
        width=size[1],
        color=color,
        mean=mean * channels if len(mean) == 1 else mean,
        std=std * channels if len(std) == 1 else std,
        per_image_standardization=norm.get("per_image_standardization", bool, False),
    )


def _crop_spec(r: _Reader) -> CropSpec:
    policy = r.choice("policy", CROP_POLICIES)
    template = r.get("template", str, None)
    if policy == "align" and template is None:
        raise r.fail("template", "is required when policy = 'align'")
    padding = r.get("padding", float, 0.0)
    margin = r.get("margin", float, 0.0)
    if not 0.0 <= padding <= 2.0:
        raise r.fail("padding", f"must be within 0..2, got {padding}")
    if not 0.0 <= margin <= 2.0:
        raise r.fail("margin", f"must be within 0..2, got {margin}")
    if template is not None:
        from agebench.faces.templates import TEMPLATES

        if template not in TEMPLATES:
            raise ManifestError(f"{r.where}: {TEMPLATES._miss_message(template)}")
    return CropSpec(
        policy=policy,
        template=template,
        padding=padding,
        margin=margin,
        square=r.get("square", bool, True),
        pixel_grid=r.choice("pixel_grid", ("center", "dlib"), "center"),
        notes=r.get("notes", str, ""),
    )


def _head_specs(doc: _Reader) -> tuple[HeadSpec, ...]:
    from agebench.models.decoders import DECODERS

    raw = doc.get("heads", list)
    heads = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise doc.fail("heads", f"entry {index} must be a table")
        r = _Reader(item, f"{doc.where} [[heads]] #{index + 1}")
        decoder = r.get("decoder", str)
        if decoder not in DECODERS:
            raise ManifestError(f"{r.where}: {DECODERS._miss_message(decoder)}")
        heads.append(
            HeadSpec(
                name=r.get("name", str),
                output=r.get("output", str, None),
                decoder=decoder,
                params=dict(r.sub("params", required=False).table),
            )
        )
    names = [h.name for h in heads]
    if "age" not in names:
        raise doc.fail("heads", "needs a head named 'age'")
    if len(set(names)) != len(names):
        raise doc.fail("heads", f"has duplicate names: {names}")
    return tuple(heads)


def parse_manifest(
    doc: Mapping[str, Any], *, where: str, base_dir: Path, file_override: Path | None = None
) -> ModelSpec:
    """Validate a manifest mapping; ``file_override`` replaces its ``file`` (ad-hoc models)."""
    r = _Reader(doc, where)
    version = r.get("schema_version", int, SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"is {version}; this agebench reads {SCHEMA_VERSION}")
    name = r.get("name", str)
    if not name or any(c.isspace() or c in "/\\" for c in name):
        raise r.fail("name", f"must be non-empty with no spaces or slashes, got {name!r}")
    sha = r.get("sha256", str).lower()
    if len(sha) != _SHA256_LEN or any(c not in "0123456789abcdef" for c in sha):
        raise r.fail("sha256", "must be 64 hex digits")
    file = file_override if file_override is not None else _model_file(r, base_dir)
    spec = ModelSpec(
        name=name,
        file=file.resolve(),
        sha256=sha,
        framework=r.get("framework", str),
        description=r.get("description", str, ""),
        input=_input_spec(r.sub("input")),
        crop=_crop_spec(r.sub("crop")),
        heads=_head_specs(r),
        runtime=RuntimeSpec(
            graph_optimization=r.sub("runtime", required=False).choice(
                "graph_optimization", ("disable", "basic", "extended", "all"), "basic"
            )
        ),
        provenance=parse_training_data(r.sub("provenance").table, f"{where} [provenance]"),
        manifest_path=None,
        extra={k: v for k, v in doc.items() if k not in _KNOWN_KEYS},
    )
    for required in ("source", "license"):
        if required not in spec.provenance:
            raise ManifestError(f"{where} [provenance]: '{required}' is required")
    _check_decoders(spec, where)
    return spec


def _model_file(r: _Reader, base_dir: Path) -> Path:
    """The graph the manifest names, which must lie inside the manifest's folder.

    What runs is what was checked: a manifest is reviewed, hashed and shipped with its folder,
    so ``file = "../../elsewhere/x.onnx"``, an absolute path, or a symlink that leaves the
    folder would run a graph from somewhere nobody looked. (An ad-hoc ``--model x.onnx
    --manifest m.toml`` names its graph on the command line and is not bound by this.)
    """
    name = r.get("file", str)
    relative = Path(name)
    if not name or relative.is_absolute() or relative.drive:
        raise r.fail("file", f"must be a path inside the manifest's folder, got {name!r}")
    folder = base_dir.resolve()
    resolved = (folder / relative).resolve()
    if not resolved.is_relative_to(folder):
        raise r.fail(
            "file",
            f"{name!r} leads outside the manifest's folder {folder} (to {resolved}); "
            "keep the model file beside its manifest",
        )
    return resolved


_KNOWN_KEYS = frozenset(
    {
        "schema_version",
        "name",
        "file",
        "sha256",
        "framework",
        "description",
        "input",
        "crop",
        "heads",
        "runtime",
        "provenance",
    }
)


def _check_decoders(spec: ModelSpec, where: str) -> None:
    """Build every decoder once so bad parameters fail at load time, not mid-run."""
    from agebench.models.decoders import build_decoder

    for head in spec.heads:
        try:
            build_decoder(head.decoder, head.params, task=head.name, base_dir=spec.base_dir)
        except ManifestError as error:
            raise ManifestError(f"{where}: head {head.name!r}: {error}") from None


def load_manifest(path: Path, *, file_override: Path | None = None) -> ModelSpec:
    """Read and validate a TOML manifest; every failure is a one-line ManifestError."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ManifestError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ManifestError(
            f"{path}: not valid TOML: not UTF-8 text (byte {error.start}: "
            f"{error.object[error.start : error.start + 1]!r})"
        ) from None
    except OSError as error:
        raise ManifestError(f"{path}: cannot read manifest: {error.strerror}") from None
    spec = parse_manifest(doc, where=str(path), base_dir=path.parent, file_override=file_override)
    return _with_manifest_path(spec, path)


def _with_manifest_path(spec: ModelSpec, path: Path) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, manifest_path=path.resolve())


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """The resolved manifest as plain data, for ``models info`` and result provenance."""
    return {
        "name": spec.name,
        "file": str(spec.file),
        "sha256": spec.sha256,
        "framework": spec.framework,
        "description": spec.description,
        "manifest": str(spec.manifest_path) if spec.manifest_path else None,
        "input": {
            "name": spec.input.name,
            "layout": spec.input.layout,
            "size": [spec.input.height, spec.input.width],
            "color": spec.input.color,
            "mean": list(spec.input.mean),
            "std": list(spec.input.std),
            "per_image_standardization": spec.input.per_image_standardization,
        },
        "crop": {
            "policy": spec.crop.policy,
            "template": spec.crop.template,
            "padding": spec.crop.padding,
            "margin": spec.crop.margin,
            "square": spec.crop.square,
            "pixel_grid": spec.crop.pixel_grid,
            "notes": spec.crop.notes,
        },
        "heads": [
            {"name": h.name, "output": h.output, "decoder": h.decoder, "params": dict(h.params)}
            for h in spec.heads
        ],
        "runtime": {"graph_optimization": spec.runtime.graph_optimization},
        "provenance": dict(spec.provenance),
    }


def spec_digest(spec: ModelSpec) -> str:
    """sha256 of everything in the manifest that changes what the model outputs (input,
    normalisation, crop, heads and their decoders, graph sha256), without where the files lie:
    the graph's sha256 alone misses a manifest whose mean/std were edited, and a run's identity
    must not."""
    resolved = spec_to_dict(spec)
    for where in ("file", "manifest", "description", "provenance", "runtime"):
        resolved.pop(where, None)
    resolved["crop"].pop("notes", None)
    canonical = json.dumps(resolved, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
