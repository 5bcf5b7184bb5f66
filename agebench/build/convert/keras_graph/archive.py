"""Reading a Keras 3 ``.keras`` archive as plain data: a size-bounded zip of exactly
``config.json``, ``metadata.json`` and ``model.weights.h5``, whose HDF5 weights are read with
h5py as bare float arrays (no links out of the file, no external or virtual storage).

Keras 3 names weights in ``model.weights.h5`` by *class*, not by layer name: a container's
layers are ``layers/<snake_case(class)>[_<k>]`` in the order of its ``layers`` list (a
Sequential's leading InputLayer excluded), each with ``vars/0..n-1`` in creation order and,
in recent releases (3.13 wrote them), a ``name`` attribute on ``vars``, checked when present.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from agebench.core.errors import AgebenchError

MiB = 1 << 20
#: the only members a ``.keras`` archive may hold, with the most bytes each may have
ARCHIVE_LIMITS: dict[str, int] = {
    "config.json": 64 * MiB,
    "metadata.json": 1 * MiB,
    "model.weights.h5": 2048 * MiB,
}
_REQUIRED_MEMBERS = ("config.json", "model.weights.h5")
_MAX_ZIP_ENTRIES = 16
MAX_NESTING = 32  # models inside models, deeper than this, are refused
_SNAKE_1 = re.compile(r"(.)([A-Z][a-z]+)")
_SNAKE_2 = re.compile(r"([a-z])([A-Z])")


class KerasGraphError(AgebenchError, ValueError):
    """A ``.keras`` archive is malformed, unsafe, or uses something this converter refuses."""


@dataclass(frozen=True)
class KerasArchive:
    """What a ``.keras`` file holds, as plain data.

    ``weights`` maps each leaf layer's path of config names (``"dense"``, or
    ``"mobilenetv2_1.00_224/Conv1"`` inside a nested model) to its variables in Keras' order
    (kernel then bias; BatchNormalization: gamma, beta, moving mean, moving variance).
    """

    config: dict[str, Any]
    weights: dict[str, list[np.ndarray]]
    metadata: dict[str, Any]
    source: Path | None = None
    sha256: str | None = None


def _check_member_name(name: str, where: str) -> None:
    pure = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or pure.is_absolute()
        or ".." in pure.parts
        or re.match(r"^[A-Za-z]:", name)
    ):
        raise KerasGraphError(
            f"{where}: unsafe zip entry {name!r} (absolute or outside the archive)"
        )
    if name not in ARCHIVE_LIMITS:
        raise KerasGraphError(
            f"{where}: unexpected zip entry {name!r}; a .keras archive this converter reads holds "
            f"only {', '.join(sorted(ARCHIVE_LIMITS))}"
        )


def _read_members(path: Path) -> dict[str, bytes]:
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise KerasGraphError(f"{where}: not a readable .keras (zip) archive: {error}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > _MAX_ZIP_ENTRIES:
            raise KerasGraphError(f"{where}: {len(infos)} zip entries; a .keras has 3")
        seen: set[str] = set()
        for info in infos:
            _check_member_name(info.filename, where)
            if info.filename in seen:
                raise KerasGraphError(f"{where}: duplicate zip entry {info.filename!r}")
            seen.add(info.filename)
            if info.flag_bits & 0x1:
                raise KerasGraphError(f"{where}: encrypted zip entry {info.filename!r}")
            if info.file_size > ARCHIVE_LIMITS[info.filename]:
                raise KerasGraphError(
                    f"{where}: {info.filename} is {info.file_size} bytes, over the "
                    f"{ARCHIVE_LIMITS[info.filename]} this converter reads"
                )
        for name in _REQUIRED_MEMBERS:
            if name not in seen:
                raise KerasGraphError(f"{where}: no {name} in the archive; is it a Keras 3 .keras?")
        members: dict[str, bytes] = {}
        for info in infos:
            limit = ARCHIVE_LIMITS[info.filename]
            try:
                with zf.open(info) as fh:
                    data = fh.read(limit + 1)
            except (OSError, zipfile.BadZipFile, RuntimeError) as error:
                raise KerasGraphError(f"{where}: cannot read {info.filename}: {error}") from None
            if len(data) > limit:
                raise KerasGraphError(f"{where}: {info.filename} inflates past {limit} bytes")
            members[info.filename] = data
    return members


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KerasGraphError(f"{what}: not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise KerasGraphError(f"{what}: expected a JSON object")
    return value


def to_snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: the h5 group name of a layer of class ``name``."""
    name = re.sub(r"\W+", "", name)
    name = _SNAKE_1.sub(r"\1_\2", name)
    return _SNAKE_2.sub(r"\1_\2", name).lower()


_CONTAINERS = ("Sequential", "Functional", "Model")


def is_container(entry: Mapping[str, Any]) -> bool:
    return entry.get("class_name") in _CONTAINERS and isinstance(
        (entry.get("config") or {}).get("layers"), list
    )


def layer_name(entry: Mapping[str, Any]) -> str:
    config = entry.get("config")
    name = entry.get("name") or (config.get("name") if isinstance(config, Mapping) else None)
    if not isinstance(name, str) or not name:
        raise KerasGraphError(f"a {entry.get('class_name')!r} layer has no name")
    if "/" in name:
        raise KerasGraphError(f"layer name {name!r} contains '/'")
    return name


