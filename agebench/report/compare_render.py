"""A comparison's report, as Markdown and as one self-contained HTML file.

Same conventions as the eval report (``agebench.report.render``): both renderings come from one
list of sections, the HTML loads nothing and runs no script (inline CSS, plots as inline SVG
with text drawn as paths, a Content Security Policy that forbids any fetch), and every text
from the comparison or the rows is escaped. No number is computed here: every value shown
comes from ``comparison.json``; only the plotted points are read from the rows, paired with
``agebench.comparison.paired_rows``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agebench.comparison import COMPARISON_FILE, paired_rows
from agebench.core.atomic import write_text_atomic
from agebench.core.metrics import true_value
from agebench.report.render import (
    _VECTOR_POINTS,
    DASH,
    REPORT_HTML,
    REPORT_MD,
    Section,
    Table,
    _html_table,
    _md,
    _md_table,
    _num,
    _pct,
    _svg,
    _text,
    figure,
    html_page,
)

#: Bland-Altman plots drawn: the first pairs, in the comparison's order
MAX_BLAND_ALTMAN = 6
#: failing records listed in the report (comparison.json lists them all)
MAX_FAILURES_SHOWN = 100
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")

Rows = Sequence[Mapping[str, Any]]


# --- formatting ---------------------------------------------------------------------------


def _p(value: Any) -> str:
    if value is None:
        return DASH
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _ci(value: Any, ci: Any, digits: int = 2, signed: bool = False) -> str:
    fmt = (lambda v: DASH if v is None else f"{v:+.{digits}f}") if signed else _num
    text = fmt(value)
    return f"{text} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else text


def _size(value: Any) -> str:
    return DASH if value is None else f"{value / 1e6:.1f} MB"


def _count_share(count: Any, share: Any) -> str:
    return f"{count} ({_pct(share)})"


def _conf(comparison: Mapping[str, Any]) -> str:
    confidence = (comparison.get("settings") or {}).get("confidence")
    return f"{100 * confidence:g}% CI" if confidence else "CI"


# --- sections -----------------------------------------------------------------------------


def _models(comparison: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {m["label"]: m for m in comparison.get("models") or []}


def _ranking_section(c: Mapping[str, Any]) -> Section:
    models = _models(c)
    inter = c.get("intersection") or {}
    ranking = c.get("ranking") or {}
    alpha = ranking.get("alpha", (c.get("settings") or {}).get("alpha"))
    with_eps = any(m.get("epsilon_error") is not None for m in models.values())
    headers = ["rank", "model", "group", f"MAE [{_conf(c)}]", "CS@5", "bias"]
    headers += ["ε-error"] if with_eps else []
    headers += ["full-set MAE", "full-set coverage", "images/s", "size", "failed records"]
    headers += ["differs from next"]
    seen = any(entry.get("contamination") for entry in ranking.get("order") or [])
    headers += ["has seen the test set"] if seen else []
    rows = []
    for entry in ranking.get("order") or []:
        m = models.get(entry["model"], {})
        metrics = m.get("metrics") or {}
        full = m.get("full_set") or {}
        nxt = entry.get("significant_to_next")
        rows.append(
            [
                str(entry["rank"]),
                entry["model"],
                entry.get("groups") or "",
                _ci(m.get("mae"), m.get("mae_ci")),
                _pct(metrics.get("cs5")),
                _num(metrics.get("bias")),
                *([_num(m.get("epsilon_error"), 4)] if with_eps else []),
                _ci(full.get("mae"), full.get("mae_ci")),
                _pct(full.get("coverage")),
                _num((m.get("throughput") or {}).get("images_per_second"), 1),
                _size(m.get("model_size_bytes")),
                str((m.get("failures") or {}).get("records", DASH)),
                DASH
                if nxt is None
                else f"{'yes' if nxt else 'no'} (Holm p {_p(entry.get('p_to_next'))})",
                *([", ".join(entry.get("contamination") or []) or "no"] if seen else []),
            ]
        )
    n_pairs = len(c.get("pairs") or [])
    paragraphs = [
        f"Headline numbers are over the {inter.get('n_scored_by_all', 0)} records that every "
        f"model scored (the intersection of {inter.get('n_label_rows', 0)} label rows); "
        f"{inter.get('n_excluded', 0)} label rows where at least one model failed are left "
        "out for all models and listed under Failures. The full-set columns are each model's "
        "own numbers over all its scored images, from its eval summary.",
        f"Ranked by MAE on the intersection. Models sharing a group letter cannot be told "
        f"apart at alpha = {_num(alpha)}: two-sided Wilcoxon signed-rank test on the paired "
        f"absolute errors, p-values Holm-corrected over the {n_pairs} pairs. "
        "'Differs from next' compares each model with the one ranked below it.",
    ]
    groups = ranking.get("groups") or []
    items = [f"group {g['letter']}: {', '.join(g['models'])}" for g in groups]
    return Section("Ranking", paragraphs, [Table(headers, rows)], items)


def _pairs_section(c: Mapping[str, Any]) -> Section:
    headers = ["A", "B", "n", "MAE A", "MAE B", f"MAE A - B [{_conf(c)}]", "Wilcoxon p"]
    headers += ["Holm p", "significant", "A closer", "B closer", "ties"]
    rows = []
    for p in c.get("pairs") or []:
        w, closer = p.get("wilcoxon") or {}, p.get("closer") or {}
        sig = p.get("significant")
        rows.append(
            [
                p["a"],
                p["b"],
                str(p.get("n", 0)),
                _num(p.get("mae_a")),
                _num(p.get("mae_b")),
                _ci(p.get("mae_diff"), p.get("mae_diff_ci"), signed=True),
                _p(w.get("p")),
                _p(w.get("p_holm")),
                DASH if sig is None else ("yes" if sig else "no"),
                _count_share(closer.get("a_closer"), closer.get("share_a_closer")),
                _count_share(closer.get("b_closer"), closer.get("share_b_closer")),
                _count_share(closer.get("ties"), closer.get("share_ties")),
            ]
        )
    settings = c.get("settings") or {}
    paragraphs = [
        "On the intersection, record by record. MAE A - B is negative when A is more accurate; "
        f"its CI is a paired percentile bootstrap ({settings.get('n_boot')} resamples of the "
        f"records, the same for both models, seed {settings.get('seed')}). The Wilcoxon "
        "signed-rank test (two-sided) compares the absolute errors |error A| and |error B|, "
        "dropping records where they are equal; Holm p is corrected for all pairs. A closer: "
        "records where |error A| < |error B|; ties: equal absolute errors."
    ]
    tables = [Table(headers, rows)]
    matrix = c.get("matrix") or {}
    labels = matrix.get("models") or []
    if len(labels) > 2:
        diff = [
            [label, *(DASH if v is None else f"{v:+.2f}" for v in values)]
            for label, values in zip(labels, matrix.get("mae_diff") or [], strict=False)
        ]
        tables.append(Table(["row - column", *labels], diff, "MAE difference (row - column)"))
        holm_p = [
            [label, *(_p(v) for v in values)]
            for label, values in zip(labels, matrix.get("p_holm") or [], strict=False)
        ]
        tables.append(Table(["", *labels], holm_p, "Wilcoxon p-values, Holm-corrected"))
    return Section("Pairwise comparisons", paragraphs, tables)


def _agreement_section(c: Mapping[str, Any]) -> Section:
    headers = ["A", "B", "n", "Pearson r", "mean |pred A - pred B|", "Bland-Altman mean A - B"]
    headers += ["95% limits of agreement"]
    rows = []
    for p in c.get("pairs") or []:
        a = p.get("agreement") or {}
        loa = a.get("ba_loa")
        rows.append(
            [
                p["a"],
                p["b"],
                str(a.get("n", 0)),
                _num(a.get("pearson_r"), 3),
                _num(a.get("mean_abs_diff")),
                _num(a.get("ba_mean_diff")),
                f"[{_num(loa[0])}, {_num(loa[1])}]" if loa else DASH,
            ]
        )
    n_pairs = len(c.get("pairs") or [])
    note = (
        "How the models agree with each other, whatever the truth: limits of agreement are "
        "mean ± 1.96 sample std of pred A - pred B."
    )
    if n_pairs > MAX_BLAND_ALTMAN:
        note += f" Bland-Altman plots for the first {MAX_BLAND_ALTMAN} of {n_pairs} pairs."
    return Section("Agreement between models", [note], [Table(headers, rows)], plots="pairs")


def _cs_section(c: Mapping[str, Any]) -> Section:
    levels = [str(level) for level in range(1, 11)]
    rows = [
        [m["label"], *(_pct(((m.get("metrics") or {}).get("cs") or {}).get(lv)) for lv in levels)]
        for m in c.get("models") or []
    ]
    note = "CS@L = share of intersection records with |error| ≤ L years."
    return Section(
        "Cumulative score",
        [note],
        [Table(["model", *(f"CS@{lv}" for lv in levels)], rows)],
        [],
        "cs",
    )


def _band_section(c: Mapping[str, Any]) -> Section:
    models = c.get("models") or []
    bands = ((models[0].get("metrics") or {}).get("by_band") or []) if models else []
    rows = []
    for index, band in enumerate(bands):
        row = [band["band"], str(band.get("n", 0))]
        for m in models:
            by_band = (m.get("metrics") or {}).get("by_band") or []
            row.append(_num(by_band[index].get("mae")) if index < len(by_band) else DASH)
        rows.append(row)
    headers = ["true age", "n", *(f"MAE {m['label']}" for m in models)]
    return Section("MAE by age band", [], [Table(headers, rows)], plots="bands")


def _fold_section(c: Mapping[str, Any]) -> Section | None:
    models = c.get("models") or []
    if not any((m.get("metrics") or {}).get("by_fold") for m in models):
        return None
    folds: list[str] = []
    for m in models:
        for f in (m.get("metrics") or {}).get("by_fold") or []:
            if f["fold"] not in folds:
                folds.append(f["fold"])
    rows = []
    for m in models:
        metrics = m.get("metrics") or {}
        by_fold = {f["fold"]: f for f in metrics.get("by_fold") or []}
        rows.append(
            [
                m["label"],
                f"{_num(metrics.get('fold_mae_mean'))} ± {_num(metrics.get('fold_mae_std'))}",
                *(_num((by_fold.get(f) or {}).get("mae")) for f in folds),
            ]
        )
    note = "MAE per fold on the intersection; mean ± sample std over folds."
    return Section("By fold", [note], [Table(["model", "mean ± std", *folds], rows)])


def _models_section(c: Mapping[str, Any]) -> Section:
    headers = ["model", "sha256", "faces", "full-set label rows", "scored", "coverage"]
    headers += ["full-set MAE", "failed records", "failures by status", "scored but excluded"]
    rows, speed = [], []
    for m in c.get("models") or []:
        full, failures = m.get("full_set") or {}, m.get("failures") or {}
        t = m.get("throughput") or {}
        by_status = ", ".join(f"{k} {v}" for k, v in (failures.get("by_status") or {}).items())
        rows.append(
            [
                m["label"],
                _text(m.get("sha256")),
                _text(m.get("faces")),
                _text(full.get("n_rows")),
                _text(full.get("n_scored")),
                _pct(full.get("coverage")),
                _ci(full.get("mae"), full.get("mae_ci")),
                _text(failures.get("records")),
                by_status or DASH,
                _text(failures.get("scored_but_excluded")),
            ]
        )
        speed.append(
            [
                m["label"],
                _num(t.get("images_per_second"), 1),
                _text(t.get("seconds")),
                _text(t.get("processed")),
                _text(t.get("device")),
                _text(t.get("onnx_provider")),
                _text(t.get("detector_device")),
                _size(m.get("model_size_bytes")),
            ]
        )
    speed_headers = ["model", "images/s", "seconds", "images processed", "device", "provider"]
    speed_headers += ["detector device", "model size"]
    inter = c.get("intersection") or {}
    paragraphs = [
        str(inter.get("rule") or ""),
        "Throughput is from each eval's own timing (the session that ran the model; a reused "
        "eval keeps the numbers of the run that made it). Model size is the ONNX file's, when "
        "the model could be found.",
    ]
    tables = [Table(headers, rows), Table(speed_headers, speed, "Speed and size")]
    return Section("Models", paragraphs, tables, plots="scatter")


def _runs_section(c: Mapping[str, Any]) -> Section:
    bench = c.get("benchmark") or {}
    head = Table(
        ["", "value"],
        [
            ["benchmark", f"{bench.get('name', DASH)} {bench.get('version') or ''}".strip()],
            ["protocol", _text(bench.get("protocol"))],
            ["split", _text(bench.get("split"))],
            ["target", _text(c.get("target"))],
            ["data sha256", _text(bench.get("files_sha256"))],
            ["faces modes", ", ".join(bench.get("faces_modes") or []) or DASH],
            ["comparison id", _text(c.get("id"))],
        ],
    )
    runs = Table(
        ["model", "summary", "fingerprint", "records", "created"],
        [
            [
                r["label"],
                _text(r.get("summary_path")),
                _text(r.get("fingerprint")),
                _text(r.get("records")),
                _text(r.get("created")),
            ]
            for r in c.get("runs") or []
        ],
        "Runs compared",
    )
    settings = Table(["", "value"], [[k, _text(v)] for k, v in (c.get("settings") or {}).items()])
    settings.title = "Settings"
    return Section("Runs", tables=[head, runs, settings])


def _failures_section(c: Mapping[str, Any]) -> Section:
    failures = c.get("failures") or []
    shown = failures[:MAX_FAILURES_SHOWN]
    note = f"{len(failures)} record(s) failed by at least one model"
    if not failures:
        note += "."
    elif len(shown) < len(failures):
        note += f"; the first {len(shown)} listed, all in {COMPARISON_FILE}."
    else:
        note += "; all listed."
    items = []
    for f in shown:
        errors = f.get("error") or {}
        parts = [
            f"{label}: {status}" + (f" ({errors[label]})" if label in errors else "")
            for label, status in (f.get("status") or {}).items()
        ]
        source = f" [{f['source']}]" if f.get("source") not in (None, f.get("image")) else ""
        items.append(f"{f.get('image')}{source}: " + "; ".join(parts))
    return Section("Failures", [note], items=items)


def _provenance_section(c: Mapping[str, Any]) -> Section:
    prov = dict(c.get("provenance") or {})
    versions = prov.pop("versions", None) or {}
    tables = [
        Table(
            ["", "value"], [[k, _text(v)] for k, v in {"schema": c.get("schema"), **prov}.items()]
        )
    ]
    if versions:
        tables.append(Table(["package", "version"], [[k, _text(v)] for k, v in versions.items()]))
    return Section("Provenance", tables=tables)


def _findings_section(c: Mapping[str, Any]) -> Section | None:
    """Each run's findings, first: a model that has seen the test set may rank first."""
    findings = c.get("findings") or []
    if not findings:
        return None
    return Section(
        "Read this first",
        [
            "Findings that change what the ranking means. 'Has seen the test set' in the "
            "ranking: declared (its manifest names this benchmark among its training data), "
            "suspected (its manifest gives a reason to think so), memorised (its errors pile "
            "up at zero: see each eval report's error density at zero)."
        ],
        items=[f"{f.get('model')}: {f.get('kind')}: {f.get('message')}" for f in findings],
    )


