"""The layout of a finished run folder, and its one reader of ``predictions.jsonl``.

The runner writes these files; compare, ``load_run`` and the reports read them. Keeping the
names and the reader here, below all of them, lets readers of finished runs work without
importing the runner that wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agebench.core.errors import AgebenchError

PREDICTION_SCHEMA = "agebench.image-prediction/1"
RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.jsonl"
#: the same rows flattened into columns, for spreadsheets (rebuilt as each run finishes)
PREDICTIONS_CSV = "predictions.csv"
SUMMARY_FILE = "summary.json"


def iter_prediction_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a finished run's ``predictions.jsonl`` (predict or eval) one at a time, each
    checked to be a prediction row; anything else is one line naming the file and the line.
    Streaming, so a reader that needs one pass (``predictions.csv``) holds no run in memory."""
    if not path.is_file():
        raise AgebenchError(f"{path.parent}: no {path.name} beside its summary")
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise AgebenchError(f"{path}:{number}: not a JSON line") from None
            if not isinstance(row, dict) or "image" not in row or "status" not in row:
                raise AgebenchError(f"{path}:{number}: not a prediction row")
            yield row


def read_prediction_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of a finished run's ``predictions.jsonl`` (see ``iter_prediction_rows``)."""
    return list(iter_prediction_rows(path))
