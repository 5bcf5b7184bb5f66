"""Finished eval runs as a comparison reads them: a folder holding ``summary.json`` and
``predictions.jsonl``, checked to be whole, and the identity of its records and of a set of
runs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agebench.core import runfiles
from agebench.core.atomic import read_json
from agebench.core.errors import AgebenchError

EVAL_SUMMARY_SCHEMA = "agebench.eval-summary/1"


@dataclass
class FinishedRun:
    """One finished eval run: its folder, its summary and its prediction rows."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    #: the ONNX file, when known (the run was made here); else looked up by name
    model_file: Path | None = None

    @property
    def summary_path(self) -> Path:
        return self.path / runfiles.SUMMARY_FILE

    @property
    def predictions_path(self) -> Path:
        return self.path / runfiles.PREDICTIONS_FILE

    @property
    def benchmark(self) -> dict[str, Any]:
        return self.summary.get("benchmark") or {}

    @property
    def model(self) -> dict[str, Any]:
        return self.summary.get("model") or {}

    @property
    def faces(self) -> str | None:
        return (self.summary.get("faces") or {}).get("mode")


def row_key(row: Mapping[str, Any]) -> str:
    """A record's identity, as the eval runner keys it: an image can hold several faces."""
    return f"{row.get('image')}|{row.get('source')}"


def load_run(path: Path | str) -> FinishedRun:
    """Read a finished eval run from its folder (or from its ``summary.json``).

    Raises ``AgebenchError`` with one line naming the folder when it is not a finished run:
    missing folder or files, a summary of another schema, unreadable or duplicate rows, or
    rows that disagree with the summary's record count.
    """
    folder = Path(path)
    if folder.name == runfiles.SUMMARY_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise AgebenchError(f"{folder}: no such eval run folder")
    summary_path = folder / runfiles.SUMMARY_FILE
    if not summary_path.is_file():
        hint = (
            "an interrupted eval (rerun 'agebench eval' to finish it)"
            if (folder / "predictions.partial.jsonl").is_file()
            else "not a finished eval run"
        )
        raise AgebenchError(f"{folder}: no {runfiles.SUMMARY_FILE}: {hint}")
    summary = read_json(summary_path)
    if not isinstance(summary, dict):
        raise AgebenchError(f"{summary_path}: not a readable JSON summary")
    if summary.get("schema") != EVAL_SUMMARY_SCHEMA:
        raise AgebenchError(
            f"{summary_path}: schema {summary.get('schema')!r}, expected {EVAL_SUMMARY_SCHEMA!r}"
        )
    predictions = folder / runfiles.PREDICTIONS_FILE
    rows = runfiles.read_prediction_rows(predictions)
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        key = row_key(row)
        if key in seen:
            raise AgebenchError(f"{predictions}: row {number}: record {key} appears twice")
        seen.add(key)
    expected = (summary.get("counts") or {}).get("records")
    if expected is not None and expected != len(rows):
        raise AgebenchError(
            f"{predictions}: {len(rows)} rows, but its summary counts {expected} records"
        )
    return FinishedRun(folder, summary, rows)


def compare_id(runs: Iterable[FinishedRun]) -> str:
    """12 hex digits of the sha256 of the runs' resolved folders, sorted: the same runs give
    the same id whatever their order."""
    folders = sorted(str(r.path.resolve()) for r in runs)
    return hashlib.sha256("\n".join(folders).encode()).hexdigest()[:12]
