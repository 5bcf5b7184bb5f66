"""The ``agebench.cli`` package: its modules import alone and without a cycle, the commands
are a shell over the public API, and eval and compare share their benchmark options."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import agebench
from agebench.cli import main

REPO = Path(__file__).resolve().parents[2]
CLI_DIR = REPO / "agebench" / "cli"
MODULES = sorted(
    "agebench.cli" if p.stem == "__init__" else f"agebench.cli.{p.stem}"
    for p in CLI_DIR.glob("*.py")
)
#: the options of ``benchmark_options``: which data a run scores
BENCH_OPTIONS = (
    "--bench",
    "--root",
    "--split",
    "--protocol",
    "--labels",
    "--column",
    "--option",
    "--folds",
    "--seed",
    "--faces",
)


def _cli_imports(module: str) -> set[str]:
    """The ``agebench.cli*`` modules ``module`` imports, anywhere in its body."""
    path = CLI_DIR / ("__init__.py" if module == "agebench.cli" else f"{module.split('.')[-1]}.py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # ``from agebench import cli`` imports the package ``agebench.cli``, ``from
            # agebench.cli import common`` the module ``common`` (and the package first)
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found.update(names)
    return found & set(MODULES)


def test_the_cli_modules_import_no_cycle():
    assert len(MODULES) >= 8, MODULES  # the package, common and one module per command group
    graph = {module: _cli_imports(module) for module in MODULES}
    # only the package itself registers commands: no command module imports it back
    assert not [m for m, deps in graph.items() if "agebench.cli" in deps], graph
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in graph[module]:
            visit(dep, (*path, module))
        done.add(module)

    for module in MODULES:
        visit(module, ())


@pytest.mark.parametrize("module", MODULES)
def test_each_cli_module_imports_alone(module: str):
    """Imported first in a fresh interpreter, each module loads (a cycle through a
    half-initialised module fails here) and the package then has every command."""
    code = (
        f"import {module}\nfrom agebench.cli import main\nprint(' '.join(sorted(main.commands)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "bench",
        "benches",
        "compare",
        "eval",
        "export",
        "models",
        "predict",
        "train",
    ]


def _options(command: click.Command) -> dict[str, click.Option]:
    return {
        opt: param
        for param in command.params
        if isinstance(param, click.Option)
        for opt in param.opts
        if opt.startswith("--")
    }


def _help(*args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_compare_has_the_execution_options():
    text = _help("compare")
    for flag in ("--backend", "--precision", "--tuning"):
        assert flag in text, text
    assert "[auto|onnxruntime|torch]" in text and "[auto|manifest|retune]" in text


def test_eval_and_compare_share_the_benchmark_options():
    eval_text, compare_text = _help("eval"), _help("compare")

    def lines(text: str) -> dict[str, str]:
        """The help line of each benchmark option."""
        out = {}
        for line in text.splitlines():
            words = line.replace(",", " ").split()
            flag = next((w for w in words[:2] if w in BENCH_OPTIONS), None)
            if flag:  # eval requires the benchmark, compare only for the models it runs
                out[flag] = " ".join(words).removesuffix(" [required]")
        return out

    assert set(lines(eval_text)) == set(BENCH_OPTIONS)
    assert lines(eval_text) == lines(compare_text)
    # the same click definitions (type, default, multiple), eval requiring the benchmark
    evals, compares = _options(main.commands["eval"]), _options(main.commands["compare"])
    for flag in BENCH_OPTIONS:
        a, b = evals[flag], compares[flag]
        assert (a.name, a.type.to_info_dict(), a.default, a.multiple, a.help) == (
            b.name,
            b.type.to_info_dict(),
            b.default,
            b.multiple,
            b.help,
        ), flag
        assert a.required == (flag in ("--bench", "--root")) and not b.required


class _Called(Exception):
    """Raised by a stand-in API function: the command got as far as calling it."""


def _capture(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, args=args)
        raise _Called

    monkeypatch.setattr(agebench, name, fake)
    return seen


def test_compare_passes_its_options_to_the_api(monkeypatch: pytest.MonkeyPatch):
    seen = _capture(monkeypatch, "compare")
    args = ["compare", "m1", "m2", "--bench", "utkface", "--root", "data"]
    args += ["--backend", "torch", "--precision", "fp16", "--tuning", "manifest"]
    args += ["--column", "age=AGE", "--faces", "none", "--alpha", "0.01"]
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, _Called), result.output
    assert seen["args"] == (["m1", "m2"],)
    assert (seen["backend"], seen["precision"], seen["tuning"]) == ("torch", "fp16", "manifest")
    assert seen["columns"] == {"age": "AGE"} and seen["faces"] == "none"
    assert seen["alpha"] == 0.01 and callable(seen["progress"])


def test_eval_and_predict_are_calls_of_the_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    seen = _capture(monkeypatch, "evaluate")
    args = ["eval", "-b", "utkface", "--root", str(tmp_path), "--tuning", "retune"]
    result = CliRunner().invoke(main, [*args, "--option", "k=v", "--wait"])
    assert isinstance(result.exception, _Called), result.output
    assert seen["args"] == ("utkface", tmp_path, "dlib-age-v1")
    assert seen["options"] == {"k": "v"} and seen["tuning"] == "retune" and seen["wait"]
    assert callable(seen["progress"]) and callable(seen["notify"])

    seen = _capture(monkeypatch, "predict")
    args = ["predict", str(tmp_path), "--faces", "none", "--crop-margin", "0.4", "--overwrite"]
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, _Called), result.output
    assert seen["args"] == (str(tmp_path), None)  # a path or a URI; the API derives the out
    assert (seen["faces"], seen["crop_margin"], seen["resume"]) == ("none", 0.4, False)