def _iter_leaf_layers(
    entry: Mapping[str, Any], prefix: str, h5_prefix: str, depth: int = 0
) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(config path, h5 group path, entry) of every non-container layer, Keras' save order."""
    if depth > MAX_NESTING:
        raise KerasGraphError(f"models nested more than {MAX_NESTING} deep")
    layers = entry["config"]["layers"]
    if (
        entry["class_name"] == "Sequential"
        and layers
        and layers[0].get("class_name") == "InputLayer"
    ):
        layers = layers[1:]  # Sequential.layers omits its auto-made InputLayer
    used: dict[str, int] = {}
    for layer in layers:
        if not isinstance(layer, Mapping) or not isinstance(layer.get("class_name"), str):
            raise KerasGraphError(f"{prefix or 'model'}: malformed layer entry")
        key = to_snake_case(layer["class_name"])
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        path = f"{prefix}{layer_name(layer)}"
        h5_path = f"{h5_prefix}layers/{key}"
        if is_container(layer):
            yield from _iter_leaf_layers(layer, path + "/", h5_path + "/", depth + 1)
        else:
            yield path, h5_path, layer


def _h5_child(group: Any, name: str, where: str) -> Any:
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise KerasGraphError(f"{where}: {group.name}/{name} is a {type(link).__name__}; refused")
    return group[name]


def _h5_array(dataset: Any, where: str) -> np.ndarray:
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise KerasGraphError(f"{where}: {dataset.name} is not a dataset")
    if dataset.is_virtual or dataset.external:
        raise KerasGraphError(f"{where}: {dataset.name} stores its data outside the file; refused")
    if dataset.dtype.kind != "f":
        raise KerasGraphError(f"{where}: {dataset.name} has dtype {dataset.dtype}, not float")
    return np.array(dataset[()], dtype=np.float32)


def _read_weights(
    data: bytes, root: Mapping[str, Any], where: str
) -> tuple[dict[str, list[np.ndarray]], int]:
    import h5py

    weights: dict[str, list[np.ndarray]] = {}
    claimed: list[str] = []
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError as error:
        raise KerasGraphError(f"{where}: model.weights.h5 is not HDF5: {error}") from None
    with h5:
        for path, h5_path, entry in _iter_leaf_layers(root, "", ""):
            group: Any = h5
            for part in h5_path.split("/"):
                group = _h5_child(group, part, where) if group is not None else None
            arrays: list[np.ndarray] = []
            vars_group = _h5_child(group, "vars", where) if group is not None else None
            if vars_group is not None:
                stored = vars_group.attrs.get("name")
                if isinstance(stored, bytes):
                    stored = stored.decode("utf-8", "replace")
                if stored is not None and stored != layer_name(entry):
                    raise KerasGraphError(
                        f"{where}: weights at {h5_path} belong to layer {stored!r}, not "
                        f"{path!r}; the archive's config and weights disagree"
                    )
                names = sorted(vars_group.keys(), key=lambda k: (len(k), k))
                if names != [str(i) for i in range(len(names))]:
                    raise KerasGraphError(f"{where}: {h5_path}/vars holds {names}, not 0..n-1")
                arrays = [_h5_array(_h5_child(vars_group, n, where), where) for n in names]
            weights[path] = arrays
            claimed.append(h5_path + "/")
        stray: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if (
                isinstance(obj, h5py.Dataset)
                and name.startswith("layers/")
                and not any(name.startswith(prefix) for prefix in claimed)
            ):
                stray.append(name)

        h5.visititems(visit)
        if stray:
            raise KerasGraphError(
                f"{where}: weights no layer of the config owns: {', '.join(stray[:5])}"
            )
    total = sum(a.size for arrays in weights.values() for a in arrays)
    return weights, total


def read_keras_archive(path: str | os.PathLike[str]) -> KerasArchive:
    """Read a Keras 3 ``.keras`` zip as data: config, weights by layer path, metadata.

    Only ``config.json``, ``metadata.json`` and ``model.weights.h5`` are accepted (no paths,
    no extras, each size-bounded); nothing in the archive is imported or executed.
    """
    path = Path(path)
    members = _read_members(path)
    config = _json(members["config.json"], f"{path}: config.json")
    metadata = (
        _json(members["metadata.json"], f"{path}: metadata.json")
        if "metadata.json" in members
        else {}
    )
    version = str(metadata.get("keras_version", ""))
    if version and not version.split(".")[0].isdigit():
        raise KerasGraphError(f"{path}: metadata.json keras_version {version!r} is not a version")
    if version and int(version.split(".")[0]) < 3:
        raise KerasGraphError(f"{path}: saved by Keras {version}; only Keras 3 archives are read")
    if not is_container(config):
        raise KerasGraphError(
            f"{path}: the top-level object is a {config.get('class_name')!r}, not a Sequential "
            "or Functional model"
        )
    weights, _ = _read_weights(members["model.weights.h5"], config, str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return KerasArchive(config, weights, metadata, path, digest.hexdigest())