def build_sections(comparison: Mapping[str, Any]) -> tuple[str, list[Section]]:
    """The report's title and sections, shared by both renderers."""
    bench = comparison.get("benchmark") or {}
    labels = [m["label"] for m in comparison.get("models") or []]
    title = f"{bench.get('title') or bench.get('name') or 'benchmark'}: {' vs '.join(labels)}"
    findings = _findings_section(comparison)
    sections = [
        *([findings] if findings else []),
        _ranking_section(comparison),
        _pairs_section(comparison),
        _cs_section(comparison),
        _band_section(comparison),
    ]
    folds = _fold_section(comparison)
    if folds:
        sections.append(folds)
    sections += [
        _models_section(comparison),
        _agreement_section(comparison),
        _failures_section(comparison),
        _runs_section(comparison),
        _provenance_section(comparison),
    ]
    return title, sections


# --- Markdown -----------------------------------------------------------------------------


def render_compare_markdown(comparison: Mapping[str, Any]) -> str:
    """The comparison as GitHub-flavoured Markdown (tables only, no plots)."""
    title, sections = build_sections(comparison)
    lines = [f"# agebench comparison — {_md(title)}", ""]
    for section in sections:
        lines += [f"## {_md(section.title)}", ""]
        for paragraph in section.paragraphs:
            if paragraph:
                lines += [_md(paragraph), ""]
        for table in section.tables:
            lines += _md_table(table)
        if section.items:
            lines += [f"- {_md(item)}" for item in section.items] + [""]
    return "\n".join(lines).rstrip() + "\n"


