"""Outputs written so that a crash never leaves a half-written file and a rerun can resume.

Each image's JSON is written to a temporary name and renamed into place, so its presence
means it is complete; ``predictions.jsonl`` and ``summary.json`` are rebuilt from those files
at the end, which makes a resumed run's outputs identical to an uninterrupted one's.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from agebench.errors import AgebenchError

PREDICTION_SCHEMA = "agebench.image-prediction/1"
RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = "summary.json"
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


def _write_atomic(path: Path, write: Callable[[TextIO], int], *, durable: bool) -> int:
    """Write through ``write`` into a temporary file and rename it over ``path``: a reader sees
    the old file or the whole new one, never a part. An OSError (disk full, read-only, not a
    folder) becomes one :class:`OutputError` and leaves no temporary file behind."""
    tmp: Path | None = None
    try:
        fh, tmp = _temporary(path)
        with fh:
            count = write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        return count
    except OSError as error:
        _discard(tmp)
        raise output_error(path, error) from None
    except BaseException:
        _discard(tmp)
        raise


def write_text_atomic(path: Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``path`` all or nothing (tmp file in the same folder + rename)."""
    _write_atomic(path, lambda fh: fh.write(text), durable=durable)


def write_json_atomic(
    path: Path, obj: Any, *, durable: bool = False, indent: int | None = 2
) -> None:
    write_text_atomic(path, _dumps(obj, indent) + "\n", durable=durable)


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


def image_json_path(out: Path, relative: Path) -> Path:
    """``photos/a/b.jpg`` -> ``<out>/a/b.jpg.json``: the input tree mirrored, extension kept."""
    return out / relative.parent / f"{relative.name}.json"


def read_image_json(path: Path) -> dict[str, Any] | None:
    """A finished image record, or None if absent or not ours (then it is redone)."""
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != PREDICTION_SCHEMA:
        return None
    return record


def face_rows(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """predictions.jsonl rows of one image: one per face, or one failure row."""
    base = {"image": record["image"], "status": record["status"]}
    if record["status"] != "ok":
        yield {**base, "face": None, "error": record["error"]}
        return
    for face in record["faces"]:
        yield {
            **base,
            "face": face["index"],
            "error": None,
            **{k: v for k, v in face.items() if k != "index"},
        }


def read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def clear_run(out: Path) -> None:
    """Remove a previous run's outputs before ``--overwrite``.

    Only files agebench wrote go: per-image records are recognised by their schema, so a
    user's own JSON files in the same folder survive.
    """
    ours = {RUN_FILE, SUMMARY_FILE, PREDICTIONS_FILE}
    for path in sorted(out.rglob("*"), reverse=True):
        if path.is_file() and (
            (path.parent == out and path.name in ours)
            or (path.name.endswith(".json") and read_image_json(path) is not None)
        ):
            path.unlink()
        elif path.is_dir() and path != out and not any(path.iterdir()):
            path.rmdir()


def clear_temporaries(out: Path) -> None:
    """Drop the temporary files of writes that a crash cut short (never complete outputs)."""
    if out.is_dir():
        # ".NAME.tmp-PID" is how versions before 0.2 named them
        for pattern in (f".*{TMP_SUFFIX}", ".*.tmp-*"):
            for path in out.rglob(pattern):
                if path.is_file():
                    path.unlink()
