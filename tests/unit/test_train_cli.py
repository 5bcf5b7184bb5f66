"""``agebench train`` end to end on a small real FG-NET tree (36 photos of 6 people, the
FGNET.zip layout): 3 subject-disjoint folds, one frozen-backbone epoch each, every fold handed
to the export step with what it was trained on, the run folder written, a rerun refused and
``--resume`` finishing without training again.

The export step (``agebench.training.export``, ONNX + gate + registration) is replaced by a stub
that records its calls: this test covers everything up to it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from agebench.cli import main
from agebench.training import run as run_module
from agebench.training.backbone import Backbone
from agebench.training.export import training_table
from agebench.training.heads import Head
from tests.fixtures.tiny_models import REPO

SHARED_FGNET = Path(os.environ.get("AGEBENCH_TEST_FGNET") or REPO.parent / "shared" / "fgnet")
SUBJECTS = ("001", "002", "003", "004", "005", "006")


@pytest.fixture(scope="module")
def fgnet_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED_FGNET / "images").is_dir():
        message = f"the real FG-NET not found at {SHARED_FGNET}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the real-data tests")
        pytest.skip(message)
    root = tmp_path_factory.mktemp("fgnet") / "FGNET"
    (root / "images").mkdir(parents=True)
    for subject in SUBJECTS:
        photos = sorted(p for p in (SHARED_FGNET / "images").iterdir() if p.name[:3] == subject)
        for photo in photos[:6]:
            shutil.copy(photo, root / "images" / photo.name)
    assert len(list((root / "images").iterdir())) == 36
    return root


class StubExport:
    """Records each call of ``export_trained`` and checks the module it would export."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self, backbone: Backbone, head: Head, *, name: str, training: dict, home=None, quantize=()
    ) -> dict[str, Any]:
        crops = torch.zeros(2, *backbone.input_size, 3)
        with torch.no_grad():
            out = head.export_module()(backbone(backbone.prepare(crops)))
        self.calls.append({"name": name, "training": training, "quantize": quantize})
        return {"name": name, "outputs": list(out.shape)}


def _args(root: Path, out_root: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--bench",
        "fgnet",
        "--root",
        str(root),
        "--protocol",
        "kfold",
        "--folds",
        "3",
        "--backbone",
        "dlib-age-v1",
        "--loss",
        "dex",
        "--loss-option",
        "max_age=70",
        "--name",
        "tiny-dex",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--freeze-backbone",
        "--out-root",
        str(out_root),
        *extra,
    ]


@pytest.mark.slow
def test_train_cli_on_a_small_fgnet(fgnet_subset: Path, tmp_path: Path, monkeypatch):
    stub = StubExport()
    monkeypatch.setattr(run_module, "default_exporter", lambda: stub)
    result = CliRunner().invoke(main, _args(fgnet_subset, tmp_path), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "tiny-dex-fold{fold}" in result.output  # the eval command that scores the folds
    assert [c["name"] for c in stub.calls] == ["tiny-dex-fold0", "tiny-dex-fold1", "tiny-dex-fold2"]
    out = tmp_path / "train" / "tiny-dex"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == [c["name"] for c in stub.calls]
    assert summary["evaluate"] == [
        f"agebench eval --bench fgnet --root {fgnet_subset} --protocol kfold --folds 3 --seed 0 "
        "--model tiny-dex-fold{fold}"
    ]
    for call, fold in zip(stub.calls, summary["folds"], strict=True):
        training = call["training"]
        assert training_table(training)["folds"] == 3  # the real exporter keeps every key
        label = training["test_fold"]
        assert training["bench"] == "fgnet" and training["protocol"] == "kfold"
        assert training["train_folds"] == sorted({"0", "1", "2"} - {label})
        assert len(training["data_fingerprint"]) == 64 and training["loss"] == "dex"
        split = json.loads((out / f"fold{label}" / "split.json").read_text())
        test_subjects = {Path(i).name[:3] for i in split["test"]}
        seen = {Path(i).name[:3] for i in split["train"] + split["val"]}
        assert len(test_subjects) == 2 and not test_subjects & seen
        assert not set(split["test"]) & set(split["train"] + split["val"])
        metrics = (out / f"fold{label}" / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == 1 and json.loads(metrics[0])["epoch"] == 1
        assert (out / f"fold{label}" / "checkpoints" / "last.pt").is_file()
        assert fold["export"] == {"name": call["name"], "outputs": [2, 71]}  # ages 0..70
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["freeze_backbone"] and config["backbone"]["features"] == 256
    report = (out / "report.html").read_text()
    assert report.count("<svg") == 6 and "tiny-dex-fold2" in report

    again = CliRunner().invoke(main, _args(fgnet_subset, tmp_path))
    assert again.exit_code != 0 and "--resume continues it" in again.output
    resumed = CliRunner().invoke(main, _args(fgnet_subset, tmp_path, "--resume", "--json"))
    assert resumed.exit_code == 0, resumed.output
    assert len(stub.calls) == 3  # every fold was done: nothing trained or exported again
    assert json.loads(resumed.stdout)["models"] == summary["models"]


def test_agebench_train_is_the_api_call_beside_the_training_package(tmp_path: Path):
    import agebench
    import agebench.training.protocol  # the package is agebench.training, not agebench.train

    assert callable(agebench.train) and callable(agebench.training.protocol.plan_folds)
    with pytest.raises(ValueError, match="device"):
        agebench.train(
            "fgnet", tmp_path, backbone="dlib-age-v1", loss="dex", name="x", device="tpu"
        )
    with pytest.raises(agebench.AgebenchError, match="loss"):  # refused before any data is read
        agebench.train("fgnet", tmp_path, backbone="dlib-age-v1", loss="nope", name="x")
