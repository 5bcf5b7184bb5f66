"""A comparison's report as a document (``agebench.report.document``): findings, ranking,
pairwise tests, cumulative scores, bands, folds, models, agreement, failures, runs and
provenance.

No number is computed here: every value shown comes from ``comparison.json``; only the
plotted points are read from the rows, paired with ``agebench.comparison.pairing.paired_rows``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from agebench.comparison.pairing import paired_rows
from agebench.comparison.statistics import COMPARISON_FILE
from agebench.core.metrics.rows import true_value
from agebench.report import figures
from agebench.report.cells import DASH, ci_label, num, pct, text, with_ci
from agebench.report.document import (
    Document,
    Figure,
    Section,
    Table,
    key_value_table,
    provenance_section,
)

#: Bland-Altman plots drawn: the first pairs, in the comparison's order
MAX_BLAND_ALTMAN = 6
#: failing records listed in the report (comparison.json lists them all)
MAX_FAILURES_SHOWN = 100

Rows = Sequence[Mapping[str, Any]]


# --- formatting ---------------------------------------------------------------------------


def _p(value: Any) -> str:
    if value is None:
        return DASH
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _size(value: Any) -> str:
    return DASH if value is None else f"{value / 1e6:.1f} MB"


def _count_share(count: Any, share: Any) -> str:
    return f"{count} ({pct(share)})"


def _conf(comparison: Mapping[str, Any]) -> str:
    return ci_label((comparison.get("settings") or {}).get("confidence"))


# --- the plotted points -------------------------------------------------------------------


@dataclass(frozen=True)
class _Points:
    """The records every model scored, as plotted: each model's label, the true values and
    each model's predictions, in the same record order."""

    labels: list[str]
    true: list[float]
    preds: list[list[float]]

    def plotted(self, caption: str, draw: Callable[[], Any], wide: bool = False) -> list[Figure]:
        """One figure, or none when there is nothing to plot."""
        return [Figure(caption, draw, wide)] if self.true else []


def _paired_points(comparison: Mapping[str, Any], rows_by_model: Mapping[str, Rows]) -> _Points:
    labels = [m["label"] for m in comparison.get("models") or []]
    if not labels or any(label not in rows_by_model for label in labels):
        return _Points(labels, [], [])
    target = comparison.get("target") or "age"
    _, aligned = paired_rows([rows_by_model[label] for label in labels], target)
    # paired_rows keeps labelled rows only, so the filter drops nothing: it tells the checker
    true = [value for r in aligned[0] if (value := true_value(r, target)) is not None]
    preds = [[float(r["pred_age"]) for r in rows] for rows in aligned]
    return _Points(labels, true, preds)


def _bland_altman_figures(c: Mapping[str, Any], points: _Points) -> list[Figure]:
    """Bland-Altman plots of the first ``MAX_BLAND_ALTMAN`` pairs."""
    if not points.true:
        return []
    index = {label: i for i, label in enumerate(points.labels)}
    return [
        Figure(
            f"Bland-Altman: {pair['a']} against {pair['b']} (mean difference and 95% "
            "limits of agreement in red)",
            partial(
                figures.bland_altman,
                pair,
                points.preds[index[pair["a"]]],
                points.preds[index[pair["b"]]],
            ),
        )
        for pair in (c.get("pairs") or [])[:MAX_BLAND_ALTMAN]
    ]


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
                with_ci(m.get("mae"), m.get("mae_ci")),
                pct(metrics.get("cs5")),
                num(metrics.get("bias")),
                *([num(m.get("epsilon_error"), 4)] if with_eps else []),
                with_ci(full.get("mae"), full.get("mae_ci")),
                pct(full.get("coverage")),
                num((m.get("throughput") or {}).get("images_per_second"), 1),
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
        f"apart at alpha = {num(alpha)}: two-sided Wilcoxon signed-rank test on the paired "
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
                num(p.get("mae_a")),
                num(p.get("mae_b")),
                with_ci(p.get("mae_diff"), p.get("mae_diff_ci"), signed=True),
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


def _agreement_section(c: Mapping[str, Any], points: _Points) -> Section:
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
                num(a.get("pearson_r"), 3),
                num(a.get("mean_abs_diff")),
                num(a.get("ba_mean_diff")),
                f"[{num(loa[0])}, {num(loa[1])}]" if loa else DASH,
            ]
        )
    n_pairs = len(c.get("pairs") or [])
    note = (
        "How the models agree with each other, whatever the truth: limits of agreement are "
        "mean ± 1.96 sample std of pred A - pred B."
    )
    if n_pairs > MAX_BLAND_ALTMAN:
        note += f" Bland-Altman plots for the first {MAX_BLAND_ALTMAN} of {n_pairs} pairs."
    return Section(
        "Agreement between models",
        [note],
        [Table(headers, rows)],
        figures=_bland_altman_figures(c, points),
    )


def _cs_section(c: Mapping[str, Any], points: _Points) -> Section:
    levels = [str(level) for level in range(1, 11)]
    rows = [
        [m["label"], *(pct(((m.get("metrics") or {}).get("cs") or {}).get(lv)) for lv in levels)]
        for m in c.get("models") or []
    ]
    note = "CS@L = share of intersection records with |error| ≤ L years."
    return Section(
        "Cumulative score",
        [note],
        [Table(["model", *(f"CS@{lv}" for lv in levels)], rows)],
        figures=points.plotted(
            "Cumulative score CS@L on the intersection, L = 0..20 years",
            partial(figures.cs_curves, c),
        ),
    )


