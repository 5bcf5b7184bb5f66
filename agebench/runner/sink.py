"""Outputs written so that a crash never leaves a half-written file and a rerun can resume.

Each image's JSON is written to a temporary name and renamed into place, so its presence
means it is complete; ``predictions.jsonl`` and ``summary.json`` are rebuilt from those files
at the end, which makes a resumed run's outputs identical to an uninterrupted one's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agebench.core.atomic import (
    TMP_SUFFIX,
    OutputError,
    output_error,
    read_json,
    write_json_atomic,
    write_lines_atomic,
    write_text_atomic,
)
from agebench.core.runfiles import (
    PREDICTION_SCHEMA,
    PREDICTIONS_CSV,
    PREDICTIONS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    read_prediction_rows,
)

__all__ = [  # the atomic writes and the run-folder layout are the core's; the runner uses them here
    "PREDICTIONS_CSV",
    "PREDICTIONS_FILE",
    "PREDICTION_SCHEMA",
    "RUN_FILE",
    "SUMMARY_FILE",
    "TMP_SUFFIX",
    "OutputError",
    "output_error",
    "read_json",
    "read_prediction_rows",
    "write_json_atomic",
    "write_lines_atomic",
    "write_text_atomic",
]


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


def clear_run(out: Path) -> None:
    """Remove a previous run's outputs before ``--overwrite``.

    Only files agebench wrote go: per-image records are recognised by their schema, so a
    user's own JSON files in the same folder survive.
    """
    ours = {RUN_FILE, SUMMARY_FILE, PREDICTIONS_FILE, PREDICTIONS_CSV}
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
