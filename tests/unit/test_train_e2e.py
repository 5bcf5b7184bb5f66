"""``agebench train`` then ``agebench eval`` end to end with the real export (ONNX, the
conversion gate, registration into a temporary AGEBENCH_HOME) on 36 real FG-NET photos of 6
people: each record is scored by its own fold's model, the findings say cross-validated, and
every exported model's gate shows torch and onnxruntime agree within its tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agebench.cli import main
from tests.unit.test_train_cli import _args, fgnet_subset  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def test_train_then_eval_is_cross_validated(
    fgnet_subset: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("AGEBENCH_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    trained = runner.invoke(main, [*_args(fgnet_subset, tmp_path / "reports"), "--json"])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert summary["models"] == ["tiny-dex-fold0", "tiny-dex-fold1", "tiny-dex-fold2"]
    for fold in summary["folds"]:
        gate = fold["export"]["report"]
        assert not gate["failures"] and gate["tolerance"] is not None
        worst = max(v for per_set in gate["max_abs_diff"].values() for v in per_set.values())
        assert worst <= gate["tolerance"]  # parity: torch vs onnxruntime
        assert max(gate["max_abs_diff_age"].values()) <= gate["age_tolerance"]

    out = tmp_path / "eval"
    args = ["eval", "--bench", "fgnet", "--root", str(fgnet_subset), "--protocol", "kfold"]
    args += ["--folds", "3", "--model", "tiny-dex-fold{fold}", "--out", str(out)]
    evaluated = runner.invoke(main, [*args, "--bootstrap", "100"])
    assert evaluated.exit_code == 0, evaluated.output
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 36
    assert all(row["model"]["name"] == f"tiny-dex-fold{row['fold']}" for row in rows)
    run = json.loads((out / "summary.json").read_text())
    kinds = [f["kind"] for f in run["findings"]]
    assert "cross-validated" in kinds and "trained-on-benchmark" not in kinds
