"""Any report document as one self-contained HTML page.

The page must open anywhere, offline, years later: it loads nothing (inline CSS, figures as
inline SVG with text drawn as paths, a Content Security Policy that forbids any fetch) and
runs no script. All text is escaped, since file names and label values come from
third-party data.
"""

from __future__ import annotations

import html

from agebench.report.document import Document, Section, Table
from agebench.report.figures import to_svg

_WIDE = ' class="wide"'
_LONG = ' class="long"'
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:75rem;padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
h3{margin-top:1.4rem;font-size:1.05rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:.25rem .6rem;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.scroll{overflow-x:auto;max-width:100%}.scroll table{margin-top:.2rem}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(22rem,1fr));gap:1rem 1.5rem;
margin:.6rem 0 1rem}
figure{margin:0;max-width:30rem}figure.wide{grid-column:1/-1;max-width:none}
figure.wide svg{width:auto;max-width:100%}
td.long{overflow-wrap:anywhere;min-width:14rem}
figure svg{width:100%;height:auto}figcaption{color:#555;font-size:.9rem}
ul.problems{font-family:ui-monospace,monospace;font-size:.85rem}
p.note{color:#555}
"""


def _cell(value: str) -> str:
    """One cell; a long unbroken value (a sha256) may wrap, so that it alone does not push a
    table past the page's width."""
    long = len(value) > 32 and " " not in value
    return f"<td{_LONG if long else ''}>{html.escape(value)}</td>"


def _table(table: Table) -> str:
    esc = html.escape
    parts = [f"<h3>{esc(table.title)}</h3>"] if table.title else []
    # a wide table scrolls inside its own box instead of running past the page's right edge
    parts.append('<div class="scroll"><table><thead><tr>')
    parts += [f"<th>{esc(h)}</th>" for h in table.headers]
    parts.append("</tr></thead><tbody>")
    for row in table.rows:
        parts.append("<tr>" + "".join(_cell(c) for c in row) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _figures(section: Section, first_index: int) -> str:
    """The section's figures drawn as inline SVG, numbered from ``first_index`` so that ids
    stay unique within the page; its note when it has none."""
    if not section.figures:
        note = section.figure_note
        return f'<p class="note">{html.escape(note)}</p>' if note else ""
    figures = [
        f"<figure{_WIDE if figure.wide else ''}>{to_svg(figure.draw(), first_index + i)}"
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
        for i, figure in enumerate(section.figures)
    ]
    return '<div class="plots">' + "".join(figures) + "</div>"


def render_html(document: Document) -> str:
    """The document as one HTML page: every section's text, then its figures (what a reader
    looks at first), then its tables."""
    esc = html.escape
    body = [f"<h1>{esc(document.heading)} — {esc(document.title)}</h1>"]
    figure_index = 0
    for section in document.sections:
        body.append(f"<section><h2>{esc(section.title)}</h2>")
        body += [f"<p>{esc(p)}</p>" for p in section.paragraphs]
        figures = _figures(section, figure_index)
        figure_index += len(section.figures)
        if figures:
            body.append(figures)
        body += [_table(t) for t in section.tables]
        if section.items:
            items = "".join(f"<li>{esc(item)}</li>" for item in section.items)
            body.append(f'<ul class="problems">{items}</ul>')
        body.append("</section>")
    return _page(document.title, body)


def _page(title: str, body: list[str]) -> str:
    """The page shell: no network (CSP), inline style only."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
