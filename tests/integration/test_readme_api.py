"""The README's "Python API" examples, run as written.

Convention: the ```python blocks of that section use ``chips/`` (a folder of real UTKFace
chips, named as the shared ones are) and ``utk-root`` (a UTKFace benchmark root) as relative
paths, and write under ``reports/``. The test runs them in a temporary working folder where
``chips/`` holds the first 6 shared chips and ``utk-root/UTKFace/`` the same 6, so nothing is
substituted in the text and the examples stay copy-pasteable.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.fixtures.tiny_models import REPO

pytestmark = pytest.mark.slow

README = REPO / "README.md"


def _api_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Python API")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_python_api_section_has_examples():
    assert len(_api_blocks()) >= 2


def test_the_readme_examples_run(face_chips: list[Path], tmp_path: Path, capsys):
    chips = face_chips[:6]
    (tmp_path / "chips").mkdir()
    (tmp_path / "utk-root" / "UTKFace").mkdir(parents=True)
    for chip in chips:
        shutil.copy(chip, tmp_path / "chips" / chip.name)
        shutil.copy(chip, tmp_path / "utk-root" / "UTKFace" / chip.name)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        for number, block in enumerate(_api_blocks()):
            exec(compile(block, f"README.md python block {number}", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "dlib-age-v1" in printed and "utkface" in printed
    assert (tmp_path / "reports" / "api-predict" / "predictions.jsonl").is_file()
    assert list((tmp_path / "reports").glob("compare-*/report.html"))
