"""The Python API end to end on real chips: the same ages as ``agebench predict``, whatever
the input type, and the commands as calls (``agebench.api``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import agebench
from agebench.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def six_chips(face_chips: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("chips")
    for chip in face_chips[:6]:
        shutil.copy(chip, folder / chip.name)
    return folder


def _cli_ages(folder: Path, out: Path, faces: str) -> dict[str, list[float]]:
    result = CliRunner().invoke(main, ["predict", str(folder), "--out", str(out), "--faces", faces])
    assert result.exit_code == 0, result.output
    ages: dict[str, list[float]] = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        ages.setdefault(row["image"], []).append(row["age"])
    return ages


@pytest.mark.parametrize("faces", ["none", "detect"])
def test_api_ages_equal_the_command_for_every_input_type(
    six_chips: Path, tmp_path: Path, faces: str
):
    paths = sorted(six_chips.glob("*.jpg"))
    expected = _cli_ages(six_chips, tmp_path / "cli", faces)
    assert len(expected) == 6
    estimator = agebench.load(faces=faces)
    inputs = {
        "path": [str(p) for p in paths],
        "bytes": [p.read_bytes() for p in paths],
        "pil": [Image.open(p) for p in paths],
        "array": [np.asarray(Image.open(p).convert("RGB")) for p in paths],
    }
    for kind, images in inputs.items():
        faces_per_image = estimator.predict(images)
        got = {
            p.name: [f.age for f in found] for p, found in zip(paths, faces_per_image, strict=True)
        }
        assert got == expected, kind  # exact: the records' 3-decimal ages
    one = estimator.predict(paths[0])  # one input: one list of faces
    assert [f.age for f in one] == expected[paths[0].name]
    if faces == "detect":
        assert one[0].landmarks is not None and one[0].score > 0.9
    else:
        assert one[0].box == (0.0, 0.0, 200.0, 200.0) and one[0].score is None


def test_predict_crops_applies_the_models_crop_policy(six_chips: Path):
    """Ready crops as an array give the ages of ``--faces none`` on the files: the crop
    policy (dlib-age-v1's template on the recovered box) is applied, where a chip resized
    by hand to the model's 64 x 64 gives another age (the issue's 13.8 for 14.16)."""
    paths = sorted(six_chips.glob("*.jpg"))
    crops = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    estimator = agebench.load(faces="detect")
    ages = estimator.predict_crops(crops)
    reference = agebench.load(faces="none").predict([str(p) for p in paths])
    assert ages.shape == (6,)
    assert list(ages) == [found[0].age for found in reference]
    assert estimator.predict_crops(crops[0]).tolist() == [ages[0]]
    resized = np.asarray(Image.fromarray(crops[0]).resize((64, 64), Image.BILINEAR))
    from agebench.models.predictor import Predictor

    by_hand = Predictor(estimator.spec).predict(resized[None]).fields["age"][0]
    assert abs(by_hand - ages[0]) > 0.1


def test_undecodable_input_raises_one_line(six_chips: Path):
    estimator = agebench.load(faces="none")
    with pytest.raises(agebench.AgebenchError, match=r"<bytes 1>: .*not a recognised image"):
        estimator.predict([next(six_chips.glob("*.jpg")).read_bytes(), b"not an image"])
    with pytest.raises(agebench.AgebenchError, match=r"missing\.jpg: file not found"):
        estimator.predict(six_chips / "missing.jpg")


def test_predict_evaluate_compare_as_calls(six_chips: Path, tmp_path: Path):
    result = agebench.predict(six_chips, tmp_path / "predict", faces="none")
    assert result.counts.images == result.counts.faces == 6 and result.exit_code == 0
    assert result.out == (tmp_path / "predict").resolve()
    assert len(result.to_pandas()) == 6
    assert agebench.load_run(result.out) == result
    root = tmp_path / "utk"
    shutil.copytree(six_chips, root / "UTKFace")
    runs = [
        agebench.evaluate("utkface", root, faces=faces, out_root=tmp_path / "r", n_boot=100)
        for faces in ("none", "detect")
    ]
    for run in runs:
        assert run.counts.scored == 6 and run.metrics["age"].mae is not None
        assert run.report is not None and run.report.is_file() and run.reused is False
        assert "attributes.gender" in run.to_pandas().columns
        assert agebench.load_run(run.out).metrics == run.metrics
    again = agebench.evaluate("utkface", root, faces="none", out_root=tmp_path / "r", n_boot=100)
    assert again.reused is True and again.out == runs[0].out
    compared = agebench.compare([r.out for r in runs], out_root=tmp_path / "r", n_boot=100)
    assert len(compared.ranking) == 2 and compared.report is not None
    assert len(compared.to_pandas()) == 6
    assert agebench.load_run(compared.out).ranking == compared.ranking


def test_predict_default_out_is_the_commands(six_chips: Path, tmp_path: Path):
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = agebench.predict(six_chips, faces="none")
    finally:
        os.chdir(cwd)
    expected = tmp_path / "reports" / f"predict-{six_chips.name}"
    assert (
        result.out
        == expected.resolve()
        == (tmp_path / agebench.api.default_predict_out(six_chips)).resolve()
    )
