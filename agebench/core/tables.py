"""Run results as tables: ``predictions.csv`` beside ``predictions.jsonl``, and exports.

One flattening for every table agebench gives (``to_pandas``, ``predictions.csv``,
``agebench export``): one row per record, nested mappings flattened with dots
(``attributes.gender``, ``model.sha256``), so a spreadsheet and a DataFrame show the same
columns. It lives in the core so that the runner, which writes ``predictions.csv`` as it
finishes a run, and the API, which reads runs back, share it. pandas loads only here, when a
table is asked for.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agebench.core.atomic import write_file_atomic, write_text_atomic
from agebench.core.errors import AgebenchError
from agebench.core.runfiles import PREDICTIONS_CSV, PREDICTIONS_FILE, read_prediction_rows

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

TableFormat = Literal["csv", "parquet"]
TABLE_FORMATS: tuple[TableFormat, ...] = ("csv", "parquet")


def flatten(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record, nested mappings flattened with dots; lists (boxes, landmarks,
    notes) stay whole in their cell."""
    import pandas as pd

    return pd.json_normalize([dict(r) for r in rows], sep=".")


def _cell(value: Any) -> Any:
    """A list or mapping as JSON (``[0.0, 0.0, 200.0, 200.0]``), which every reader parses,
    rather than Python's repr; anything else as it is."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value


def csv_text(table: pd.DataFrame) -> str:
    """The table as CSV, lists and mappings in their cells as JSON."""
    return str(table.map(_cell).to_csv(index=False, lineterminator="\n"))


def write_table(table: pd.DataFrame, path: Path, fmt: TableFormat) -> Path:
    """Write ``table`` to ``path`` as CSV or parquet, all or nothing. Parquet needs pyarrow,
    an optional dependency: without it, one line saying how to install it."""
    if fmt not in TABLE_FORMATS:
        raise AgebenchError(f"format {fmt!r}: expected one of {', '.join(TABLE_FORMATS)}")
    if fmt == "parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise AgebenchError("--format parquet needs pyarrow: pip install pyarrow")
        write_file_atomic(path, lambda tmp: table.to_parquet(tmp, index=False))
    else:
        write_text_atomic(path, csv_text(table))
    return path


def write_predictions_csv(out: Path) -> Path:
    """Rebuild ``predictions.csv`` from the run folder's ``predictions.jsonl``: called as a run
    finishes (a resumed one too), so the two always hold the same rows."""
    rows = read_prediction_rows(out / PREDICTIONS_FILE)
    return write_table(flatten(rows), out / PREDICTIONS_CSV, "csv")
