"""The type checker (``[tool.mypy]`` in pyproject.toml) is clean on every layer, from the CLI and
the public API down to the core, checked on every full test run so that CI enforces it, and it
does catch a wrong file.

A cold run (no ``.mypy_cache``) takes about half a minute on two cores, hence ``slow``; later
runs reuse the cache beside the checkout and take about a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny_models import REPO

pytestmark = pytest.mark.slow


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_configured_files_type_check():
    result = _mypy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_a_wrong_file_is_flagged(tmp_path: Path):
    """The check can fail: a wrong return type, a misuse of a core type and an unannotated
    function (the configuration disallows those) are each reported."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from agebench.core.registry import Registry\n\n\n"
        "def name_length(name: str) -> str:\n    return len(name)\n\n\n"
        "def untyped(value):\n    return value\n\n\n"
        'numbers: Registry[int] = Registry("number")\n'
        'numbers.register("one", 1.5j)\n'
    )
    result = _mypy(str(wrong))
    assert result.returncode == 1, result.stdout + result.stderr
    for code in ("[return-value]", "[no-untyped-def]", "[arg-type]"):
        assert code in result.stdout, result.stdout
    assert "Found 3 errors in 1 file" in result.stdout, result.stdout
