"""Real benchmark copies read as published (issue 11, section 7) and label files that are not
UTF-8 text (section 4): every layout is built here, as its authors publish it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from agebench.benchmarks.common import read_label_text, resolve_images
from agebench.benchmarks.registry import get_benchmark
from agebench.benchmarks.spec import BenchmarkError, LoadOptions, Record
from agebench.cli import main
from agebench.core.metrics.groups import predicted_group
from agebench.findings import bias_findings
from agebench.models.manifest import load_manifest
from agebench.runner.eval_rows import eval_row
from agebench.runner.evaluate import EvalConfig, EvalRun
from agebench.runner.faces import PreparedImage
from tests.conftest import chip_age
from tests.fixtures.bench_layouts import AdienceRow, AppaRow, make_aaf, make_adience, make_appa_real
from tests.fixtures.bench_layouts_b import (
    make_csv,
    make_facebase,
    make_imdb_wiki,
    make_lagenda,
    make_morph,
)
from tests.fixtures.tiny_models import DLIB_MANIFEST

FGNET_JSON = "FG-Net_aligned.json"
#: two entries as FaceBase's FG-Net_aligned.json writes them; the archive spells the first .JPG
FGNET_ENTRIES = [
    {"img_path": "FG-NET/images/009A16b.jpg", "id_num": 9, "age": 16, "gender": "M",
     "database": "FG-NET", "folder": 9, "aligned_bbox": [21, 69, 569, 103, 535, 652, -13, 617]},
    {"img_path": "FG-NET/images/034A25.JPG", "id_num": 34, "age": 25, "gender": "F",
     "database": "FG-NET", "folder": 34, "aligned_bbox": [10, 10, 90, 10, 90, 90, 10, 90]},
]  # fmt: skip


def _fgnet_copy(root: Path) -> Path:
    """FaceBase's JSON beside FGNET.zip's images, whose names use the archive's letter case."""
    make_facebase(root, FGNET_ENTRIES, file=FGNET_JSON, omit=["FG-NET/images/009A16b.jpg"])
    (root / "FG-NET/images/009A16b.JPG").write_bytes(
        (root / "FG-NET/images/034A25.JPG").read_bytes()
    )
    return root


# --- 1. facebase scores FG-NET: the protocol without splits gets no default split -------------


@pytest.mark.parametrize("protocol", [None, "all"])
def test_eval_scores_facebase_fgnet_with_and_without_protocol_all(
    tmp_path: Path, protocol: str | None
) -> None:
    root = _fgnet_copy(tmp_path / "data")
    config = EvalConfig(
        bench="facebase",
        root=root,
        labels=Path(FGNET_JSON),
        protocol=protocol,
        out_root=tmp_path / "reports",
    )
    run = EvalRun(config)  # before: "use --protocol all" / "--protocol all ...; omit --split"
    assert (run.protocol, run.split) == ("all", None)
    assert [(r.subject, r.fold) for r in run.data.records] == [("9", "9"), ("34", "34")]
    assert "all-all" in run.out.as_posix()


def test_a_protocol_without_splits_has_no_default_split() -> None:
    spec = get_benchmark("facebase")
    assert spec.default_split_for("all") is None
    assert spec.default_split_for("split0") == "test"
    assert spec.default_split == "test"
    assert get_benchmark("aaf").default_split_for("split") == "val"


def test_an_explicit_split_with_protocol_all_is_still_refused(tmp_path: Path) -> None:
    root = _fgnet_copy(tmp_path)
    with pytest.raises(BenchmarkError, match="omit --split"):
        get_benchmark("facebase").load(
            LoadOptions(root=root, labels=Path(FGNET_JSON), protocol="all", split="test")
        )


# --- 2. image paths resolve ignoring letter case when exactly one file matches ----------------


def test_facebase_finds_images_whose_case_differs_from_the_json(tmp_path: Path) -> None:
    root = _fgnet_copy(tmp_path)
    data = get_benchmark("facebase").load(LoadOptions(root=root, labels=Path(FGNET_JSON)))
    assert [r.image for r in data.records] == [
        "FG-NET/images/009A16b.JPG",  # the file as it is on disk
        "FG-NET/images/034A25.JPG",
    ]
    assert data.problems == []  # before: "label for FG-NET/images/009A16b.jpg, but ... missing"


def test_case_is_resolved_in_folders_too_and_for_every_loader(tmp_path: Path) -> None:
    written = make_csv(tmp_path, [("Photos/A.JPG", 31, "p1", "f", 1, 2, 30, 40)])
    assert written.images
    text = (tmp_path / "labels.csv").read_text().replace("Photos/A.JPG", "photos/a.jpg")
    (tmp_path / "labels.csv").write_text(text)
    data = get_benchmark("csv").load(
        LoadOptions(
            root=tmp_path, labels=Path("labels.csv"), columns={"path": "file", "age": "years"}
        )
    )
    assert [r.image for r in data.records] == ["Photos/A.JPG"]
    assert data.problems == []


