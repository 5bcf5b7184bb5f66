"""Eval's partial file: the rows of a run in progress, one JSON line each, appended as images
finish, so that an interrupted eval resumes where it stopped.

A row is taken over only when it is whole (a line cut short by a crash or a full disk is
dropped) and carries this run's identity digest (another model's, manifest's or data's rows
never are). What stays in memory per record is a slotted view of the fields the metrics read
(:class:`ScoringRow`); ``predictions.jsonl`` is streamed from the file, in record order, at
the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agebench.benchmarks.spec import Record


def record_key(record: Record) -> str:
    """A record's identity: an image can carry several labelled faces (LAGENDA)."""
    return f"{record.image}|{record.source}"


#: what the metrics and the report read of a row: only these stay in memory during a run. The
#: whole rows are in the partial file, from which predictions.jsonl is streamed at the end
_SCORING_FIELDS = (
    "image",
    "status",
    "age",
    "targets",
    "age_std",
    "age_group",
    "subject",
    "fold",
    "attributes",
    "pred_age",
    "pred_std",
    "pred_group",
    "model",
)


_ABSENT = object()
_NOTHING: Mapping[str, Any] = MappingProxyType({})


class ScoringRow(Mapping[str, Any]):
    """A read-only row of just the scoring fields, in slots: about 150 bytes a record, where a
    dict of the same keys takes 650 and a whole row over 2 kB (eval's memory on 100,000
    records grew 1.72x over 1,000 with whole rows, 1.38x with these)."""

    __slots__ = _SCORING_FIELDS

    def __init__(self, row: Mapping[str, Any]) -> None:
        for key in _SCORING_FIELDS:
            value = row.get(key, _ABSENT)
            # most records have no extra targets or attributes: share one empty mapping
            if isinstance(value, dict) and not value:
                value = _NOTHING
            setattr(self, key, value)

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, _ABSENT) if key in _SCORING_FIELDS else _ABSENT
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (key for key in _SCORING_FIELDS if getattr(self, key) is not _ABSENT)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _row_key(row: Mapping[str, Any]) -> str:
    return f"{row['image']}|{row['source']}"


def _parse_row(line: bytes, run_id: str) -> dict[str, Any] | None:
    """A whole partial-file row of this run, or None: a line cut short by a crash or a full
    disk (no newline: even when what was written parses, the row may be cut inside a value),
    an unreadable one, or a row another run wrote (another model, manifest or data)."""
    if not line.endswith(b"\n"):
        return None
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and row.get("run") == run_id else None


def read_partial(path: Path, run_id: str) -> dict[str, Mapping[str, Any]]:
    """Scoring views of an interrupted run's rows that this run may take over."""
    done: dict[str, Mapping[str, Any]] = {}
    if not path.is_file():
        return done
    with open(path, "rb") as fh:
        for line in fh:
            row = _parse_row(line, run_id)
            if row is not None:
                done[_row_key(row)] = ScoringRow(row)
    _truncate_partial_tail(path)
    return done


def rows_in_order(
    partial: Path, records: list[Record], files: Any, run_id: str
) -> Iterator[dict[str, Any]]:
    """The partial file's whole rows in the records' order (a resumed run appends out of
    order), one at a time; each row's image and its sha256 go into ``files`` on the way.

    The keys are parsed here, once more, rather than an offset kept per record during the
    run: the run's peak memory is what grows with the records, this pass costs ~1 s a 100k."""
    offsets: dict[str, int] = {}
    with open(partial, "rb") as fh:
        while line := fh.readline():
            row = _parse_row(line, run_id)
            if row is not None:
                offsets[_row_key(row)] = fh.tell() - len(line)
        for record in records:
            fh.seek(offsets[record_key(record)])
            row = json.loads(fh.readline())
            files.update(f"{row['image']}:{row.get('image_sha256')}".encode())
            yield row


def _truncate_partial_tail(path: Path, block: int = 1 << 16) -> None:
    """Drop an incomplete last line so that appended rows start on a line of their own.

    Reads backwards from the end, one block at a time: a partial file of 100,000 rows is
    hundreds of megabytes, and only its last line can be cut short."""
    with open(path, "r+b") as fh:
        end = fh.seek(0, 2)
        position = end
        while position > 0:
            start = max(0, position - block)
            fh.seek(start)
            data = fh.read(position - start)
            newline = data.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        if keep != end:
            fh.truncate(keep)