# --- plots --------------------------------------------------------------------------------


def _figure(bottom: float = 0.14) -> tuple[Any, Any]:
    """The report's figure, a little larger: comparisons overlay several models."""
    return figure(bottom, size=(5.6, 3.8), top=0.95)


def _marker_size(n: int) -> float:
    return 14.0 if n <= 500 else 5.0


def _color(index: int) -> str:
    return _COLORS[index % len(_COLORS)]


def _plot_cs(comparison: Mapping[str, Any]) -> Any:
    fig, ax = _figure()
    longest = 20
    for i, m in enumerate(comparison.get("models") or []):
        curve = (m.get("metrics") or {}).get("cs_curve") or []
        points = [(level, 100 * v) for level, v in enumerate(curve) if v is not None]
        longest = max(longest, len(curve) - 1)
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            markersize=3,
            color=_color(i),
            label=m["label"],
        )
    ax.set(xlabel="error threshold L (years)", ylabel="CS@L (% of intersection)", ylim=(0, 100))
    ax.set_xlim(0, longest)
    ax.set_xticks(range(0, longest + 1, 2))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _plot_bands(comparison: Mapping[str, Any]) -> Any:
    fig, ax = _figure(bottom=0.22)
    models = comparison.get("models") or []
    bands = (models[0].get("metrics") or {}).get("by_band") or [] if models else []
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        by_band = (m.get("metrics") or {}).get("by_band") or []
        heights = [(b.get("mae") or 0.0) for b in by_band]
        offsets = [x - 0.4 + width * (i + 0.5) for x in range(len(heights))]
        ax.bar(offsets, heights, width=width, color=_color(i), label=m["label"])
    ax.set_xticks(range(len(bands)), [b["band"] for b in bands])
    ax.set(xlabel="true age band", ylabel="MAE (years)")
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _plot_scatter_grid(
    labels: Sequence[str], true: Sequence[float], preds: Sequence[Sequence[float]], target: str
) -> Any:
    from matplotlib.figure import Figure

    cols = min(3, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig = Figure(figsize=(3.4 * cols, 3.4 * rows))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.1, wspace=0.3, hspace=0.4)
    low = min(0.0, min(true), *(min(p) for p in preds))
    high = max(max(true), *(max(p) for p in preds))
    for i, (label, pred) in enumerate(zip(labels, preds, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.scatter(
            true,
            pred,
            s=_marker_size(len(true)),
            alpha=0.5,
            linewidths=0,
            color=_color(i),
            rasterized=len(true) > _VECTOR_POINTS,
        )
        ax.plot([low, high], [low, high], color="#c33", linewidth=1)
        ax.set(xlim=(low, high), ylim=(low, high), aspect="equal", title=label)
        ax.set_xlabel(f"true {target}", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    return fig


def _plot_bland_altman(pair: Mapping[str, Any], a: Sequence[float], b: Sequence[float]) -> Any:
    fig, ax = _figure()
    fig.subplots_adjust(top=0.9)
    mean = [(x + y) / 2 for x, y in zip(a, b, strict=True)]
    diff = [x - y for x, y in zip(a, b, strict=True)]
    ax.scatter(
        mean,
        diff,
        s=_marker_size(len(a)),
        alpha=0.6,
        linewidths=0,
        rasterized=len(a) > _VECTOR_POINTS,
    )
    agreement = pair.get("agreement") or {}
    if agreement.get("ba_mean_diff") is not None:
        ax.axhline(agreement["ba_mean_diff"], color="#c33", linewidth=1)
    for limit in agreement.get("ba_loa") or []:
        ax.axhline(limit, color="#c33", linewidth=1, linestyle="--")
    ax.axhline(0, color="#555", linewidth=0.6)
    ax.set(xlabel="mean of the two predictions (years)", ylabel="pred A - pred B (years)")
    ax.set_title(f"A = {pair['a']}, B = {pair['b']}", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def _paired_points(
    comparison: Mapping[str, Any], rows_by_model: Mapping[str, Rows]
) -> tuple[list[str], list[float], list[list[float]]]:
    labels = [m["label"] for m in comparison.get("models") or []]
    if not labels or any(label not in rows_by_model for label in labels):
        return labels, [], []
    target = comparison.get("target") or "age"
    _, aligned = paired_rows([rows_by_model[label] for label in labels], target)
    true = [float(true_value(r, target)) for r in aligned[0]]  # type: ignore[arg-type]
    preds = [[float(r["pred_age"]) for r in rows] for rows in aligned]
    return labels, true, preds


def _plots(
    kind: str,
    comparison: Mapping[str, Any],
    points: tuple[list[str], list[float], list[list[float]]],
) -> list[tuple[str, Any]]:
    labels, true, preds = points
    if not true:
        return []
    if kind == "cs":
        return [
            ("Cumulative score CS@L on the intersection, L = 0..20 years", _plot_cs(comparison))
        ]
    if kind == "bands":
        return [("MAE by true age band, per model", _plot_bands(comparison))]
    if kind == "scatter":
        target = comparison.get("target") or "age"
        figure = _plot_scatter_grid(labels, true, preds, target)
        return [(f"Predicted age against true {target}, per model (y = x in red)", figure)]
    if kind == "pairs":
        index = {label: i for i, label in enumerate(labels)}
        figures = []
        for pair in (comparison.get("pairs") or [])[:MAX_BLAND_ALTMAN]:
            a, b = preds[index[pair["a"]]], preds[index[pair["b"]]]
            figures.append(
                (
                    f"Bland-Altman: {pair['a']} against {pair['b']} (mean difference and 95% "
                    "limits of agreement in red)",
                    _plot_bland_altman(pair, a, b),
                )
            )
        return figures
    raise ValueError(f"unknown plot kind {kind!r}")


# --- HTML ---------------------------------------------------------------------------------


def render_compare_html(
    comparison: Mapping[str, Any], rows_by_model: Mapping[str, Rows] | None = None
) -> str:
    """The comparison as one self-contained HTML page: the Markdown's tables plus CS curves
    overlaid, MAE by age band (grouped bars), predicted against true per model (small
    multiples) and Bland-Altman plots of the first pairs. ``rows_by_model``: each model's
    prediction rows by its label (the points plotted); without them, no plots."""
    esc = html.escape
    title, sections = build_sections(comparison)
    points = _paired_points(comparison, rows_by_model or {})
    body = [f"<h1>agebench comparison — {esc(title)}</h1>"]
    index = 0
    for section in sections:
        body.append(f"<section><h2>{esc(section.title)}</h2>")
        body += [f"<p>{esc(p)}</p>" for p in section.paragraphs if p]
        body += [_html_table(t) for t in section.tables]
        if section.items:
            items = "".join(f"<li>{esc(item)}</li>" for item in section.items)
            body.append(f'<ul class="problems">{items}</ul>')
        if section.plots is not None:
            plots = _plots(section.plots, comparison, points)
            if plots:
                figures = []
                for caption, fig in plots:
                    figures.append(
                        f"<figure>{_svg(fig, index)}<figcaption>{esc(caption)}</figcaption>"
                        "</figure>"
                    )
                    index += 1
                body.append('<div class="plots">' + "".join(figures) + "</div>")
        body.append("</section>")
    return html_page(title, body)


def write_compare_report(
    out_dir: Path | str, comparison: Mapping[str, Any], rows_by_model: Mapping[str, Rows]
) -> tuple[Path, Path, Path]:
    """Write ``comparison.json``, ``report.md`` and ``report.html`` under ``out_dir``.

    All three are rendered before any is written, so a rendering error leaves the folder as
    it was; each file goes to a temporary name in the same folder and is renamed into place.
    """
    out = Path(out_dir)
    data = json.dumps(comparison, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    markdown = render_compare_markdown(comparison)
    page = render_compare_html(comparison, rows_by_model)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / COMPARISON_FILE, data, durable=True)
    write_text_atomic(out / REPORT_MD, markdown)
    write_text_atomic(out / REPORT_HTML, page)
    return out / COMPARISON_FILE, out / REPORT_MD, out / REPORT_HTML
