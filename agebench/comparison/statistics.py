"""The comparison itself: per-model metrics on the intersection, per-pair tests and
agreement, the ranking, as the JSON-serialisable ``comparison.json`` dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agebench.comparison.checks import check_comparable, pick_target, run_labels
from agebench.comparison.pairing import (
    failure_records,
    failure_status,
    paired_rows,
    record_failed,
)
from agebench.comparison.runs import FinishedRun, compare_id, row_key
from agebench.core import stats
from agebench.core.errors import AgebenchError
from agebench.core.metrics import compute_metrics
from agebench.core.metrics.epsilon import EPSILON_TARGETS
from agebench.core.metrics.rows import FAILURE_STATUSES, true_value
from agebench.core.provenance import provenance
from agebench.findings import contamination_marks, memorisation_finding

COMPARISON_SCHEMA = "agebench.comparison/1"
COMPARISON_FILE = "comparison.json"
INTERSECTION_RULE = (
    "A record counts as failed for a model when its status is not 'ok' or it has no "
    "prediction. Headline numbers are over the intersection: label rows that every model "
    "scored; a record failed by any model is left out for all models (and listed)."
)


def _model_size(run: FinishedRun, catalog: Any) -> int | None:
    """Bytes of the ONNX file: the known file, or the catalog's model of that name when its
    sha256 is the run's; None otherwise (an ad-hoc model, a per-fold family)."""
    if run.model_file is not None:
        return run.model_file.stat().st_size if run.model_file.is_file() else None
    name, sha = run.model.get("name"), run.model.get("sha256")
    if catalog is None or not name:
        return None
    try:
        spec = catalog.get(name)
    except AgebenchError:
        return None
    if spec.sha256 != sha or not spec.file.is_file():
        return None
    return spec.file.stat().st_size


def _catalog() -> Any:
    from agebench.models.catalog import ModelCatalog

    try:
        return ModelCatalog()
    except AgebenchError:
        return None


def _full_set(summary: Mapping[str, Any], target: str) -> dict[str, Any]:
    m = (summary.get("metrics") or {}).get(target) or {}
    keys = ("n_rows", "n_scored", "coverage", "mae", "mae_ci", "bias", "cs5", "n_failed")
    return {k: m.get(k) for k in keys} | {"epsilon_error": m.get("epsilon_error")}


def _epsilon(rows: Sequence[Mapping[str, Any]], target: str) -> dict[str, Any]:
    """Epsilon-error over the intersection: of the target when it is an apparent age, else of
    the apparent age when the rows carry one with its spread; None without."""
    for candidate in (target, *sorted(EPSILON_TARGETS)):
        if candidate not in EPSILON_TARGETS:
            continue
        m = compute_metrics(rows, target=candidate, n_boot=0)
        if m["epsilon_error"] is not None:
            return {
                "epsilon_error": m["epsilon_error"],
                "n_epsilon": m["n_epsilon"],
                "epsilon_target": candidate,
            }
    return {"epsilon_error": None, "n_epsilon": 0, "epsilon_target": None}


def _run_findings(run: FinishedRun, metrics: Mapping[str, Any]) -> list[dict[str, str]]:
    """A run's eval findings, carried as they are; and, when the memorisation signal on the
    compared records is over its threshold where the eval's own was not (a run scored before
    the signal existed, or a subset that concentrates it), that finding too: a ranking must
    not put a model that has seen the test set first without saying so."""
    findings = [dict(f) for f in run.summary.get("findings") or [] if isinstance(f, Mapping)]
    signal = metrics.get("memorisation") or {}
    if signal.get("flagged") and not any(f.get("kind") == "memorisation" for f in findings):
        findings.append(memorisation_finding(str(metrics.get("target")), signal))
    return findings


def _throughput(summary: Mapping[str, Any]) -> dict[str, Any]:
    timing = summary.get("timing") or {}
    execution = summary.get("execution") or {}
    counts = summary.get("counts") or {}
    return {
        "images_per_second": timing.get("images_per_second"),
        "seconds": timing.get("seconds"),
        "processed": counts.get("processed_this_run"),
        "device": execution.get("device"),
        "onnx_provider": execution.get("onnx_provider"),
        "detector_device": execution.get("detector_device"),
        "batch_size": execution.get("batch_size"),
    }