def _band_section(c: Mapping[str, Any], points: _Points) -> Section:
    models = c.get("models") or []
    bands = ((models[0].get("metrics") or {}).get("by_band") or []) if models else []
    rows = []
    for index, band in enumerate(bands):
        row = [band["band"], str(band.get("n", 0))]
        for m in models:
            by_band = (m.get("metrics") or {}).get("by_band") or []
            row.append(num(by_band[index].get("mae")) if index < len(by_band) else DASH)
        rows.append(row)
    headers = ["true age", "n", *(f"MAE {m['label']}" for m in models)]
    return Section(
        "MAE by age band",
        tables=[Table(headers, rows)],
        figures=points.plotted(
            "MAE by true age band, per model", partial(figures.mae_by_band_grouped, c)
        ),
    )


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
                f"{num(metrics.get('fold_mae_mean'))} ± {num(metrics.get('fold_mae_std'))}",
                *(num((by_fold.get(f) or {}).get("mae")) for f in folds),
            ]
        )
    note = "MAE per fold on the intersection; mean ± sample std over folds."
    return Section("By fold", [note], [Table(["model", "mean ± std", *folds], rows)])


def _models_section(c: Mapping[str, Any], points: _Points) -> Section:
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
                text(m.get("sha256")),
                text(m.get("faces")),
                text(full.get("n_rows")),
                text(full.get("n_scored")),
                pct(full.get("coverage")),
                with_ci(full.get("mae"), full.get("mae_ci")),
                text(failures.get("records")),
                by_status or DASH,
                text(failures.get("scored_but_excluded")),
            ]
        )
        speed.append(
            [
                m["label"],
                num(t.get("images_per_second"), 1),
                text(t.get("seconds")),
                text(t.get("processed")),
                text(t.get("device")),
                text(t.get("onnx_provider")),
                text(t.get("detector_device")),
                _size(m.get("model_size_bytes")),
            ]
        )
    speed_headers = ["model", "images/s", "seconds", "images processed", "device", "provider"]
    speed_headers += ["detector device", "model size"]
    inter = c.get("intersection") or {}
    paragraphs = [
        *([str(inter["rule"])] if inter.get("rule") else []),
        "Throughput is from each eval's own timing (the session that ran the model; a reused "
        "eval keeps the numbers of the run that made it). Model size is the ONNX file's, when "
        "the model could be found.",
    ]
    tables = [Table(headers, rows), Table(speed_headers, speed, "Speed and size")]
    target = c.get("target") or "age"
    scatter = partial(figures.scatter_grid, points.labels, points.true, points.preds, target)
    caption = f"Predicted age against true {target}, per model (y = x in red)"
    return Section(
        "Models",
        paragraphs,
        tables,
        figures=points.plotted(caption, scatter, wide=len(points.labels) > 1),
    )


def _runs_section(c: Mapping[str, Any]) -> Section:
    bench = c.get("benchmark") or {}
    head = Table(
        ["", "value"],
        [
            ["benchmark", f"{bench.get('name', DASH)} {bench.get('version') or ''}".strip()],
            ["protocol", text(bench.get("protocol"))],
            ["split", text(bench.get("split"))],
            ["target", text(c.get("target"))],
            ["data sha256", text(bench.get("files_sha256"))],
            ["faces modes", ", ".join(bench.get("faces_modes") or []) or DASH],
            ["comparison id", text(c.get("id"))],
        ],
    )
    runs = Table(
        ["model", "summary", "fingerprint", "records", "created"],
        [
            [
                r["label"],
                text(r.get("summary_path")),
                text(r.get("fingerprint")),
                text(r.get("records")),
                text(r.get("created")),
            ]
            for r in c.get("runs") or []
        ],
        "Runs compared",
    )
    settings = key_value_table(c.get("settings") or {}, "Settings")
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


def compare_document(
    comparison: Mapping[str, Any], rows_by_model: Mapping[str, Rows] | None = None
) -> Document:
    """The comparison's report. ``rows_by_model``: each model's prediction rows by its label,
    the points plotted (paired as the comparison paired them); without them, no figures (all
    Markdown needs)."""
    bench = comparison.get("benchmark") or {}
    labels = [m["label"] for m in comparison.get("models") or []]
    title = f"{bench.get('title') or bench.get('name') or 'benchmark'}: {' vs '.join(labels)}"
    points = _paired_points(comparison, rows_by_model or {})
    findings = _findings_section(comparison)
    sections = [
        *([findings] if findings else []),
        # the ranking and its plots first, then the tests behind it
        _ranking_section(comparison),
        _cs_section(comparison, points),
        _band_section(comparison, points),
        _pairs_section(comparison),
    ]
    folds = _fold_section(comparison)
    if folds:
        sections.append(folds)
    sections += [
        _models_section(comparison, points),
        _agreement_section(comparison, points),
        _failures_section(comparison),
        _runs_section(comparison),
        provenance_section(comparison),
    ]
    return Document("agebench comparison", title, sections)
