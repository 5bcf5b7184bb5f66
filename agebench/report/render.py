"""An eval's report, as Markdown and as one self-contained HTML file.

Both are rendered from the same list of sections (headings, paragraphs, tables), so they can
never disagree; the HTML adds plots. The HTML must open anywhere, offline, years later: it
loads nothing (inline CSS, plots as inline SVG with text drawn as paths, a Content Security
Policy that forbids any fetch) and runs no script. All text from the summary or the rows is
escaped, since file names and label values come from third-party data.

No number is computed here: every value shown comes from ``agebench.core.metrics`` via the summary,
except the plotted points, which are read from the rows with ``metrics``' own row accessors.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agebench.core.atomic import write_text_atomic
from agebench.core.metrics import is_scored, true_value

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
DASH = "n/a"
#: above this many points the scatter is drawn as an embedded bitmap, keeping the file small
_VECTOR_POINTS = 3000
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:75rem;padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
h3{margin-top:1.4rem;font-size:1.05rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:.25rem .6rem;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.plots{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0;flex:1 1 22rem;max-width:36rem}
figure svg{width:100%;height:auto}figcaption{color:#555;font-size:.9rem}
ul.problems{font-family:ui-monospace,monospace;font-size:.85rem}
p.note{color:#555}
"""


# --- formatting ----------------------------------------------------------------------------


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return DASH if value is None else f"{100.0 * value:.1f}%"


def _text(value: Any) -> str:
    """Any summary value as one line of text (dicts and lists as compact JSON)."""
    if value is None:
        return DASH
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _mae_ci(m: Mapping[str, Any]) -> str:
    ci = m.get("mae_ci")
    mae = _num(m.get("mae"))
    return f"{mae} [{_num(ci[0])}, {_num(ci[1])}]" if ci else mae


