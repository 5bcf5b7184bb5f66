"""Any report document as GitHub-flavoured Markdown: headings, paragraphs, tables and bullet
lists; the figures are left to the HTML page.

Every text is escaped, since file names and label values come from third-party data.
"""

from __future__ import annotations

import re

from agebench.report.document import Document, Table

#: backslash, code, emphasis, inline HTML, table pipes, and underscores that are not inside a
#: word (GFM never reads an intraword ``_`` as emphasis, so ``no_face`` stays readable)
_MD_SPECIAL = re.compile(r"([\\`*<>|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def escape(text: str) -> str:
    """Escape Markdown (and inline HTML) syntax in text from the summary, keeping plain
    brackets readable but never a link (``](`` is broken); a table cell stays on one line."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", flat).replace("](", "]\\(")


def _table(table: Table) -> list[str]:
    lines = [f"### {escape(table.title)}", ""] if table.title else []
    lines.append("| " + " | ".join(escape(h) or " " for h in table.headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.headers) + "|")
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in table.rows]
    return [*lines, ""]


def render_markdown(document: Document) -> str:
    """The document as Markdown, one blank line between blocks and a final newline."""
    lines = [f"# {escape(document.heading)} — {escape(document.title)}", ""]
    for section in document.sections:
        lines += [f"## {escape(section.title)}", ""]
        for paragraph in section.paragraphs:
            lines += [escape(paragraph), ""]
        for table in section.tables:
            lines += _table(table)
        if section.items:
            lines += [f"- {escape(item)}" for item in section.items] + [""]
    return "\n".join(lines).rstrip() + "\n"
