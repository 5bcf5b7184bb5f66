"""What eval keeps in memory per record, and how the whole rows come back from the partial file.

A 100,000-record eval used to hold every whole row (over 2 kB each) until the end; it now holds
a slotted view of the scoring fields and streams predictions.jsonl from the partial file.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import pytest

from agebench.benchmarks.spec import Record
from agebench.core.metrics import compute_metrics
from agebench.runner.partial import ScoringRow, read_partial, rows_in_order

RUN = "0123456789abcdef"


def _row(i: int, **extra) -> dict:
    return {
        "image": f"images/{i:07d}.jpg",
        "source": f"labels.csv:{i + 2}",
        "status": "ok",
        "error": None,
        "age": float(20 + i % 50),
        "targets": {},
        "age_std": None,
        "age_group": None,
        "subject": None,
        "fold": None,
        "split": None,
        "attributes": {},
        "pred_age": float(22 + i % 47),
        "pred_std": 3.5,
        "pred_group": None,
        "face_box": [0.0, 0.0, 200.0, 200.0],
        "face_score": None,
        "image_sha256": hashlib.sha256(str(i).encode()).hexdigest(),
        "run": RUN,
        **extra,
    }


def _record(i: int) -> Record:
    return Record(image=f"images/{i:07d}.jpg", age=float(20 + i % 50), source=f"labels.csv:{i + 2}")


def testScoringRow_reads_like_the_row_for_the_metrics():
    rows = [_row(i, targets={"apparent_age": 30.0} if i % 2 else {}) for i in range(200)]
    views = [ScoringRow(r) for r in rows]
    assert compute_metrics(views, n_boot=50) == compute_metrics(rows, n_boot=50)
    view = views[1]
    assert view["targets"] == {"apparent_age": 30.0} and view.get("fold") is None
    assert "model" not in view and "image_sha256" not in view
    with pytest.raises(KeyError):
        view["model"]
    assert dict(ScoringRow(_row(3, model={"name": "m"})))["model"] == {"name": "m"}


def testScoringRows_cost_a_fraction_of_whole_rows():
    rows = [_row(i) for i in range(5000)]
    tracemalloc.start()
    try:
        views = [ScoringRow(r) for r in rows]
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(views) == 5000
    # the slots and the list slot; the values are the rows' own objects
    assert kept / len(views) < 250, f"{kept / len(views):.0f} bytes per record"


def test_whole_rows_come_back_in_record_order_after_an_out_of_order_resume(tmp_path: Path):
    partial = tmp_path / "predictions.partial.jsonl"
    order = [3, 0, 4, 1, 2]  # a resumed run appends what the first run had not finished
    lines = [json.dumps(_row(i)) for i in order]
    partial.write_text("\n".join(lines) + "\n" + lines[0][:40])  # cut short by the interrupt
    done = read_partial(partial, RUN)
    assert set(done) == {f"images/{i:07d}.jpg|labels.csv:{i + 2}" for i in range(5)}
    assert partial.read_text().endswith("\n")  # the cut-short line is dropped
    files = hashlib.sha256()
    rows = list(rows_in_order(partial, [_record(i) for i in range(5)], files, RUN))
    assert rows == [_row(i) for i in range(5)]
    expected = hashlib.sha256()
    for i in range(5):
        expected.update(f"{_row(i)['image']}:{_row(i)['image_sha256']}".encode())
    assert files.hexdigest() == expected.hexdigest()


def test_a_partial_file_gives_only_whole_rows_of_this_run(tmp_path: Path):
    """Rows another run wrote (another model, manifest or data) are never taken over, and a
    last line with no newline is dropped even when what was written happens to parse."""
    partial = tmp_path / "predictions.partial.jsonl"
    theirs = json.dumps(_row(0, run="fedcba9876543210"))
    ours = json.dumps(_row(1))
    whole_but_unterminated = json.dumps(_row(2))
    partial.write_text(f"{theirs}\n{ours}\n{whole_but_unterminated}")
    done = read_partial(partial, RUN)
    assert set(done) == {"images/0000001.jpg|labels.csv:3"}
    assert partial.read_text() == f"{theirs}\n{ours}\n"
    theirs = json.dumps(_row(1, run="fedcba9876543210", pred_age=99.0))
    partial.write_text(f"{ours}\n{theirs}\n")  # their row of the same image after ours
    rows = list(rows_in_order(partial, [_record(1)], hashlib.sha256(), RUN))
    assert rows == [_row(1)]
