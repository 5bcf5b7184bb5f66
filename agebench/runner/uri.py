"""Predict inputs given as filesystem URIs (``s3://bucket/prefix/``, ``gs://``, ``hdfs://``,
``file://``): listed on the driver, read in the worker that decodes them.

The filesystem is pyarrow's (``pyarrow.fs.FileSystem.from_uri``, which Ray Data itself reads
through; pyarrow comes with the ``ray`` extra); credentials come from the filesystem's usual
environment variables and config files, agebench stores none.

Listing follows :mod:`agebench.runner.walk`'s rules: image extensions (any case), names starting
with ``.`` skipped, recursive unless told otherwise, entries in name order with sub-folders
entered where they sort, so a ``file://`` URI lists exactly what the plain folder walk yields.
It is streamed one "directory" (a ``/``-delimited prefix on an object store) at a time: memory
holds the largest single directory's listing, never the whole tree (pyarrow's ``get_file_info``
has no public paging below one directory). Only entries the filesystem calls files are listed.

Reading is bounded as :mod:`agebench.core.fileread` bounds files: an object larger than the cap
(by the listing's size, or as read) is refused with the same one-line reason, and a missing or
unreadable object fails its own record only.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agebench.core.errors import AgebenchError
from agebench.core.fileread import DEFAULT_MAX_FILE_BYTES, ImageDecodeError, too_large_reason
from agebench.runner.imageio import IMAGE_EXTENSIONS

PYARROW_MISSING = "URI inputs need pyarrow: pip install pyarrow (it comes with 'agebench[ray]')"
#: ``scheme://``: at least two scheme letters, so a Windows drive (``C:\``) is never a URI
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_uri(value: object) -> bool:
    """Whether an input names a filesystem URI rather than a local path."""
    return isinstance(value, str) and _URI.match(value) is not None


@dataclass(frozen=True)
class RemoteObject:
    """One image object: the run's input URI (which picks the filesystem), its path in that
    filesystem, its URI (for records) and the size and mtime the listing saw."""

    root: str
    path: str
    uri: str
    relative: PurePosixPath
    size: int
    mtime_ns: int | None

    def source(self) -> dict[str, int | None]:
        """The record's ``source``: a resume redoes an object whose size or mtime changed."""
        return {"size": self.size, "mtime_ns": self.mtime_ns}


def _pyarrow_fs() -> Any:
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise AgebenchError(PYARROW_MISSING) from None
    return pafs


def resolve(uri: str) -> tuple[Any, str]:
    """``(filesystem, path in it)`` for ``uri``, or a one-line error for a scheme (or a URI)
    that pyarrow does not know."""
    pafs = _pyarrow_fs()
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as error:  # pyarrow.ArrowInvalid is a ValueError
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise AgebenchError(f"{uri}: not a filesystem URI agebench can read ({first})") from None


@functools.lru_cache(maxsize=8)
def _filesystem(root: str) -> Any:
    """One filesystem per input URI per process (a worker reads many objects of one run)."""
    return resolve(root)[0]


def check_input(uri: str) -> None:
    """Fail before the run starts when the URI's scheme is unknown or nothing is there."""
    filesystem, base = resolve(uri)
    info = _info(filesystem, base, uri)
    if info.type == _pyarrow_fs().FileType.NotFound:
        raise AgebenchError(f"{uri}: input not found")


def iter_objects(uri: str, *, recursive: bool = True) -> Iterator[RemoteObject]:
    """The image objects under ``uri`` (or the object ``uri`` names), in walk order, lazily."""
    pafs = _pyarrow_fs()
    filesystem, base = resolve(uri)
    info = _info(filesystem, base, uri)
    if info.type == pafs.FileType.NotFound:
        raise AgebenchError(f"{uri}: input not found")
    if info.type != pafs.FileType.Directory:
        yield RemoteObject(uri, base, uri, PurePosixPath(info.base_name), info.size, info.mtime_ns)
        return
    stack = [iter(_read_dir(filesystem, base, is_root=True))]
    prefix = base.rstrip("/")
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.type == pafs.FileType.Directory:
            if recursive:
                stack.append(iter(_read_dir(filesystem, entry.path, is_root=False)))
            continue
        relative = PurePosixPath(posixpath.relpath(entry.path, prefix))
        yield RemoteObject(
            uri, entry.path, _join(uri, relative), relative, entry.size, entry.mtime_ns
        )


def count_objects(uri: str, *, recursive: bool = True) -> int:
    """How many objects :func:`iter_objects` yields (a second listing, for a progress total)."""
    return sum(1 for _ in iter_objects(uri, recursive=recursive))


def _info(filesystem: Any, path: str, uri: str) -> Any:
    try:
        return filesystem.get_file_info(path)
    except OSError as error:
        raise AgebenchError(f"{uri}: cannot list ({_first_line(error)})") from None


def _read_dir(filesystem: Any, directory: str, *, is_root: bool) -> list[Any]:
    """One directory's wanted entries (sub-directories and image files), sorted by path."""
    pafs = _pyarrow_fs()
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(directory, recursive=False))
    except OSError as error:
        if is_root:
            raise AgebenchError(f"{directory}: cannot list ({_first_line(error)})") from None
        return []  # as walk.py: one unreadable folder does not stop a long run
    wanted = [
        entry
        for entry in entries
        if not entry.base_name.startswith(".")
        and (
            entry.type == pafs.FileType.Directory
            or (
                entry.type == pafs.FileType.File
                and posixpath.splitext(entry.base_name)[1].lower() in IMAGE_EXTENSIONS
            )
        )
    ]
    wanted.sort(key=lambda entry: entry.path)
    return wanted


def _join(uri: str, relative: PurePosixPath) -> str:
    """The URI of ``relative`` under the folder ``uri`` (its query, e.g. ``?region=``, kept)."""
    parts = urlsplit(uri)
    path = f"{parts.path.rstrip('/')}/{relative.as_posix()}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def read_object(obj: RemoteObject, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The object's bytes, at most ``max_bytes``, or :class:`ImageDecodeError` with one line."""
    if obj.size > max_bytes:
        raise ImageDecodeError(obj.uri, too_large_reason(obj.size, max_bytes))
    try:
        with _filesystem(obj.root).open_input_stream(obj.path) as stream:
            data = stream.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageDecodeError(obj.uri, "file not found") from None
    except PermissionError:
        raise ImageDecodeError(obj.uri, "permission denied (cannot read file)") from None
    except OSError as error:
        raise ImageDecodeError(obj.uri, f"cannot read file ({_first_line(error)})") from None
    if len(data) > max_bytes:
        raise ImageDecodeError(
            obj.uri, too_large_reason(len(data), max_bytes) + " (it grew while read)"
        )
    if not data:
        raise ImageDecodeError(obj.uri, "empty file (0 bytes)")
    return bytes(data)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
