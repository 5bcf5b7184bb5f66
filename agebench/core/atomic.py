"""Files written all or nothing: a reader sees the old file or the whole new one, never a part.

Every output agebench writes (run folders, reports, manifests, caches) goes through here: the
text goes to a uniquely named temporary file beside the target (``O_EXCL``, so two writers
never share one) and is renamed over it. An OSError (disk full, read-only folder, a file where
a folder should be) becomes one :class:`OutputError` naming the file, and no temporary file is
left behind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from agebench.core.errors import AgebenchError

T = TypeVar("T")

#: every temporary file agebench writes ends so (``.NAME.RANDOM.tmp``): a crash leaves only
#: these behind, and a later run removes them
TMP_SUFFIX = ".tmp"


class OutputError(AgebenchError):
    """An output could not be written (disk full, read-only folder, a file where a folder
    should be): one line naming the file and the reason, never a traceback."""


def output_error(path: Path, error: OSError) -> OutputError:
    reason = error.strerror or str(error)
    return OutputError(f"cannot write {path}: {reason}")


def _dumps(obj: Any, indent: int | None) -> str:
    return json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)


def _temporary(path: Path) -> tuple[TextIO, Path]:
    """A new, uniquely named temporary file beside ``path`` (made with ``O_EXCL``, so two
    writers, in two processes or two threads of one, never share one), its folder made only
    when it is missing (one syscall, not two, in the common case)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    return os.fdopen(fd, "w", encoding="utf-8"), Path(name)


def _discard(tmp: Path | None) -> None:
    """Remove a temporary file after a failed write; a second failure here (the folder went
    read-only, the disk is gone) must not hide the first, so it is ignored."""
    if tmp is not None:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _into_place(path: Path, fill: Callable[[TextIO, Path], T]) -> T:
    """Let ``fill`` write a new temporary file beside ``path`` (through its open handle, or by
    its path), then rename it over ``path``: a reader sees the old file or the whole new one,
    never a part. An OSError (disk full, read-only, not a folder) becomes one
    :class:`OutputError`; no temporary file is left behind, whatever failed."""
    tmp: Path | None = None
    try:
        fh, tmp = _temporary(path)
        result = fill(fh, tmp)
        os.replace(tmp, path)
        return result
    except OSError as error:
        _discard(tmp)
        raise output_error(path, error) from None
    except BaseException:
        _discard(tmp)
        raise


def _write_atomic(path: Path, write: Callable[[TextIO], int], *, durable: bool) -> int:
    """Write through ``write`` into the temporary file, flushed (and fsynced when
    ``durable``) before the rename."""

    def fill(fh: TextIO, tmp: Path) -> int:
        with fh:
            count = write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        return count

    return _into_place(path, fill)


def write_text_atomic(path: Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``path`` all or nothing (tmp file in the same folder + rename)."""
    _write_atomic(path, lambda fh: fh.write(text), durable=durable)


def write_file_atomic(path: Path, write_to: Callable[[Path], object]) -> None:
    """Let ``write_to`` write a binary file (parquet...) at a temporary path beside ``path``,
    then rename it over ``path``: all or nothing, as the text writers here."""

    def fill(fh: TextIO, tmp: Path) -> None:
        fh.close()
        write_to(tmp)

    _into_place(path, fill)


def write_json_atomic(
    path: Path, obj: Any, *, durable: bool = False, indent: int | None = 2
) -> None:
    write_text_atomic(path, _dumps(obj, indent) + "\n", durable=durable)


def write_csv_atomic(
    path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]], *, durable: bool = False
) -> int:
    """Stream ``header`` and then ``rows`` as CSV into ``path`` atomically; return how many
    rows were written."""

    def write(fh: TextIO) -> int:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        count = 0
        for row in rows:
            writer.writerow(row)
            count += 1
        return count

    return _write_atomic(path, write, durable=durable)


def write_lines_atomic(path: Path, rows: Iterable[dict[str, Any]], *, durable: bool = False) -> int:
    """Stream rows as JSON Lines into ``path`` atomically; return how many were written."""

    def write(fh: TextIO) -> int:
        count = 0
        for row in rows:
            fh.write(_dumps(row, None))
            fh.write("\n")
            count += 1
        return count

    return _write_atomic(path, write, durable=durable)


def read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