def _failure_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys((*FAILURE_STATUSES, "no_prediction"), 0)
    for row in rows:
        if record_failed(row):
            status = failure_status(row)
            counts[status] = counts.get(status, 0) + 1
    return counts


@dataclass(frozen=True)
class _Settings:
    """What ``compare_runs`` was asked for, handed to each of its parts."""

    target: str
    n_boot: int
    seed: int
    alpha: float
    confidence: float
    #: a ``ModelCatalog`` to look model sizes up in, or None
    catalog: Any


def _model_entry(
    label: str,
    run: FinishedRun,
    rows: Sequence[Mapping[str, Any]],
    scored_by_all: set[str],
    settings: _Settings,
) -> dict[str, Any]:
    """One model's entry: its metrics on the intersection (``rows``), its own full-set
    numbers, findings, speed, size and failures."""
    target = settings.target
    metrics = compute_metrics(
        rows,
        target=target,
        n_boot=settings.n_boot,
        seed=settings.seed,
        confidence=settings.confidence,
    )
    excluded_by_others = sum(
        1
        for r in run.rows
        if not record_failed(r)
        and true_value(r, target) is not None
        and row_key(r) not in scored_by_all
    )
    return {
        "label": label,
        "model": run.model.get("name"),
        "sha256": run.model.get("sha256"),
        "framework": run.model.get("framework"),
        "faces": run.faces,
        "mae": metrics["mae"],
        "mae_ci": metrics["mae_ci"],
        "metrics": metrics,
        **_epsilon(rows, target),
        "full_set": _full_set(run.summary, target),
        "findings": _run_findings(run, metrics),
        "throughput": _throughput(run.summary),
        "model_size_bytes": _model_size(run, settings.catalog),
        "failures": {
            "records": sum(1 for r in run.rows if record_failed(r)),
            "by_status": _failure_counts(run.rows),
            "scored_but_excluded": excluded_by_others,
        },
    }


def _pair_entries(
    labels: Sequence[str],
    models: Sequence[Mapping[str, Any]],
    preds: np.ndarray,
    abs_err: np.ndarray,
    settings: _Settings,
) -> list[dict[str, Any]]:
    """Every pair (A before B in the runs' order) on the intersection: the MAE difference
    with its paired bootstrap CI, the Wilcoxon test (Holm-corrected over all pairs), who is
    closer how often, and how the two agree."""
    n = abs_err.shape[1]
    boot = stats.bootstrap_resampled_means(abs_err, n_boot=settings.n_boot, seed=settings.seed)
    pairs = []
    for i, j in stats.all_pairs(range(len(labels))):
        boot_ci = stats.percentile_ci(boot[i] - boot[j], settings.confidence) if n else None
        diff = float(abs_err[i].mean() - abs_err[j].mean()) if n else None
        pairs.append(
            {
                "a": labels[i],
                "b": labels[j],
                "n": n,
                "mae_a": models[i]["mae"],
                "mae_b": models[j]["mae"],
                "mae_diff": diff,
                "mae_diff_ci": boot_ci,
                "ci_excludes_zero": None
                if boot_ci is None
                else bool(boot_ci[0] > 0.0 or boot_ci[1] < 0.0),
                "wilcoxon": stats.wilcoxon_abs_errors(abs_err[i], abs_err[j]),
                "closer": stats.closer_shares(abs_err[i], abs_err[j]),
                "agreement": stats.agreement(preds[i], preds[j]),
            }
        )
    adjusted = stats.holm([p["wilcoxon"]["p"] for p in pairs])
    for pair, p_holm in zip(pairs, adjusted, strict=True):
        pair["wilcoxon"]["p_holm"] = p_holm
        pair["significant"] = None if p_holm is None else bool(p_holm < settings.alpha)
    return pairs


