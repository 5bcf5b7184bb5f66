"""Building a model in a temporary folder, gating it, then registering it: the machinery of
``pull``, ``models convert`` and ``models quantize``.

The converter writes inside ``<home>/weights/<prefix>-<name>-tmp``; only when the conversion
passed its gate are the ONNX graph and its manifest moved into the weights folder, so a
failure at any step registers nothing and leaves nothing half-written. One build of a name at
a time (a lock file per name).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agebench.core.errors import AgebenchError
from agebench.models.recipes import RECIPES

if TYPE_CHECKING:
    from agebench.build.convert import Conversion
    from agebench.build.gate import GateReport
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
