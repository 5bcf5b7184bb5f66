"""The report files of a finished run folder: ``report.md`` and ``report.html`` of an eval,
and ``comparison.json`` beside them for a comparison.

Every file of a folder is rendered before any is written, so a rendering error leaves the
folder as it was; each file goes to a temporary name in the same folder and is renamed into
place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agebench.comparison.statistics import COMPARISON_FILE
from agebench.core.atomic import write_text_atomic
from agebench.report import html, markdown
from agebench.report.compare_report import compare_document
from agebench.report.eval_report import eval_document

REPORT_MD = "report.md"
REPORT_HTML = "report.html"

Rows = Sequence[Mapping[str, Any]]


def render_markdown(summary: Mapping[str, Any]) -> str:
    """The eval summary as GitHub-flavoured Markdown (tables only, no plots)."""
    return markdown.render_markdown(eval_document(summary))


def render_html(summary: Mapping[str, Any], rows: Rows) -> str:
    """The eval summary as one self-contained HTML page: the Markdown's tables plus, for each
    target, the CS curve, predicted-vs-true scatter, MAE by band and error histogram."""
    return html.render_html(eval_document(summary, rows))


def render_compare_markdown(comparison: Mapping[str, Any]) -> str:
    """The comparison as GitHub-flavoured Markdown (tables only, no plots)."""
    return markdown.render_markdown(compare_document(comparison))


def render_compare_html(
    comparison: Mapping[str, Any], rows_by_model: Mapping[str, Rows] | None = None
) -> str:
    """The comparison as one self-contained HTML page: the Markdown's tables plus CS curves
    overlaid, MAE by age band (grouped bars), predicted against true per model (small
    multiples) and Bland-Altman plots of the first pairs. ``rows_by_model``: each model's
    prediction rows by its label (the points plotted); without them, no plots."""
    return html.render_html(compare_document(comparison, rows_by_model))


def _write_all(out: Path, files: Mapping[str, str], durable: frozenset[str] = frozenset()) -> None:
    """Write already rendered files under ``out``, each all or nothing (``durable`` ones
    synced to disk before the rename, for the data later commands read back)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_text_atomic(out / name, content, durable=name in durable)


def write_report(out_dir: Path | str, summary: Mapping[str, Any], rows: Rows) -> tuple[Path, Path]:
    """Write an eval's ``report.md`` and ``report.html`` under ``out_dir``."""
    out = Path(out_dir)
    files = {REPORT_MD: render_markdown(summary), REPORT_HTML: render_html(summary, rows)}
    _write_all(out, files)
    return out / REPORT_MD, out / REPORT_HTML


def write_compare_report(
    out_dir: Path | str, comparison: Mapping[str, Any], rows_by_model: Mapping[str, Rows]
) -> tuple[Path, Path, Path]:
    """Write a comparison's ``comparison.json``, ``report.md`` and ``report.html`` under
    ``out_dir``."""
    out = Path(out_dir)
    files = {
        COMPARISON_FILE: json.dumps(comparison, indent=2, ensure_ascii=False, allow_nan=False)
        + "\n",
        REPORT_MD: render_compare_markdown(comparison),
        REPORT_HTML: render_compare_html(comparison, rows_by_model),
    }
    _write_all(out, files, durable=frozenset({COMPARISON_FILE}))
    return out / COMPARISON_FILE, out / REPORT_MD, out / REPORT_HTML
