"""Run results as tables: ``predictions.csv`` beside ``predictions.jsonl``, and exports.

One flattening for every table agebench gives (``to_pandas``, ``predictions.csv``,
``agebench export``): one row per record, nested mappings flattened with dots
(``attributes.gender``, ``model.sha256``), so a spreadsheet and a DataFrame show the same
columns. It lives in the core so that the runner, which writes ``predictions.csv`` as it
finishes a run, and the API, which reads runs back, share it. ``predictions.csv`` is written
by streaming, without pandas; pandas loads only for a DataFrame or a parquet export.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agebench.core.atomic import write_csv_atomic, write_file_atomic, write_text_atomic
from agebench.core.errors import AgebenchError
from agebench.core.runfiles import PREDICTIONS_CSV, PREDICTIONS_FILE, iter_prediction_rows

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

TableFormat = Literal["csv", "parquet"]
TABLE_FORMATS: tuple[TableFormat, ...] = ("csv", "parquet")


def flat_record(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """One record with its nested mappings flattened into dotted keys, as
    ``pandas.json_normalize(sep=".")`` flattens it: a record's own values first, each nested
    mapping's keys after them in order, an empty mapping gone; lists stay whole."""
    flat = {f"{prefix}{key}": value for key, value in row.items()}
    for key, value in row.items():
        if isinstance(value, dict):
            del flat[f"{prefix}{key}"]
            flat.update(flat_record(value, f"{prefix}{key}."))
    return flat


def flatten(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record (``flat_record``), columns in order of first appearance; lists
    (boxes, landmarks, notes) stay whole in their cell."""
    import pandas as pd

    return pd.DataFrame([flat_record(r) for r in rows])


def _cell(value: Any) -> Any:
    """A list or mapping as JSON (``[0.0, 0.0, 200.0, 200.0]``), which every reader parses,
    rather than Python's repr; anything else as it is."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value


def _csv_cell(value: Any) -> Any:
    """A cell as ``pandas.DataFrame.to_csv`` would write it: missing (None, NaN) as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _cell(value)


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
    finishes (a resumed one too), so the two always hold the same rows.

    Two streaming passes over the file (the columns, then the rows), never the run in memory:
    eval keeps its memory flat over millions of records, and so does writing its table. The
    columns and cells are ``flatten``'s, which ``to_pandas`` and ``agebench export`` use.
    """
    source = out / PREDICTIONS_FILE
    columns: dict[str, None] = {}
    for row in iter_prediction_rows(source):
        columns.update(dict.fromkeys(flat_record(row)))
    header = list(columns)
    cells = (
        [_csv_cell(flat.get(column)) for column in header]
        for flat in map(flat_record, iter_prediction_rows(source))
    )
    path = out / PREDICTIONS_CSV
    write_csv_atomic(path, header, cells)
    return path
