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
    assert "4 kept, 0 broken" in result.stdout


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


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def _import_graph() -> dict[str, set[str]]:
    """Every agebench module and the agebench modules it imports, imports inside functions and
    under ``TYPE_CHECKING`` included (grimp, which import-linter uses, reads them all)."""
    import grimp

    built = grimp.build_graph("agebench", cache_dir=None)
    return {m: built.find_modules_directly_imported_by(m) for m in built.modules}


def test_no_import_cycles_at_all():
    """The layers contract orders layers; this also forbids cycles inside one layer (two
    modules of faces/, say), where a late import inside a function would otherwise hide one."""
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
