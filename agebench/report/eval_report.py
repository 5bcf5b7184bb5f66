"""An eval's report as a document (``agebench.report.document``): findings, headline,
run, one section per target, age groups, provenance and label problems.

No number is computed here: every value shown comes from ``agebench.core.metrics`` via the
summary, except the plotted points, which are read from the rows with ``metrics``' own row
accessors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from agebench.core.metrics.rows import scored_pairs
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

Rows = Sequence[Mapping[str, Any]]


def _one_confidence(metrics: Mapping[str, Mapping[str, Any]]) -> float | None:
    """The confidence level of the MAE intervals when all targets share one."""
    confidences = {m.get("confidence") for m in metrics.values() if m.get("confidence")}
    return confidences.pop() if len(confidences) == 1 else None


def _target_figures(target: str, m: Mapping[str, Any], rows: Rows) -> list[Figure]:
    """The four plots of one target; none without scored rows."""
    true_array, pred_array = scored_pairs(rows, target)
    if not len(true_array):
        return []
    true: list[float] = true_array.tolist()
    pred: list[float] = pred_array.tolist()
    return [
        Figure("Cumulative score CS@L, L = 0..20 years", partial(figures.cs_curve, m)),
        Figure(
            f"Predicted age against true {target}",
            partial(figures.predicted_against_true, true, pred, target),
        ),
        Figure("MAE by true age band", partial(figures.mae_by_band, m)),
        Figure("Distribution of errors", partial(figures.error_histogram, true, pred)),
    ]


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
    tables = [key_value_table(run)]
    if summary.get("execution"):
        tables.append(key_value_table(summary["execution"], "Execution"))
    paragraphs = [f"Face crops: {faces['reconciliation']}"] if faces.get("reconciliation") else []
    return Section("Run", paragraphs, tables)


def _headline_section(summary: Mapping[str, Any]) -> Section:
    metrics = summary.get("metrics") or {}
    mae = f"MAE [{ci_label(_one_confidence(metrics))}]"
    headers = ["target", "label rows", "scored", "coverage", mae]
    headers += ["RMSE", "bias", "median AE", "CS@5", "CE@20", "ε-error"]
    rows = [
        [
            target,
            str(m.get("n_rows", 0)),
            str(m.get("n_scored", 0)),
            pct(m.get("coverage")),
            with_ci(m.get("mae"), m.get("mae_ci")),
            num(m.get("rmse")),
            num(m.get("bias")),
            num(m.get("median_ae")),
            pct(m.get("cs5")),
            pct(m.get("ce20")),
            num(m.get("epsilon_error"), 4),
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
        [b["band"], str(b["n"]), num(b.get("mae")), num(b.get("bias"))]
        for b in m.get("by_band") or []
    ]
    return Table(["true age", "n", "MAE", "bias"], rows, "By age band")


def _attribute_tables(m: Mapping[str, Any]) -> list[Table]:
    return [
        Table(
            ["value", "n", "MAE", "bias"],
            [[e["value"], str(e["n"]), num(e.get("mae")), num(e.get("bias"))] for e in entries],
            f"By {attr}",
        )
        for attr, entries in (m.get("by_attribute") or {}).items()
    ]


def _under_age_table(m: Mapping[str, Any]) -> Table:
    u = m.get("under_age") or {}
    headers = ["threshold", "minors", "adults", "precision", "recall"]
    headers += ["false accept (minor as adult)", "false reject (adult as minor)"]
    row = [
        text(u.get("threshold")),
        text(u.get("n_minors")),
        text(u.get("n_adults")),
        pct(u.get("precision")),
        pct(u.get("recall")),
        pct(u.get("false_accept_rate")),
        pct(u.get("false_reject_rate")),
    ]
    return Table(headers, [row], "Under-age check")


def _target_section(target: str, m: Mapping[str, Any], rows: Rows | None) -> Section:
    cs = m.get("cs") or {}
    failed = ", ".join(f"{k} {v}" for k, v in (m.get("n_failed") or {}).items())
    paragraphs = [
        f"Label rows {m.get('n_rows', 0)}, scored {m.get('n_scored', 0)}; "
        f"not scored: {failed or 'none'}."
    ]
    tables = [
        Table(["L (years)", *cs], [["CS@L", *(pct(v) for v in cs.values())]], "Cumulative score"),
        _band_table(m),
        *_attribute_tables(m),
    ]
    if m.get("by_fold"):
        folds = [[f["fold"], str(f["n"]), num(f.get("mae"))] for f in m["by_fold"]]
        tables.append(Table(["fold", "n", "MAE"], folds, "By fold"))
        paragraphs.append(
            f"Fold MAE mean {num(m.get('fold_mae_mean'))} ± {num(m.get('fold_mae_std'))} "
            f"(sample std over folds); the headline MAE {num(m.get('mae'))} is pooled over "
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
    return Section(
        f"Target: {target}",
        paragraphs,
        tables,
        figures=_target_figures(target, m, rows or []),
        figure_note="No scored rows: nothing to plot.",
    )


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
        f"{s.get('n_zero', 0)} ({pct(s.get('share_zero'))})",
        f"{s.get('n_neighbour', 0)} ({pct(s.get('share_neighbour'))})",
        num(s.get("ratio")),
        num(s.get("ratio_low")),
        text(s.get("threshold")),
        flagged,
    ]
    return Table(headers, [row], "Error density at zero (memorisation signal)")


def _group_section(g: Mapping[str, Any]) -> Section:
    ci = g.get("accuracy_ci")
    accuracy = pct(g.get("accuracy")) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")
    head = Table(
        ["label rows", "scored", "coverage", "accuracy [CI]", "one-off", "MAE to midpoint"],
        [
            [
                str(g.get("n_rows", 0)),
                str(g.get("n_scored", 0)),
                pct(g.get("coverage")),
                accuracy,
                pct(g.get("one_off")),
                num(g.get("mae_midpoint")),
            ]
        ],
    )
    tables = [head]
    if g.get("by_fold"):
        folds = [
            [f["fold"], str(f["n"]), pct(f.get("accuracy")), pct(f.get("one_off"))]
            for f in g["by_fold"]
        ]
        folds.append(
            [
                "mean ± std",
                "",
                f"{pct(g.get('accuracy_fold_mean'))} ± {pct(g.get('accuracy_fold_std'))}",
                f"{pct(g.get('one_off_fold_mean'))} ± {pct(g.get('one_off_fold_std'))}",
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


def eval_document(summary: Mapping[str, Any], rows: Rows | None = None) -> Document:
    """The eval's report; ``rows`` (the prediction rows) give the figures' points, and
    without them the document has no figures (all Markdown needs)."""
    bench = summary.get("benchmark") or {}
    model = summary.get("model") or {}
    title = f"{bench.get('title') or bench.get('name') or 'benchmark'}: {model.get('name', '?')}"
    findings = _findings_section(summary)
    # the headline, then each target's plots and tables; how it ran comes after the results
    sections = [*([findings] if findings else []), _headline_section(summary)]
    for target, m in (summary.get("metrics") or {}).items():
        sections.append(_target_section(target, m, rows))
    if summary.get("group_metrics"):
        sections.append(_group_section(summary["group_metrics"]))
    sections.append(_run_section(summary))
    sections.append(provenance_section(summary))
    problems = _problems_section(summary)
    if problems:
        sections.append(problems)
    return Document("agebench evaluation", title, sections)
