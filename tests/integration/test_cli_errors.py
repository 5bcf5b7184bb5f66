"""Errors that stop a run at once: one clear line, no traceback, non-zero exit."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agebench.cli import main
from tests.fixtures.tiny_models import write_manifest


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, text


def test_missing_input_folder(tmp_path: Path):
    _assert_one_line_error(
        _run("predict", str(tmp_path / "nope"), "--out", str(tmp_path / "o")),
        "nope",
        "input folder not found",
    )


def test_unknown_model_suggests(tmp_path: Path):
    _assert_one_line_error(
        _run("predict", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "dlib-age-v2"),
        "unknown model 'dlib-age-v2'",
        "did you mean 'dlib-age-v1'",
    )


def test_sha256_mismatch_stops(tmp_path: Path):
    manifest = write_manifest(tmp_path, sha="1" * 64)
    _assert_one_line_error(
        _run("predict", str(tmp_path), "--out", str(tmp_path / "o"), "--model", str(manifest)),
        "tiny.onnx",
        "does not match",
    )


def test_invalid_manifest_stops(tmp_path: Path):
    manifest = write_manifest(tmp_path)
    manifest.write_text(manifest.read_text().replace('layout = "NCHW"', 'layout = "NC"'))
    _assert_one_line_error(
        _run("predict", str(tmp_path), "--out", str(tmp_path / "o"), "--model", str(manifest)),
        str(manifest),
        "'layout' must be one of",
    )


def test_onnx_without_manifest(tmp_path: Path):
    write_manifest(tmp_path)
    _assert_one_line_error(
        _run(
            "predict",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path / "tiny.onnx"),
        ),
        "--manifest",
    )


def test_models_info_verifies_sha256():
    result = _run("models", "info", "dlib-age-v1")
    assert result.exit_code == 0, result.output
    assert "sha256_check: ok" in result.output and "CC0-1.0" in result.output


def test_models_info_reports_mismatch(tmp_path: Path):
    manifest = write_manifest(tmp_path, sha="2" * 64)
    result = _run("models", "info", str(manifest))
    assert result.exit_code == 1 and "MISMATCH" in result.output


def test_models_list():
    result = _run("models", "list")
    assert result.exit_code == 0 and "dlib-age-v1" in result.output