def _matrix(labels: Sequence[str], pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The pairs as square matrices (row - column), for the report's tables."""
    k = len(labels)
    matrix: dict[str, Any] = {
        "models": list(labels),
        "mae_diff": [[None] * k for _ in range(k)],
        "p": [[None] * k for _ in range(k)],
        "p_holm": [[None] * k for _ in range(k)],
    }
    for (i, j), pair in zip(stats.all_pairs(range(k)), pairs, strict=True):
        diff = pair["mae_diff"]
        matrix["mae_diff"][i][j] = diff
        matrix["mae_diff"][j][i] = None if diff is None else -diff
        for name, value in (("p", pair["wilcoxon"]["p"]), ("p_holm", pair["wilcoxon"]["p_holm"])):
            matrix[name][i][j] = matrix[name][j][i] = value
    return matrix


def compare_runs(
    runs: Sequence[FinishedRun],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    confidence: float = 0.95,
    target: str | None = None,
    catalog: Any = "default",
) -> dict[str, Any]:
    """The comparison of finished runs, as the JSON-serialisable ``comparison.json`` dict.

    Refuses (``AgebenchError``) runs that are not comparable (``check_comparable``). The
    runs' order is kept: pair (A, B) has A before B, differences are A - B. ``catalog``: a
    ``ModelCatalog`` to look model sizes up in, None for none, "default" for the installed one.
    """
    labels = run_labels(runs)
    check_comparable(runs, labels)
    target = pick_target(runs, target)
    settings = _Settings(
        target, n_boot, seed, alpha, confidence, _catalog() if catalog == "default" else catalog
    )

    keys, aligned = paired_rows([r.rows for r in runs], target)
    failures = failure_records([r.rows for r in runs], labels, target)
    all_keys = [row_key(r) for r in runs[0].rows]
    n_label_rows = sum(1 for r in runs[0].rows if true_value(r, target) is not None)

    true = np.array([true_value(r, target) for r in aligned[0]], dtype=float)
    preds = np.array([[float(r["pred_age"]) for r in rows] for rows in aligned], dtype=float)
    preds = preds.reshape(len(runs), len(keys))
    abs_err = np.abs(preds - true)
    scored_by_all = set(keys)
    models = [
        _model_entry(label, run, rows, scored_by_all, settings)
        for label, run, rows in zip(labels, runs, aligned, strict=True)
    ]
    pairs = _pair_entries(labels, models, preds, abs_err, settings)
    rank = stats.ranking(
        {m["label"]: m["mae"] for m in models},
        {(p["a"], p["b"]): p["wilcoxon"]["p_holm"] for p in pairs},
        alpha,
    )
    for entry in rank["order"]:
        entry["contamination"] = contamination_marks(
            next(m["findings"] for m in models if m["label"] == entry["model"])
        )
    bench = runs[0].benchmark
    return {
        "schema": COMPARISON_SCHEMA,
        "id": compare_id(runs),
        "target": target,
        "benchmark": {
            "name": bench.get("name"),
            "title": bench.get("title"),
            "version": bench.get("version"),
            "protocol": bench.get("protocol"),
            "split": bench.get("split"),
            "fingerprints": sorted({r.benchmark.get("fingerprint") for r in runs}, key=str),
            "files_sha256": bench.get("files_sha256"),
            "faces_modes": sorted({str(r.faces) for r in runs}),
        },
        "settings": {
            "n_boot": n_boot,
            "seed": seed,
            "confidence": confidence,
            "alpha": alpha,
            "test": "Wilcoxon signed-rank on absolute errors, two-sided, zero differences dropped",
            "p_adjust": "holm",
            "tie_tolerance": stats.TIE_TOLERANCE,
        },
        "runs": [
            {
                "label": label,
                "path": str(run.path),
                "summary_path": str(run.summary_path),
                "predictions_path": str(run.predictions_path),
                "model": {
                    "name": run.model.get("name"),
                    "sha256": run.model.get("sha256"),
                    "per_fold": run.model.get("per_fold"),
                },
                "faces": run.faces,
                "fingerprint": run.benchmark.get("fingerprint"),
                "records": len(run.rows),
                "created": (run.summary.get("provenance") or {}).get("created"),
            }
            for label, run in zip(labels, runs, strict=True)
        ],
        "intersection": {
            "n_records": len(all_keys),
            "n_label_rows": n_label_rows,
            "n_scored_by_all": len(keys),
            "n_excluded": n_label_rows - len(keys),
            "n_failed_records": len(failures),
            "rule": INTERSECTION_RULE,
        },
        "models": models,
        "pairs": pairs,
        "matrix": _matrix(labels, pairs),
        "ranking": rank,
        "findings": [{"model": m["label"], **finding} for m in models for finding in m["findings"]],
        "failures": failures,
        "provenance": provenance(),
    }
