"""``agebench predict`` end to end, on real faces, with the embedded default model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from agebench.cli import main
from agebench.core.config import ExecutionConfig
from agebench.runner.config import PredictConfig
from agebench.runner.pipeline import EXIT_PARTIAL, run_predict
from tests.conftest import chip_age
from tests.fixtures.bad_images import EXPECTED_DECODE_FAILURES, write_bad_inputs

pytestmark = pytest.mark.slow

#: dlib-age-v1 on the 48 shared chips measured 7.37 (detect + align) and 7.31 (--faces none);
#: 4 of the 48 are older than 80, the model's last bin, and cost ~25 years each. 8.5 leaves
#: room for platform float noise and catches a broken pipeline: landmarks from unpadded tight
#: chips gave 13.8, and a swapped colour order or wrong normalisation lands far above.
MAE_BOUND = 8.5


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _mae(rows: list[dict]) -> float:
    first = {}
    for row in rows:
        if row["status"] == "ok" and row["face"] == 0:
            first[row["image"]] = row["age"]
    errors = [abs(age - chip_age(Path(name))) for name, age in first.items()]
    return float(np.mean(errors))


@pytest.mark.parametrize("faces", ["detect", "none"])
def test_predict_on_real_faces_is_accurate(shared_faces: Path, tmp_path: Path, faces: str):
    result = CliRunner().invoke(
        main, ["predict", str(shared_faces), "--out", str(tmp_path), "--faces", faces]
    )
    assert result.exit_code == 0, result.output
    rows = _read_jsonl(tmp_path / "predictions.jsonl")
    assert len(rows) == 48 and all(r["status"] == "ok" for r in rows)
    assert _mae(rows) < MAE_BOUND
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"]["images"] == 48 and summary["counts"]["faces"] == 48
    assert summary["model"]["sha256"] == rows[0]["model_sha256"]
    assert summary["execution"]["onnx_provider"] == "CPUExecutionProvider"
    assert summary["provenance"]["versions"]["onnxruntime"]
    one = json.loads((tmp_path / f"{rows[0]['image']}.json").read_text())
    face = one["faces"][0]
    assert {"box", "landmarks", "score", "age", "age_std", "model", "model_sha256"} <= face.keys()
    if faces == "detect":
        assert len(face["landmarks"]) == 5 and face["score"] > 0.9


def test_save_raw_writes_the_distribution(shared_faces: Path, tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    chip = next(iter(sorted(shared_faces.glob("*.jpg"))))
    shutil.copy(chip, src / chip.name)
    result = CliRunner().invoke(
        main, ["predict", str(src), "--out", str(tmp_path / "out"), "--save-raw"]
    )
    assert result.exit_code == 0, result.output
    face = _read_jsonl(tmp_path / "out" / "predictions.jsonl")[0]
    probs = np.array(face["raw"]["age"]["probabilities"])
    assert probs.shape == (81,) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    bins = np.array([0.25, *range(1, 81)])
    assert probs @ bins == pytest.approx(face["age"], abs=1e-2)


def test_bad_inputs_are_recorded_and_the_run_goes_on(
    face_rgb: np.ndarray, face_chips: list[Path], tmp_path: Path
):
    src = tmp_path / "in"
    written = write_bad_inputs(src, face_rgb)
    shutil.copy(face_chips[5], src / "good.JPG")  # upper-case extension is still an image
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(src), "--out", str(out)])
    assert result.exit_code == EXIT_PARTIAL, result.output
    rows = {r["image"]: r for r in _read_jsonl(out / "predictions.jsonl")}
    for name in written:
        if (src / name).is_dir():
            continue  # a directory named like an image is walked as a folder, not read
        row = rows[name]
        if name in EXPECTED_DECODE_FAILURES:
            assert row["status"] == "failed" and row["error"], name
            assert "\n" not in row["error"]
        elif name == "noface.jpg":
            assert row["status"] == "no_face" and row["error"] == "no face found"
        else:
            assert row["status"] == "ok", (name, row)
    assert rows["good.JPG"]["status"] == "ok"
    # the rotated photo is read upright: same face, same age as the plain one (JPEG noise aside)
    assert rows["exif_rotated.jpg"]["age"] == pytest.approx(rows["gray.jpg"]["age"], abs=6)
    upright = json.loads((out / "exif_rotated.jpg.json").read_text())
    assert upright["width"] == face_rgb.shape[1] and upright["height"] == face_rgb.shape[0]
    eyes = np.array(upright["faces"][0]["landmarks"][:2])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.15 * abs(eyes[0, 0] - eyes[1, 0])  # eyes level
    # the huge photo: found after downscaling, reported in original pixels
    huge = json.loads((out / "huge.jpg.json").read_text())
    assert (huge["width"], huge["height"]) == (6000, 4000)
    assert huge["faces"] and huge["faces"][0]["box"][2] > 1600
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["images_failed"] == sum(
        1 for n in written if n in EXPECTED_DECODE_FAILURES and not (src / n).is_dir()
    )
    assert summary["counts"]["images_no_face"] == 1
    # the terminal names the files and the reasons, one line each
    assert "empty.jpg" in result.output and "no face found" in result.output


def _folder_of_chips(face_chips: list[Path], dest: Path, n: int) -> Path:
    for i, chip in enumerate(face_chips[:n]):
        sub = dest / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(chip, sub / chip.name)
    return dest


def test_interrupted_run_resumes_to_identical_outputs(face_chips: list[Path], tmp_path: Path):
    src = _folder_of_chips(face_chips, tmp_path / "in", 12)
    full = tmp_path / "full"
    in_fours = ExecutionConfig(batch_size=4)
    run_predict(PredictConfig(input=src, out=full, execution=in_fours))

    part = tmp_path / "part"
    advanced = 0

    def interrupt_after_five(event: str, amount: int) -> None:
        nonlocal advanced
        if event == "advance":
            advanced += amount
            if advanced >= 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_predict(
            PredictConfig(input=src, out=part, execution=in_fours),
            progress=interrupt_after_five,
        )
    written = sorted(part.rglob("*.jpg.json"))
    assert 5 <= len(written) < 12
    assert not (part / "summary.json").exists()
    (part / "a" / ".leftover.jpg.json.tmp-99").write_text("{half")  # a write cut short

    outcome = run_predict(PredictConfig(input=src, out=part, execution=in_fours, resume=True))
    assert outcome.summary["counts"]["skipped_resumed"] == len(written)
    assert outcome.summary["counts"]["images"] == 12
    assert (part / "predictions.jsonl").read_text() == (full / "predictions.jsonl").read_text()
    for path in sorted(full.rglob("*.jpg.json")):
        assert json.loads(path.read_text()) == json.loads(
            (part / path.relative_to(full)).read_text()
        )
    assert not list(part.rglob("*.tmp-*"))


def test_resume_refuses_a_different_model(face_chips: list[Path], tmp_path: Path):
    src = _folder_of_chips(face_chips, tmp_path / "in", 2)
    out = tmp_path / "out"
    run_predict(PredictConfig(input=src, out=out, faces="none"))
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(src), "--out", str(out)])  # detect now
    assert result.exit_code == 1 and "holds another run" in result.output
    assert "settings.faces: 'none' there, 'detect' here" in result.output
    assert "predict" not in result.output.splitlines()[0]  # refused before any bar was drawn
    (out / "my-notes.json").write_text('{"mine": true}')
    result = runner.invoke(main, ["predict", str(src), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "my-notes.json").exists()  # --overwrite removes only what agebench wrote
    assert all(r["landmarks"] for r in _read_jsonl(out / "predictions.jsonl"))


def test_composed_group_photo_gets_each_face_and_its_own_age(
    face_chips: list[Path], tmp_path: Path
):
    """Paste chips of very different ages at known places; each box must get its own age."""
    picks = [min(face_chips, key=lambda p: abs(chip_age(p) - age)) for age in (3, 28, 75)]
    canvas = Image.new("RGB", (1400, 800), (128, 120, 110))
    placed = []  # (box, chip)
    for chip, (x, y, size) in zip(
        picks, [(60, 120, 260), (520, 300, 360), (1000, 80, 300)], strict=True
    ):
        canvas.paste(Image.open(chip).convert("RGB").resize((size, size)), (x, y))
        placed.append(((x, y, x + size, y + size), chip))
    src = tmp_path / "group"
    src.mkdir()
    canvas.save(src / "group.jpg", quality=95)
    singles = tmp_path / "singles"
    singles.mkdir()
    for _, chip in placed:
        shutil.copy(chip, singles / chip.name)

    run_predict(PredictConfig(input=src, out=tmp_path / "out"))
    run_predict(PredictConfig(input=singles, out=tmp_path / "single-out"))
    faces = json.loads((tmp_path / "out" / "group.jpg.json").read_text())["faces"]
    alone = {
        r["image"]: r["age"] for r in _read_jsonl(tmp_path / "single-out" / "predictions.jsonl")
    }
    assert len(faces) == 3
    for (x1, y1, x2, y2), chip in placed:
        inside = [
            f
            for f in faces
            if x1 <= (f["box"][0] + f["box"][2]) / 2 <= x2
            and y1 <= (f["box"][1] + f["box"][3]) / 2 <= y2
        ]
        assert len(inside) == 1, (chip.name, faces)
        age = inside[0]["age"]
        others = [a for name, a in alone.items() if name != chip.name]
        # closer to this chip's own prediction than to any other chip's
        assert all(abs(age - alone[chip.name]) < abs(age - other) for other in others), (
            chip.name,
            age,
            alone,
        )
    # largest first
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert areas == sorted(areas, reverse=True)


def test_max_faces_keeps_the_largest(face_chips: list[Path], tmp_path: Path):
    canvas = Image.new("RGB", (900, 500), (90, 90, 90))
    canvas.paste(Image.open(face_chips[10]).convert("RGB").resize((300, 300)), (40, 100))
    canvas.paste(Image.open(face_chips[20]).convert("RGB").resize((180, 180)), (600, 150))
    src = tmp_path / "in"
    src.mkdir()
    canvas.save(src / "two.png")
    result = CliRunner().invoke(
        main, ["predict", str(src), "--out", str(tmp_path / "o"), "--max-faces", "1"]
    )
    assert result.exit_code == 0, result.output
    faces = json.loads((tmp_path / "o" / "two.png.json").read_text())["faces"]
    assert len(faces) == 1 and faces[0]["box"][0] < 300


def test_extra_heads_are_reported(tmp_path: Path):
    """A model with a gender head: both heads decoded, both in every output file."""
    from tests.fixtures.tiny_models import write_manifest

    heads = (
        '[[heads]]\nname = "age"\noutput = "scores"\ndecoder = "regression"\n'
        "[heads.params]\nscale = 0.5\n"
        '[[heads]]\nname = "gender"\noutput = "gender_logits"\ndecoder = "classification"\n'
        '[heads.params]\nlabels = ["female", "male"]\n'
    )
    manifest = write_manifest(
        tmp_path, gender=True, decoder_block=heads, crop_block='[crop]\npolicy = "none"\n'
    )
    src = tmp_path / "in"
    src.mkdir()
    # red 60 -> age 30; green 10 < blue 200 -> "male" with probability ~1
    Image.new("RGB", (32, 32), (60, 10, 200)).save(src / "x.png")
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(src),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(manifest),
            "--faces",
            "none",
            "--save-raw",
        ],
    )
    assert result.exit_code == 0, result.output
    row = _read_jsonl(tmp_path / "o" / "predictions.jsonl")[0]
    assert row["age"] == pytest.approx(30.0)
    assert row["age_std"] is None
    assert row["gender"] == "male" and row["gender_probability"] == pytest.approx(1.0)
    assert set(row["raw"]) == {"age", "gender"}


def test_ready_crops_get_the_margin_the_model_wants(tmp_path: Path):
    """A box-policy model (margin 0.4) on tight crops: the crop is framed as in training, with
    black outside the image, so a uniform face shrinks to 1 / 1.8 of the crop's side."""
    from tests.fixtures.tiny_models import write_manifest

    manifest = write_manifest(tmp_path)  # box policy, margin 0.4, age = mean red
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (90, 90), (180, 0, 0)).save(src / "tight.png")
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main, ["predict", str(src), "--out", str(out), "--model", str(manifest), "--faces", "none"]
    )
    assert result.exit_code == 0, result.output
    row = _read_jsonl(out / "predictions.jsonl")[0]
    assert row["age"] == pytest.approx(180 / 1.8**2, rel=0.03)
    # told that the crops already carry a 0.4 margin, nothing is added
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(src),
            "--out",
            str(out),
            "--model",
            str(manifest),
            "--faces",
            "none",
            "--crop-margin",
            "0.4",
            "--overwrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert _read_jsonl(out / "predictions.jsonl")[0]["age"] == pytest.approx(180, rel=0.01)
    summary = json.loads((out / "summary.json").read_text())
    assert "0.4 margin" in summary["execution"]["ready_crops"]
