"""The one document model of every report: a heading and title, then sections of paragraphs,
tables, a bullet list and figures.

The eval and the comparison reports are each built as a ``Document`` (``eval_report``,
``compare_report``); ``markdown`` and ``html`` render any document, so the two reports share
one layout and the Markdown and the HTML of a report can never disagree. Figures are drawn
only by the HTML renderer: a ``Figure`` holds the function that draws it, so building a
document for Markdown draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agebench.report.cells import text


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    title: str | None = None


@dataclass(frozen=True)
class Figure:
    """A plot under a caption; ``draw`` returns a bare ``matplotlib.figure.Figure``. A
    ``wide`` one (a grid of panels) takes a whole row of the page; every other plot has one
    size, so that none looks more important than its neighbours."""

    caption: str
    draw: Callable[[], Any]
    wide: bool = False


@dataclass
class Section:
    """One ``##`` section: paragraphs, then (HTML only) the figures, then tables, then a
    bullet list; ``figure_note`` is what the HTML says instead when there are no figures to draw
    (None: say nothing)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    figure_note: str | None = None


@dataclass
class Document:
    """A whole report: the page's ``<title>`` is ``title``; its first heading
    ``"{heading} — {title}"``."""

    heading: str
    title: str
    sections: list[Section]


def _flat(pairs: Mapping[str, Any], prefix: str = "") -> list[list[str]]:
    """Rows of named values, a nested mapping spread over one row per value under dotted
    names (``engine.provider``) rather than shown as raw JSON in one cell."""
    rows = []
    for key, value in pairs.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += _flat(value, f"{name}.")
        else:
            rows.append([name, text(value)])
    return rows


def key_value_table(pairs: Mapping[str, Any], title: str | None = None) -> Table:
    """A two-column table of named values (run settings, execution, provenance)."""
    return Table(["", "value"], _flat(pairs), title)


def provenance_section(data: Mapping[str, Any]) -> Section:
    """The provenance of an eval summary or a comparison, with its schema: every report says
    which agebench, commit and package versions made it."""
    prov = dict(data.get("provenance") or {})
    versions = prov.pop("versions", None) or {}
    tables = [key_value_table({"schema": data.get("schema"), **prov})]
    if versions:
        tables.append(Table(["package", "version"], [[k, text(v)] for k, v in versions.items()]))
    return Section("Provenance", tables=tables)
