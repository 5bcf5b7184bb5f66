"""Where the terminal's output lands: results on stdout, progress, status and warnings on
stderr; ``--quiet``, ``-v``, ``-V`` and ``--json``; real runs on the shared face chips."""

from __future__ import annotations

import ast
import json
import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agebench.cli import main
from agebench.cli.common import set_verbosity
from agebench.core.version import __version__

REPO = Path(__file__).resolve().parents[2]
#: the library's one sanctioned ``print``: a worker subprocess whose stdout is its JSON answer
PRINT_ALLOWED = {REPO / "agebench" / "speed" / "baseline_worker.py"}


@pytest.fixture
def chips(face_chips: list[Path], tmp_path: Path) -> Path:
    """Three real face chips in a folder of their own."""
    folder = tmp_path / "chips"
    folder.mkdir()
    for path in face_chips[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def invoke(args: list[str], cwd: Path) -> Result:
    """The command run in ``cwd`` (its default output folders land there), streams apart."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(main, args)


def test_results_go_to_stdout_and_progress_to_stderr(chips: Path, tmp_path: Path):
    result = invoke(["predict", str(chips), "--faces", "none"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "images/s" in result.stdout  # the counts table
    assert "3/3 images" in result.stderr  # the progress bar
    assert "3/3 images" not in result.stdout  # no bar on stdout


def test_quiet_prints_results_only(chips: Path, tmp_path: Path):
    result = invoke(["--quiet", "predict", str(chips), "--faces", "none"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "images/s" in result.stdout
    assert result.stderr == ""
    again = invoke(["-q", "predict", str(chips), "--faces", "none"], tmp_path)
    assert again.stderr == "" and "resumed" in again.stdout


def test_dash_v_logs_through_logging(capsys: pytest.CaptureFixture[str]):
    logger = logging.getLogger("agebench.runner.walk")
    try:
        set_verbosity(False, 1)
        logger.info("seen at -v")
        logger.debug("hidden at -v")
        set_verbosity(False, 2)
        logger.debug("seen at -vv")
        set_verbosity(False, 0)
        logger.info("hidden without -v")
    finally:
        set_verbosity(False, 0)
    err = capsys.readouterr().err
    assert "seen at -v" in err and "seen at -vv" in err
    assert "hidden" not in err


def test_dash_capital_v_is_the_version():
    for flag in ("-V", "--version"):
        result = CliRunner().invoke(main, [flag])
        assert result.exit_code == 0 and __version__ in result.stdout


def test_the_library_never_prints():
    offenders = []
    for path in sorted((REPO / "agebench").rglob("*.py")):
        if "cli" in path.relative_to(REPO / "agebench").parts or path in PRINT_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def _json(result: Result) -> object:
    """stdout parsed as one JSON document: ``--json`` puts nothing else there."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_is_the_only_thing_on_stdout(face_chips: list[Path], tmp_path: Path):
    chips = tmp_path / "chips"
    chips.mkdir()
    for path in face_chips[:3]:
        shutil.copy(path, chips / path.name)
    predicted = _json(invoke(["predict", str(chips), "--faces", "none", "--json"], tmp_path))
    assert isinstance(predicted, dict) and predicted["counts"]["faces"] == 3
    evaluated = invoke(
        ["eval", "-b", "utkface", "--root", str(chips), "--bootstrap", "100"], tmp_path
    )
    assert evaluated.exit_code == 0, evaluated.output
    args = ["eval", "-b", "utkface", "--root", str(chips), "--bootstrap", "100", "--json"]
    summary = _json(invoke(args, tmp_path))  # reused: the same JSON as a fresh run's
    assert isinstance(summary, dict) and summary["counts"]["scored"] == 3
    run = Path(summary["out"])
    shutil.copytree(run, tmp_path / "copy")
    args = ["compare", str(run), str(tmp_path / "copy"), "--bootstrap", "100", "--json"]
    compared = _json(invoke(args, tmp_path))
    assert isinstance(compared, dict) and len(compared["models"]) == 2
    assert Path(compared["out"]).is_dir()
    fits_80(CliRunner().invoke(main, args[:-1], env={"COLUMNS": "80"}))


def test_listings_as_json():
    models = _json(CliRunner().invoke(main, ["models", "list", "--json"]))
    assert isinstance(models, list)
    assert {"name", "origin", "weights_present"} <= set(models[0])
    assert "dlib-age-v1" in {m["name"] for m in models}
    benches = _json(CliRunner().invoke(main, ["benches", "list", "--json"]))
    assert isinstance(benches, list) and "utkface" in {b["name"] for b in benches}


def test_a_handful_of_images_prints_each_face_age(face_chips: list[Path], tmp_path: Path):
    few = tmp_path / "few"
    few.mkdir()
    for path in face_chips[:3]:
        shutil.copy(path, few / path.name)
    result = invoke(["predict", str(few), "--faces", "none", "--out", "few-out"], tmp_path)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "±" in line}
    assert set(rows) == {p.name for p in face_chips[:3]}  # one face each, file named
    assert all("0, 0, 200, 200" in line for line in rows.values())  # the chip is the box

    many = tmp_path / "many"
    many.mkdir()
    for path in face_chips[:21]:
        shutil.copy(path, many / path.name)
    result = invoke(["predict", str(many), "--faces", "none", "--out", "many-out"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "±" not in result.stdout and "images/s" in result.stdout  # the summary only


def test_each_input_gets_its_own_default_folder(face_chips: list[Path], tmp_path: Path):
    for name, chips in (("first", face_chips[:2]), ("second", face_chips[2:4])):
        (tmp_path / name).mkdir()
        for path in chips:
            shutil.copy(path, tmp_path / name / path.name)
    for name in ("first", "second"):
        result = invoke(["-q", "predict", name, "--faces", "none"], tmp_path)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "reports" / f"predict-{name}" / "summary.json").is_file()
    # a refusal stays right where one folder is given twice, and names only what differs
    args = ["-q", "predict", "second", "--faces", "none", "--out", "reports/predict-first"]
    refused = invoke(args, tmp_path)
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "settings.input:" in refused.stderr and "'" + str(tmp_path / "second") in refused.stderr
    assert "settings.faces" not in refused.stderr and "min_face_size" not in refused.stderr


def fits_80(result: Result) -> None:
    """stdout laid out for an 80-column terminal: no line longer, no cell cut to '…'."""
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, result.stdout
    assert "…" not in result.stdout  # rich's mark of a cut cell


def test_listings_fit_80_columns():
    for args in (["models", "list"], ["benches", "list"]):
        result = CliRunner().invoke(main, args, env={"COLUMNS": "80"})
        fits_80(result)
    models = CliRunner().invoke(main, ["models", "list"], env={"COLUMNS": "80"}).stdout
    assert "source" in models and "built in" in models  # where each model comes from
    assert "agebench models pull yu4u-wrn-16-8" in models  # the hint keeps its command whole
    benches = CliRunner().invoke(main, ["benches", "list"], env={"COLUMNS": "80"}).stdout
    assert len(benches.splitlines()) < 30  # one line or two a benchmark, not ~70
    wide = CliRunner().invoke(main, ["benches", "list", "--wide"], env={"COLUMNS": "200"})
    assert "protocols" in wide.stdout and "protocols" not in benches


def test_piped_output_is_not_hard_wrapped(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(main, ["benches", "list", "--wide"])  # stdout: not a terminal
    row = next(line for line in result.stdout.splitlines() if " facebase " in line)
    assert "Unified facial age estimation benchmark (Paplham et al., CVPR 2024)" in row


def test_benches_info_has_no_internal_note():
    result = CliRunner().invoke(main, ["benches", "info", "csv"])
    assert result.exit_code == 0, result.output
    assert "runner should" not in result.stdout and "csv_generic" not in result.stdout
    assert "--option crop=tight" in result.stdout  # what the note now says: the user's fix


def test_csv_faces_none_names_its_fix_and_a_bad_column_is_a_usage_error(
    face_chips: list[Path], tmp_path: Path
):
    (tmp_path / "labels.csv").write_text(f"path,age\n{face_chips[0].name},30\n")
    args = ["eval", "-b", "csv", "--root", str(face_chips[0].parent)]
    args += ["--labels", str(tmp_path / "labels.csv"), "--bootstrap", "100"]
    refused = invoke([*args, "--faces", "none", "--out", "x"], tmp_path)
    assert refused.exit_code == 1 and "--option crop=tight" in refused.stderr
    assert "Traceback" not in refused.output
    malformed = invoke([*args, "--column", "age"], tmp_path)
    assert malformed.exit_code == 2 and "--column" in malformed.stderr
    assert "KEY=VALUE" in malformed.stderr and "Usage:" in malformed.stderr


def test_unknown_epsilon_reads_as_the_report_writes_it(face_chips: list[Path], tmp_path: Path):
    chips = tmp_path / "chips"
    chips.mkdir()
    for path in face_chips[:3]:
        shutil.copy(path, chips / path.name)
    args = ["-q", "eval", "-b", "utkface", "--root", str(chips), "--bootstrap", "100"]
    result = invoke(args, tmp_path)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "│    age" in line)
    (folder,) = {p.parent for p in (tmp_path / "reports").rglob("report.md")}
    report_row = next(
        line for line in (folder / "report.md").read_text().splitlines() if line.startswith("| age")
    )
    assert report_row.rstrip(" |").endswith("n/a")  # UTKFace has no apparent-age spread
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[7] == "n/a"  # target, MAE, CI, RMSE, bias, CS@5, epsilon