def test_an_ambiguous_case_match_is_a_problem_naming_the_candidates(tmp_path: Path) -> None:
    for name in ("x.JPG", "x.Jpg"):
        (tmp_path / name).write_bytes(b"jpeg")
    records = [Record(image="x.jpg", age=30.0, source="labels.csv:2")]
    resolved, problems = resolve_images(records, tmp_path)
    assert [r.image for r in resolved] == ["x.jpg"]  # kept as labelled: a failure, not a guess
    assert [str(p) for p in problems] == [
        "labels.csv:2: label for x.jpg, but several files match it ignoring case: x.JPG, x.Jpg"
    ]


def test_an_exact_name_wins_over_its_case_variants(tmp_path: Path) -> None:
    (tmp_path / "Sub").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jpg").write_bytes(b"jpeg")
    records = [Record(image="sub/A.JPG", age=30.0, source="l:2")]
    resolved, problems = resolve_images(records, tmp_path)
    assert ([r.image for r in resolved], problems) == (["sub/a.jpg"], [])


# --- 3. All-Age-Faces' aligned faces carry a margin: scored like the same face as a chip ------


#: the published aligned faces' framing: the face spans 57% of the frame, m = (1/0.57 - 1) / 2
AAF_FRAMING = 0.377


def _framed(chip: Path, margin: float) -> Image.Image:
    """The chip (a tight face) centred in a black frame ``margin`` of its size on each side."""
    face = Image.open(chip).convert("RGB")
    width, height = face.size
    pad_x, pad_y = round(width * margin), round(height * margin)
    frame = Image.new("RGB", (width + 2 * pad_x, height + 2 * pad_y))
    frame.paste(face, (pad_x, pad_y))
    return frame


