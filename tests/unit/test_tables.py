"""One flattening for every table: ``flat_record`` flattens as ``pandas.json_normalize`` does,
and the streamed ``predictions.csv`` reads back as the DataFrame ``to_pandas`` gives."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pandas.testing as pdt

from agebench.core.tables import flat_record, flatten, write_predictions_csv

ROWS = [
    {
        "image": "a.jpg",
        "status": "ok",
        "attributes": {},
        "face": {"box": [0.0, 1.0, 20.0, 21.0], "score": 0.99},
        "model": {"name": "m", "extra": {"gender": "f", "p": None}},
        "pred_age": 31.25,
        "age": 30,
    },
    {
        "image": "b.jpg",
        "status": "no_face",
        "error": "no face found",
        "attributes": {"gender": "male"},
        "model": {"name": "m"},
        "pred_age": None,
        "seen": True,
    },
]


def test_flat_record_flattens_as_json_normalize():
    expected = pd.json_normalize(ROWS, sep=".")
    pdt.assert_frame_equal(flatten(ROWS), expected)
    assert list(flat_record(ROWS[0])) == [
        "image", "status", "pred_age", "age", "face.box", "face.score",
        "model.name", "model.extra.gender", "model.extra.p",
    ]  # fmt: skip


def test_predictions_csv_reads_back_as_the_dataframe(tmp_path: Path):
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    written = pd.read_csv(write_predictions_csv(tmp_path))
    table = flatten(ROWS)
    assert list(written.columns) == list(table.columns)
    assert written["face.box"].dropna().map(json.loads).tolist() == [[0.0, 1.0, 20.0, 21.0]]
    assert written["pred_age"].tolist()[0] == 31.25 and pd.isna(written["pred_age"][1])
    assert written["attributes.gender"].tolist()[1] == "male"
    assert written["error"].isna().tolist() == [True, False]
    assert written["seen"].tolist()[1] is True