def _ci_label(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    confidences = {m.get("confidence") for m in metrics.values() if m.get("confidence")}
    return f"{100 * confidences.pop():g}% CI" if len(confidences) == 1 else "CI"


# --- the document model --------------------------------------------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    title: str | None = None


@dataclass
class Section:
    """One ``##`` section of an eval or comparison report: paragraphs, then tables, then a
    bullet list; ``plots`` names what the HTML draws after the tables (a metrics target in an
    eval report, a figure group in a comparison)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    plots: str | None = None


def _pairs_table(pairs: Mapping[str, Any], title: str | None = None) -> Table:
    return Table(["", "value"], [[str(k), _text(v)] for k, v in pairs.items()], title)


def _run_section(summary: Mapping[str, Any]) -> Section:
    bench = summary.get("benchmark") or {}
    model = summary.get("model") or {}
    faces = summary.get("faces") or {}
    timing = summary.get("timing") or {}
    run = {
        "benchmark": f"{bench.get('name', DASH)} {bench.get('version') or ''}".strip(),
        "protocol": bench.get("protocol"),
        "split": bench.get("split"),
        "root": bench.get("root"),
        "label files": bench.get("n_label_files"),
        "images": bench.get("n_images"),
        "data sha256": bench.get("files_sha256"),
        "model": model.get("name"),
        "model sha256": model.get("sha256"),
        "framework": model.get("framework"),
        "faces": faces.get("mode"),
        "ready crop": faces.get("ready_crop"),
        "seconds": timing.get("seconds"),
        "images/s": timing.get("images_per_second"),
    }
    tables = [_pairs_table(run)]
    if summary.get("execution"):
        tables.append(_pairs_table(summary["execution"], "Execution"))
    paragraphs = [f"Face crops: {faces['reconciliation']}"] if faces.get("reconciliation") else []
    return Section("Run", paragraphs, tables)


def _headline_section(summary: Mapping[str, Any]) -> Section:
    metrics = summary.get("metrics") or {}
    headers = ["target", "label rows", "scored", "coverage", f"MAE [{_ci_label(metrics)}]"]
    headers += ["RMSE", "bias", "median AE", "CS@5", "CE@20", "ε-error"]
    rows = [
        [
            target,
            str(m.get("n_rows", 0)),
            str(m.get("n_scored", 0)),
            _pct(m.get("coverage")),
            _mae_ci(m),
            _num(m.get("rmse")),
            _num(m.get("bias")),
            _num(m.get("median_ae")),
            _pct(m.get("cs5")),
            _pct(m.get("ce20")),
            _num(m.get("epsilon_error"), 4),
        ]
        for target, m in metrics.items()
    ]
    counts = summary.get("counts") or {}
    notes = [
        "Errors are in years (pred - true) over scored images (status ok with a prediction); "
        "coverage = scored / label rows, so missing images and faces not found count against "
        "it. MAE is pooled over all scored images, with a percentile bootstrap CI. "
        "CS@L = share with |error| ≤ L years; CE@20 = share with |error| > 20 years; "
        "ε-error (apparent age) counts every unscored label row as 1."
    ]
    tables = [Table(headers, rows)]
    if counts:
        tables.append(Table(list(counts), [[str(v) for v in counts.values()]], "Counts"))
    return Section("Headline", notes, tables)


def _band_table(m: Mapping[str, Any]) -> Table:
    rows = [
        [b["band"], str(b["n"]), _num(b.get("mae")), _num(b.get("bias"))]
        for b in m.get("by_band") or []
    ]
    return Table(["true age", "n", "MAE", "bias"], rows, "By age band")


def _attribute_tables(m: Mapping[str, Any]) -> list[Table]:
    return [
        Table(
            ["value", "n", "MAE", "bias"],
            [[e["value"], str(e["n"]), _num(e.get("mae")), _num(e.get("bias"))] for e in entries],
            f"By {attr}",
        )
        for attr, entries in (m.get("by_attribute") or {}).items()
    ]


def _under_age_table(m: Mapping[str, Any]) -> Table:
    u = m.get("under_age") or {}
    headers = ["threshold", "minors", "adults", "precision", "recall"]
    headers += ["false accept (minor as adult)", "false reject (adult as minor)"]
    row = [
        _text(u.get("threshold")),
        _text(u.get("n_minors")),
        _text(u.get("n_adults")),
        _pct(u.get("precision")),
        _pct(u.get("recall")),
        _pct(u.get("false_accept_rate")),
        _pct(u.get("false_reject_rate")),
    ]
    return Table(headers, [row], "Under-age check")


def _target_section(target: str, m: Mapping[str, Any]) -> Section:
    cs = m.get("cs") or {}
    failed = ", ".join(f"{k} {v}" for k, v in (m.get("n_failed") or {}).items())
    paragraphs = [
        f"Label rows {m.get('n_rows', 0)}, scored {m.get('n_scored', 0)}; "
        f"not scored: {failed or 'none'}."
    ]
    tables = [
        Table(["L (years)", *cs], [["CS@L", *(_pct(v) for v in cs.values())]], "Cumulative score"),
        _band_table(m),
        *_attribute_tables(m),
    ]
    if m.get("by_fold"):
        folds = [[f["fold"], str(f["n"]), _num(f.get("mae"))] for f in m["by_fold"]]
        tables.append(Table(["fold", "n", "MAE"], folds, "By fold"))
        paragraphs.append(
            f"Fold MAE mean {_num(m.get('fold_mae_mean'))} ± {_num(m.get('fold_mae_std'))} "
            f"(sample std over folds); the headline MAE {_num(m.get('mae'))} is pooled over "
            "all images."
        )
    tables.append(_under_age_table(m))
    if m.get("memorisation"):
        tables.append(_memorisation_table(m["memorisation"]))
        paragraphs.append(
            "Error density at zero: the errors within 0.5 years of zero against those between "
            "0.5 and 1.5 years (per year of width). A model that generalises has a smooth "
            "error density, about 1; one that has seen these images with their labels gives "
            "them back and piles its errors at zero. It is flagged when the lower confidence "
            "bound is over the threshold and enough errors are near zero to tell."
        )
    return Section(f"Target: {target}", paragraphs, tables, plots=target)


def _memorisation_table(s: Mapping[str, Any]) -> Table:
    zero, (low, high) = s.get("zero_window", 0.5), s.get("neighbour_window") or [0.5, 1.5]
    confidence = s.get("confidence") or 0.95
    near = s.get("n_zero", 0) + s.get("n_neighbour", 0)
    flagged = "yes" if s.get("flagged") else "no"
    if not s.get("flagged") and near < (s.get("min_count") or 0):
        flagged = f"no ({near} near zero, {s.get('min_count')} needed)"
    headers = [f"|error| ≤ {zero:g}", f"{low:g} < |error| ≤ {high:g}", "density ratio"]
    headers += [f"lower {100 * confidence:.0f}% bound", "threshold", "flagged"]
    row = [
        f"{s.get('n_zero', 0)} ({_pct(s.get('share_zero'))})",
        f"{s.get('n_neighbour', 0)} ({_pct(s.get('share_neighbour'))})",
        _num(s.get("ratio")),
        _num(s.get("ratio_low")),
        _text(s.get("threshold")),
        flagged,
    ]
    return Table(headers, [row], "Error density at zero (memorisation signal)")


def _group_section(g: Mapping[str, Any]) -> Section:
    ci = g.get("accuracy_ci")
    accuracy = _pct(g.get("accuracy")) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
    head = Table(
        ["label rows", "scored", "coverage", "accuracy [CI]", "one-off", "MAE to midpoint"],
        [
            [
                str(g.get("n_rows", 0)),
                str(g.get("n_scored", 0)),
                _pct(g.get("coverage")),
                accuracy,
                _pct(g.get("one_off")),
                _num(g.get("mae_midpoint")),
            ]
        ],
    )
    tables = [head]
    if g.get("by_fold"):
        folds = [
            [f["fold"], str(f["n"]), _pct(f.get("accuracy")), _pct(f.get("one_off"))]
            for f in g["by_fold"]
        ]
        folds.append(
            [
                "mean ± std",
                "",
                f"{_pct(g.get('accuracy_fold_mean'))} ± {_pct(g.get('accuracy_fold_std'))}",
                f"{_pct(g.get('one_off_fold_mean'))} ± {_pct(g.get('one_off_fold_std'))}",
            ]
        )
        tables.append(Table(["fold", "n", "accuracy", "one-off"], folds, "By fold"))
    labels = [f"{lo:g}-{hi:g}" for lo, hi in g.get("groups") or []]
    if labels and g.get("confusion"):
        pairs = zip(labels, g["confusion"], strict=True)
        rows = [[label, *map(str, counts)] for label, counts in pairs]
        tables.append(Table(["true \\ predicted", *labels], rows, "Confusion"))
    note = (
        "A prediction is mapped to the group holding it, or the nearest group when it falls "
        "in a gap (the younger on a tie); one-off counts adjacent groups as correct."
    )
    return Section("Age groups", [note], tables)


def _provenance_section(summary: Mapping[str, Any]) -> Section:
    prov = dict(summary.get("provenance") or {})
    versions = prov.pop("versions", None) or {}
    tables = [_pairs_table({"schema": summary.get("schema"), **prov})]
    if versions:
        tables.append(Table(["package", "version"], [[k, _text(v)] for k, v in versions.items()]))
    return Section("Provenance", tables=tables)


def _problems_section(summary: Mapping[str, Any]) -> Section | None:
    problems = [str(p) for p in summary.get("problems") or []]
    total = (summary.get("counts") or {}).get("label_problems", len(problems))
    if not problems and not total:
        return None
    shown = f"the first {len(problems)}" if len(problems) < total else "all"
    return Section("Problems", [f"{total} label problem(s); {shown} listed."], items=problems)


def _findings_section(summary: Mapping[str, Any]) -> Section | None:
    findings = summary.get("findings") or []
    if not findings:
        return None
    return Section(
        "Read this first",
        ["Findings that change what the numbers below mean:"],
        items=[f"{f.get('kind', 'finding')}: {f.get('message', '')}" for f in findings],
    )


def build_sections(summary: Mapping[str, Any]) -> tuple[str, list[Section]]:
    """The report's title and sections, shared by both renderers."""
    bench = summary.get("benchmark") or {}
    model = summary.get("model") or {}
    title = f"{bench.get('title') or bench.get('name') or 'benchmark'}: {model.get('name', '?')}"
    findings = _findings_section(summary)
    sections = [*([findings] if findings else []), _headline_section(summary)]
    sections.append(_run_section(summary))
    for target, m in (summary.get("metrics") or {}).items():
        sections.append(_target_section(target, m))
    if summary.get("group_metrics"):
        sections.append(_group_section(summary["group_metrics"]))
    sections.append(_provenance_section(summary))
    problems = _problems_section(summary)
    if problems:
        sections.append(problems)
    return title, sections


# --- Markdown ------------------------------------------------------------------------------

#: backslash, code, emphasis, inline HTML, table pipes, and underscores that are not inside a
#: word (GFM never reads an intraword ``_`` as emphasis, so ``no_face`` stays readable)
_MD_SPECIAL = re.compile(r"([\\`*<>|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def _md(text: str) -> str:
    """Escape Markdown (and inline HTML) syntax in text from the summary, keeping plain
    brackets readable but never a link (``](`` is broken); a table cell stays on one line."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", flat).replace("](", "]\\(")


def _md_table(table: Table) -> list[str]:
    lines = [f"### {_md(table.title)}", ""] if table.title else []
    lines.append("| " + " | ".join(_md(h) or " " for h in table.headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.headers) + "|")
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in table.rows]
    return [*lines, ""]


def render_markdown(summary: Mapping[str, Any]) -> str:
    """The eval summary as GitHub-flavoured Markdown (tables only, no plots)."""
    title, sections = build_sections(summary)
    lines = [f"# agebench evaluation — {_md(title)}", ""]
    for section in sections:
        lines += [f"## {_md(section.title)}", ""]
        for paragraph in section.paragraphs:
            lines += [_md(paragraph), ""]
        for table in section.tables:
            lines += _md_table(table)
        if section.items:
            lines += [f"- {_md(item)}" for item in section.items] + [""]
    return "\n".join(lines).rstrip() + "\n"


# --- plots ---------------------------------------------------------------------------------


def _scored_points(rows: Sequence[Mapping[str, Any]], target: str) -> tuple[list, list]:
    scored = [r for r in rows if is_scored(r, target)]
    return [true_value(r, target) for r in scored], [float(r["pred_age"]) for r in scored]


def _svg(fig: Any, index: int) -> str:
    """The figure as an inline <svg> element, ids made unique within the page."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": f"agebench-{index}"}):
        fig.savefig(
            buffer,
            format="svg",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)  # comments echo label text
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    # namespace declarations are implied for <svg> inside HTML; dropping them leaves the page
    # without a single URL of its own
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    prefix = f"p{index}-"
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', svg)
    svg = svg.replace('href="#', f'href="#{prefix}').replace("url(#", f"url(#{prefix}")
    return svg.strip()