def _predictions(out_root: Path) -> dict[str, float]:
    out = next(out_root.rglob("predictions.jsonl"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {Path(r["image"]).name[:5]: r["pred_age"] for r in rows}  # keyed by serial


@pytest.mark.slow
def test_aaf_aligned_faces_are_reframed_like_the_tight_face_inside(
    face_chips: list[Path], tmp_path: Path
) -> None:
    chips = [c for c in face_chips if 20 <= chip_age(c) <= 60][:8]
    utk = tmp_path / "utk" / "UTKFace"
    utk.mkdir(parents=True)
    aaf_rows, images = [], {}
    for serial, chip in enumerate(chips):
        shutil.copy(chip, utk / f"{serial:05d}_0_0_0.jpg.chip.jpg")
        name = f"{serial:05d}A{chip_age(chip):02d}.jpg"
        aaf_rows.append((name, 0))
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _framed(chip, AAF_FRAMING).save(path, quality=95)
        images[f"aglined faces/{name}"] = path
    make_aaf(tmp_path / "aaf", val=aaf_rows, originals=False, images=images)
    for bench, root in (("utkface", tmp_path / "utk"), ("aaf", tmp_path / "aaf")):
        EvalRun(EvalConfig(bench=bench, root=root, out_root=tmp_path / bench, n_boot=10)).run()
    tight, framed = _predictions(tmp_path / "utkface"), _predictions(tmp_path / "aaf")
    gaps = [abs(tight[serial] - framed[serial]) for serial in tight]
    # declared tight, the frame itself was taken for the face: ages off by years
    assert float(np.mean(gaps)) < 1.0, gaps


# --- 4. user text printed through rich keeps its brackets -------------------------------------


def test_an_error_with_brackets_prints_literally(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["eval", "--bench", "utkface", "--root", str(tmp_path / "[age]_missing")]
    )
    assert result.exit_code == 1
    assert "[age]_missing" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_utkface_problem_lines_keep_their_bracketed_field_names(
    face_chips: list[Path], tmp_path: Path
) -> None:
    root = tmp_path / "utk" / "UTKFace"
    root.mkdir(parents=True)
    for chip in face_chips[:3]:
        shutil.copy(chip, root / chip.name)
    shutil.copy(face_chips[3], root / "30_1_2.jpg.chip.jpg")  # three fields, not four
    result = CliRunner().invoke(
        main,
        ["eval", "--bench", "utkface", "--root", str(root.parent), "--out-root",
         str(tmp_path / "reports"), "--bootstrap", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # the console wraps long lines
    # before: "expected 4 (___.jpg)": rich took [age], [gender]... for markup
    assert "30_1_2.jpg.chip.jpg: malformed label" in printed
    assert "expected 4 ([age]_[gender]_[race]_[datetime].jpg)" in printed, result.output


# --- 5. a whole-benchmark bias over 10 years is a finding everywhere --------------------------


def test_bias_findings_thresholds() -> None:
    def summary(bias: float, n: int = 100, mae: float = 21.0) -> dict[str, Any]:
        metrics = {"age": {"bias": bias, "mae": mae, "n_scored": n}}
        return {"metrics": metrics, "benchmark": {"name": "morph"}}

    assert bias_findings(summary(9.9)) == []
    assert bias_findings(summary(-9.9)) == []
    assert bias_findings(summary(20.6, n=5)) == []  # five faces accuse no labels
    (finding,) = bias_findings(summary(20.6, mae=20.7))
    assert finding["kind"] == "labels"
    assert "+20.6" in finding["message"] and "offset" in finding["message"]
    assert "column" in finding["message"] and "--option" in finding["message"]
    (low,) = bias_findings(summary(-12.0, mae=30.0))
    assert "-12.0" in low["message"] and "too high" in low["message"]


@pytest.mark.slow
def test_labels_shifted_by_21_give_a_finding_in_summary_terminal_and_report(
    face_chips: list[Path], tmp_path: Path
) -> None:
    root = tmp_path / "coral"
    (root / "imgs").mkdir(parents=True)
    lines = ["path,age"]
    adults = [c for c in face_chips if chip_age(c) >= 30][:12]
    for i, chip in enumerate(adults):
        shutil.copy(chip, root / "imgs" / f"{i:02d}.jpg")
        lines.append(f"imgs/{i:02d}.jpg,{chip_age(chip) - 21}")  # coral-cnn's UTKFace: age - 21
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main,
        ["eval", "--bench", "csv", "--root", str(root), "--labels", "labels.csv", "--option",
         "crop=tight", "--out-root", str(tmp_path / "reports"), "--bootstrap", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = next((tmp_path / "reports").rglob("summary.json")).parent
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["age"]["bias"] > 10
    (finding,) = [f for f in summary["findings"] if f["kind"] == "labels"]
    assert "label offset" in finding["message"]
    assert "labels:" in result.output and "label offset" in " ".join(result.output.split())
    assert "label offset" in " ".join((out / "report.md").read_text().split())


# --- 6. Adience rows carry the group the metrics score ----------------------------------------

ADIENCE = get_benchmark("adience").groups
RUN = "0123456789abcdef"


def _scored(face: dict[str, Any]) -> dict[str, Any]:
    item = PreparedImage(path=Path("a.jpg"), relative=Path("a.jpg"), faces=[face])
    record = Record(image="a.jpg", age=None, source="fold_0_data.txt:2", age_group=(25, 32))
    return eval_row(record, item, None, load_manifest(DLIB_MANIFEST), RUN, ADIENCE)


@pytest.mark.parametrize(
    ("face", "expected"),
    [
        ({"age": 30.0}, [25.0, 32.0]),  # an age model, mapped to its group
        ({"age": 35.0}, [25.0, 32.0]),  # in the gap 33-37: the nearest group, the younger
        ({"age": 28.5, "age_group": "(25, 32)"}, [25.0, 32.0]),  # Levi-Hassner's labels
        ({"age": 28.5, "age_group": "25-32"}, [25.0, 32.0]),
        ({"age": 70.0, "age_group": "60+"}, [60.0, 100.0]),  # a label naming no range
    ],
)
def test_adience_rows_carry_the_scored_group(face: dict[str, Any], expected: list[float]) -> None:
    row = _scored(face)
    assert row["pred_group"] == expected  # before: None for all but "lo-hi" labels
    assert row["pred_group"] == list(ADIENCE[predicted_group(row, ADIENCE)])


def test_a_failed_row_has_no_group() -> None:
    item = PreparedImage(path=Path("a.jpg"), relative=Path("a.jpg"), status="failed")
    record = Record(image="a.jpg", age=None, source="f:2", age_group=(25, 32))
    row = eval_row(record, item, None, load_manifest(DLIB_MANIFEST), RUN, ADIENCE)
    assert row["pred_group"] is None


# --- 7. label files that are not UTF-8 text: one line naming the file and line ----------------

Builder = Callable[[Path], tuple[str, dict[str, Any], Path]]


def _aaf(root: Path) -> tuple[str, dict[str, Any], Path]:
    make_aaf(root, val=[("00000A02.jpg", 0), ("00001A03.jpg", 1)])
    return "aaf", {}, root / "image sets" / "val.txt"


def _adience(root: Path) -> tuple[str, dict[str, Any], Path]:
    rows = [
        [AdienceRow(f"u{fold}", "10399646885_67c7d20df9_o.jpg", fold + 1, "(25, 32)", "f")]
        for fold in range(5)
    ]
    make_adience(root, rows)
    return "adience", {}, root / "fold_2_data.txt"


def _appa(root: Path) -> tuple[str, dict[str, Any], Path]:
    make_appa_real(root, {"test": [AppaRow("005613.jpg", 43, 39.394737, 5.349889)]})
    return "appa-real", {}, root / "gt_avg_test.csv"


def _csv(root: Path) -> tuple[str, dict[str, Any], Path]:
    make_csv(root)
    columns = {"path": "file", "age": "years"}
    return "csv", {"labels": Path("labels.csv"), "columns": columns}, root / "labels.csv"


def _facebase(root: Path) -> tuple[str, dict[str, Any], Path]:
    written = make_facebase(root)
    return "facebase", {"labels": written.labels[0]}, written.labels[0]


def _lagenda(root: Path) -> tuple[str, dict[str, Any], Path]:
    written = make_lagenda(root)
    return "lagenda", {}, written.labels[0]


def _mivolo_csv(root: Path) -> tuple[str, dict[str, Any], Path]:
    written = make_lagenda(root, file="annotations/test.csv")
    return "mivolo-csv", {"labels": Path("annotations/test.csv")}, written.labels[0]


def _morph(root: Path) -> tuple[str, dict[str, Any], Path]:
    written = make_morph(root)
    return "morph", {}, written.labels[0]


def _imdb_wiki(root: Path) -> tuple[str, dict[str, Any], Path]:
    written = make_imdb_wiki(root)
    return "imdb-wiki", {}, written.labels[0]


BUILDERS: dict[str, Builder] = {
    "aaf": _aaf,
    "adience": _adience,
    "appa-real": _appa,
    "csv": _csv,
    "facebase": _facebase,
    "lagenda": _lagenda,
    "mivolo-csv": _mivolo_csv,
    "morph": _morph,
    "imdb-wiki": _imdb_wiki,
}
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 8


def _latin1(original: bytes) -> bytes:
    """The same label file with an accented image name, saved as latin-1 (é is byte 0xe9)."""
    if b".jpg" in original and b"\0" not in original[:8192]:
        return original.replace(b".jpg", b"\xe9.jpg", 1)
    return "file,age\nJos\xe9.jpg,30\n".encode("latin-1")  # a .mat replaced by latin-1 text


def _load(bench: str, root: Path, options: dict[str, Any]) -> None:
    get_benchmark(bench).load(LoadOptions(root=root, **options))


def test_every_loader_with_a_label_file_is_covered() -> None:
    from agebench.benchmarks.registry import benchmarks

    without_label_files = {"utkface", "fgnet"}  # their labels are in the image names
    assert set(benchmarks().names()) - without_label_files == set(BUILDERS)


@pytest.mark.parametrize("bench", sorted(BUILDERS))
@pytest.mark.parametrize("kind", ["binary", "latin-1"])
def test_a_label_file_that_is_not_utf8_is_one_line_naming_it(
    tmp_path: Path, bench: str, kind: str
) -> None:
    name, options, label = BUILDERS[bench](tmp_path)
    assert name == bench
    _load(bench, tmp_path, options)  # the layout as published loads
    content = BINARY if kind == "binary" else _latin1(label.read_bytes())
    label.write_bytes(content)
    with pytest.raises(BenchmarkError) as caught:  # before: UnicodeDecodeError
        _load(bench, tmp_path, options)
    message = str(caught.value)
    assert "\n" not in message and str(label) in message
    if kind == "latin-1" and label.suffix != ".mat":
        line = content.count(b"\n", 0, content.index(b"\xe9")) + 1
        assert f"{label}:{line}: " in message and "not UTF-8" in message and "0xe9" in message


def test_read_label_text_says_binary_and_takes_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(BINARY)
    with pytest.raises(BenchmarkError, match="is a binary file, not text"):
        read_label_text(path)
    path.write_bytes(b"\xef\xbb\xbfpath,age\n")
    assert read_label_text(path) == "path,age\n"


def test_the_cli_says_it_in_one_line_and_exits_1(tmp_path: Path) -> None:
    label = _csv(tmp_path)[2]
    label.write_bytes(_latin1(label.read_bytes()))
    result = CliRunner().invoke(
        main,
        ["eval", "--bench", "csv", "--root", str(tmp_path), "--labels", "labels.csv",
         "--column", "path=file", "--column", "age=years", "--out-root", str(tmp_path / "r")],
    )  # fmt: skip
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not UTF-8" in lines[0], result.output
