"""Layer contracts (``[tool.importlinter]`` in pyproject.toml), checked on every test run so
that CI enforces them: every layer imports only the layers below it (imports inside functions
included, every module in a layer), only the CLI imports click or rich, and the core loads no
model runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures.tiny_models import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_layer_contracts_hold():
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_broken_contract_fails(tmp_path: Path):
    """The check can fail: the command line does import click."""
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_package = agebench\ninclude_external_packages = True\n\n"
        "[importlinter:contract:cli]\nname = cli without click\ntype = forbidden\n"
        "source_modules =\n    agebench.cli\nforbidden_modules =\n    click\n"
    )
    result = _lint("--config", str(config))
    assert result.returncode == 1 and "BROKEN" in result.stdout, result.stdout
