"""sha256 of model files, cached per (path, size, mtime) so repeated loads cost nothing.

A model's hash must cover every byte that defines it. An ONNX graph may keep its tensors in
external data files beside it (``onnx.save(..., save_as_external_data=True)``, the usual form
over 2 GB): hashing the ``.onnx`` alone would let those weights change under an unchanged,
"verified" sha256. So :func:`model_sha256` is the file's own sha256 when the graph is
self-contained (every manifest written so far keeps its meaning), and otherwise a digest over
the graph's sha256 and each external file's name and sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from agebench.core.errors import IntegrityError

_CHUNK = 1 << 20
#: the key every external-data entry of a TensorProto carries; a graph without these bytes
#: anywhere has no external data, so the protobuf need not be parsed for the common case
_LOCATION = b"location"
_COMBINED = b"agebench.model-sha256/2\0"


def sha256_file(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return _scan(path)[0]


def _scan(path: str) -> tuple[str, bool]:
    """The file's sha256, and whether the bytes ``location`` occur in it (across chunks)."""
    digest = hashlib.sha256()
    seen = False
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if not seen:
                seen = _LOCATION in tail + chunk[: len(_LOCATION)] or _LOCATION in chunk
                tail = chunk[-len(_LOCATION) :]
    return digest.hexdigest(), seen


@lru_cache(maxsize=256)
def _graph_cached(path: str, size: int, mtime_ns: int) -> tuple[str, tuple[str, ...]]:
    """The graph file's sha256 and the external data locations its tensors name, checked."""
    sha, maybe_external = _scan(path)
    if not maybe_external:
        return sha, ()
    return sha, tuple(sorted({location for _, location in _external_locations(Path(path))}))


def _external_locations(onnx_path: Path) -> Iterator[tuple[str, str]]:
    """(tensor name, location) of every tensor kept in an external file, each location
    checked to stay inside the model's folder."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except FileNotFoundError:
        raise IntegrityError(f"{onnx_path}: not found") from None
    except Exception as error:  # protobuf's errors are many; the first line says enough
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise IntegrityError(f"{onnx_path}: not a readable ONNX file: {first}") from None
    base = onnx_path.resolve().parent
    for graph in [model.graph, *model.functions]:
        tensors = _tensors(graph) if hasattr(graph, "initializer") else _function_tensors(graph)
        for tensor in tensors:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            _check_location(onnx_path, tensor.name, location, base)
            yield tensor.name, location


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto in a graph: initializers, sparse ones, constants, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _function_tensors(function: Any) -> Iterator[Any]:
    for node in function.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors


def _check_location(onnx_path: Path, tensor: str, location: str, base: Path) -> None:
    """A crafted graph can name ``/etc/shadow`` or ``../../secret`` as a tensor's data file and
    have it read as weights: only files inside the model's folder are accepted."""
    where = f"{onnx_path}: tensor {tensor!r} keeps its data in {location!r}"
    pure = PurePosixPath(location.replace("\\", "/"))
    if not location or pure.is_absolute() or (len(location) > 1 and location[1] == ":"):
        raise IntegrityError(
            f"{where}, an absolute path; refusing a file outside the model's folder"
        )
    if any(part == ".." for part in pure.parts):
        raise IntegrityError(f"{where}, outside the model's folder; refusing it")
    resolved = (base / location).resolve()
    if not resolved.is_relative_to(base):
        raise IntegrityError(f"{where}, which links outside the model's folder; refusing it")


def external_data_files(path: Path) -> list[Path]:
    """The external data files of an ONNX graph (each inside its folder), in a fixed order."""
    resolved = path.resolve()
    stat = resolved.stat()
    _, locations = _graph_cached(str(resolved), stat.st_size, stat.st_mtime_ns)
    files = []
    for location in locations:
        target = (resolved.parent / location).resolve()
        if not target.is_file():
            raise IntegrityError(f"{path}: external data file {location!r} is missing")
        files.append(target)
    return files


def model_sha256(path: Path) -> str:
    """sha256 of everything that defines an ONNX model: the graph file, plus the external data
    files its tensors name when it has any (see the module docstring)."""
    resolved = path.resolve()
    stat = resolved.stat()
    sha, locations = _graph_cached(str(resolved), stat.st_size, stat.st_mtime_ns)
    if not locations:
        return sha
    digest = hashlib.sha256(_COMBINED + sha.encode())
    for location, file in zip(locations, external_data_files(resolved), strict=True):
        digest.update(b"\0" + location.encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> str:
    """Raise IntegrityError unless ``path`` hashes to ``expected``; return the digest."""
    return _verify(path, sha256_file(path), expected)


def verify_model_sha256(path: Path, expected: str) -> str:
    """:func:`verify_sha256` for an ONNX model, external data included."""
    return _verify(path, model_sha256(path), expected)


def _verify(path: Path, actual: str, expected: str) -> str:
    if actual != expected.lower():
        raise IntegrityError(
            f"{path}: sha256 {actual} does not match the manifest's {expected.lower()}; "
            "the file (or its external data) is corrupt or not the model the manifest describes"
        )
    return actual