def figure(
    bottom: float = 0.14, *, size: tuple[float, float] = (5.2, 3.6), top: float = 0.96
) -> tuple[Any, Any]:
    """A bare matplotlib Figure with fixed margins, for every report's plots: never pyplot (no
    backend switch, nothing global to leak), no layout engine (it would draw each figure
    twice)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    fig.subplots_adjust(left=0.12, right=0.97, top=top, bottom=bottom)
    return fig, fig.add_subplot()


def _plot_cs(m: Mapping[str, Any]) -> Any:
    fig, ax = figure()
    curve = [(level, 100 * v) for level, v in enumerate(m.get("cs_curve") or []) if v is not None]
    ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", markersize=3)
    ax.set(xlabel="error threshold L (years)", ylabel="CS@L (% of scored)", ylim=(0, 100))
    ax.set_xlim(0, max(20, len(curve) - 1))
    ax.set_xticks(range(0, max(20, len(curve) - 1) + 1, 2))
    ax.grid(alpha=0.3)
    return fig


def _plot_scatter(true: list[float], pred: list[float], target: str) -> Any:
    fig, ax = figure()
    ax.scatter(true, pred, s=6, alpha=0.5, linewidths=0, rasterized=len(true) > _VECTOR_POINTS)
    low, high = min(min(true), min(pred), 0.0), max(max(true), max(pred))
    ax.plot([low, high], [low, high], color="#c33", linewidth=1, label="y = x")
    ax.set(xlabel=f"true {target} (years)", ylabel="predicted age (years)", aspect="equal")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def _plot_bands(m: Mapping[str, Any]) -> Any:
    fig, ax = figure(bottom=0.22)
    bands = m.get("by_band") or []
    labels = [b["band"] for b in bands]
    heights = [b["mae"] or 0.0 for b in bands]
    bars = ax.bar(labels, heights, color="#4a7ab5")
    ax.bar_label(bars, labels=[f"n={b['n']}" for b in bands], fontsize=7)
    ax.set(xlabel="true age band", ylabel="MAE (years)")
    ax.tick_params(axis="x", labelrotation=45)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _plot_errors(true: list[float], pred: list[float]) -> Any:
    fig, ax = figure()
    errors = [p - t for t, p in zip(true, pred, strict=True)]
    low, high = math.floor(min(errors)), math.ceil(max(errors))
    bins = max(1, min(high - low, 120))
    ax.hist(errors, bins=bins, range=(low, max(high, low + 1)), color="#4a7ab5")
    ax.axvline(0, color="#c33", linewidth=1)
    ax.set(xlabel="error: predicted - true (years)", ylabel="images")
    ax.grid(axis="y", alpha=0.3)
    return fig


def target_plots(
    target: str, m: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], first_index: int = 0
) -> list[tuple[str, str]]:
    """(caption, inline SVG) for the four plots of one target; none without scored rows.

    Figures are built as bare ``matplotlib.figure.Figure`` objects, never through pyplot:
    they need no GUI backend or display, are not registered in pyplot's global figure list
    (nothing to leak, nothing to close), and do not switch the backend of a caller that uses
    pyplot itself (as ``matplotlib.use`` would).
    """
    true, pred = _scored_points(rows, target)
    if not true:
        return []
    figures = [
        ("Cumulative score CS@L, L = 0..20 years", _plot_cs(m)),
        (f"Predicted age against true {target}", _plot_scatter(true, pred, target)),
        ("MAE by true age band", _plot_bands(m)),
        ("Distribution of errors", _plot_errors(true, pred)),
    ]
    return [(caption, _svg(fig, first_index + i)) for i, (caption, fig) in enumerate(figures)]


# --- HTML ----------------------------------------------------------------------------------


def _html_table(table: Table) -> str:
    esc = html.escape
    parts = [f"<h3>{esc(table.title)}</h3>"] if table.title else []
    parts.append("<table><thead><tr>")
    parts += [f"<th>{esc(h)}</th>" for h in table.headers]
    parts.append("</tr></thead><tbody>")
    for row in table.rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _html_plots(plots: list[tuple[str, str]]) -> str:
    if not plots:
        return '<p class="note">No scored rows: nothing to plot.</p>'
    figures = [
        f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, svg in plots
    ]
    return '<div class="plots">' + "".join(figures) + "</div>"


def render_html(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The eval summary as one self-contained HTML page: the Markdown's tables plus, for each
    target, the CS curve, predicted-vs-true scatter, MAE by band and error histogram."""
    esc = html.escape
    title, sections = build_sections(summary)
    metrics = summary.get("metrics") or {}
    body = [f"<h1>agebench evaluation — {esc(title)}</h1>"]
    plot_index = 0
    for section in sections:
        body.append(f"<section><h2>{esc(section.title)}</h2>")
        body += [f"<p>{esc(p)}</p>" for p in section.paragraphs]
        body += [_html_table(t) for t in section.tables]
        if section.items:
            items = "".join(f"<li>{esc(item)}</li>" for item in section.items)
            body.append(f'<ul class="problems">{items}</ul>')
        if section.plots is not None:
            plots = target_plots(section.plots, metrics[section.plots], rows, plot_index)
            plot_index += len(plots)
            body.append(_html_plots(plots))
        body.append("</section>")
    return html_page(title, body)


def html_page(title: str, body: list[str]) -> str:
    """The one page shell of every report: no network (CSP), inline style only."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    out_dir: Path | str, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` under ``out_dir``, each all or nothing.

    Both are rendered before either is written, so a rendering error leaves the folder as it
    was; each file goes to a temporary name in the same folder and is renamed into place.
    """
    out = Path(out_dir)
    markdown, page = render_markdown(summary), render_html(summary, rows)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / REPORT_MD, markdown)
    write_text_atomic(out / REPORT_HTML, page)
    return out / REPORT_MD, out / REPORT_HTML
