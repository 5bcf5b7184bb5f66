"""``agebench compare``: several models on one benchmark, paired record by record, one report.

Pure (no click). A comparison is computed from *finished eval runs* alone (a folder holding
``summary.json`` and ``predictions.jsonl``), so it never needs to know how they were made, and
it imports no runner: ``agebench.runner.compare`` runs the models first where asked (reusing
any finished eval of the same model on the same data) and writes the report.

Rules, chosen once:

- Runs are comparable only on the same benchmark, benchmark version, protocol and split, the
  same data (``summary["benchmark"]["fingerprint"]``) and the same records with the same labels.
  The fingerprint also covers the faces mode; runs that differ *only* in how faces were
  obtained (``--faces none`` against ``detect``) are comparable when their image and label
  files (``files_sha256``), benchmark options and every record's labels and fold agree: they
  saw the same images, and the face step is part of what is compared.
- Records are paired by ``image`` + ``source``. A record *fails* for a model when its status is
  not "ok" or it carries no prediction. Headline numbers are over the *intersection*: label
  rows that every model scored. A failure in one model removes the record for all of them, and
  is listed; each model's own full-set numbers (from its summary) are shown beside.
- Per-pair tests are Wilcoxon signed-rank on the absolute errors, Holm-corrected over all
  pairs; groups and the ranking use the corrected p-values (``agebench.core.stats``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agebench.core import runfiles, stats
from agebench.core.atomic import read_json
from agebench.core.errors import AgebenchError
from agebench.core.metrics import EPSILON_TARGETS, FAILURE_STATUSES, compute_metrics, true_value
from agebench.core.provenance import provenance
from agebench.findings import contamination_marks, memorisation_finding

COMPARISON_SCHEMA = "agebench.comparison/1"
COMPARISON_FILE = "comparison.json"
EVAL_SUMMARY_SCHEMA = "agebench.eval-summary/1"
INTERSECTION_RULE = (
    "A record counts as failed for a model when its status is not 'ok' or it has no "
    "prediction. Headline numbers are over the intersection: label rows that every model "
    "scored; a record failed by any model is left out for all models (and listed)."
)


# --- finished runs ----------------------------------------------------------------------------


@dataclass
class FinishedRun:
    """One finished eval run: its folder, its summary and its prediction rows."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    #: the ONNX file, when known (the run was made here); else looked up by name
    model_file: Path | None = None

    @property
    def summary_path(self) -> Path:
        return self.path / runfiles.SUMMARY_FILE

    @property
    def predictions_path(self) -> Path:
        return self.path / runfiles.PREDICTIONS_FILE

    @property
    def benchmark(self) -> dict[str, Any]:
        return self.summary.get("benchmark") or {}

    @property
    def model(self) -> dict[str, Any]:
        return self.summary.get("model") or {}

    @property
    def faces(self) -> str | None:
        return (self.summary.get("faces") or {}).get("mode")


def row_key(row: Mapping[str, Any]) -> str:
    """A record's identity, as the eval runner keys it: an image can hold several faces."""
    return f"{row.get('image')}|{row.get('source')}"


def load_run(path: Path | str) -> FinishedRun:
    """Read a finished eval run from its folder (or from its ``summary.json``).

    Raises ``AgebenchError`` with one line naming the folder when it is not a finished run:
    missing folder or files, a summary of another schema, unreadable or duplicate rows, or
    rows that disagree with the summary's record count.
    """
    folder = Path(path)
    if folder.name == runfiles.SUMMARY_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise AgebenchError(f"{folder}: no such eval run folder")
    summary_path = folder / runfiles.SUMMARY_FILE
    if not summary_path.is_file():
        hint = (
            "an interrupted eval (rerun 'agebench eval' to finish it)"
            if (folder / "predictions.partial.jsonl").is_file()
            else "not a finished eval run"
        )
        raise AgebenchError(f"{folder}: no {runfiles.SUMMARY_FILE}: {hint}")
    summary = read_json(summary_path)
    if not isinstance(summary, dict):
        raise AgebenchError(f"{summary_path}: not a readable JSON summary")
    if summary.get("schema") != EVAL_SUMMARY_SCHEMA:
        raise AgebenchError(
            f"{summary_path}: schema {summary.get('schema')!r}, expected {EVAL_SUMMARY_SCHEMA!r}"
        )
    predictions = folder / runfiles.PREDICTIONS_FILE
    rows = runfiles.read_prediction_rows(predictions)
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        key = row_key(row)
        if key in seen:
            raise AgebenchError(f"{predictions}: row {number}: record {key} appears twice")
        seen.add(key)
    expected = (summary.get("counts") or {}).get("records")
    if expected is not None and expected != len(rows):
        raise AgebenchError(
            f"{predictions}: {len(rows)} rows, but its summary counts {expected} records"
        )
    return FinishedRun(folder, summary, rows)


# --- can these runs be compared? -----------------------------------------------------------------


def run_labels(runs: Sequence[FinishedRun]) -> list[str]:
    """A unique display name per run: the model name, then ``[faces mode]`` when the same
    model appears twice, then ``#k`` when that is still ambiguous."""
    names = [str(r.model.get("name") or r.path.name) for r in runs]
    labels = [
        f"{name} [{run.faces}]" if names.count(name) > 1 else name
        for name, run in zip(names, runs, strict=True)
    ]
    result = []
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            label = f"{label} #{labels[: i + 1].count(label)}"
        result.append(label)
    return result


def _differs(
    what: str, labels: Sequence[str], values: Sequence[Any], show: Callable[[Any], str] = str
) -> None:
    if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
        described = ", ".join(
            f"{label}: {show(value)}" for label, value in zip(labels, values, strict=True)
        )
        raise AgebenchError(f"cannot compare runs on different {what} ({described})")


def _label_signature(row: Mapping[str, Any]) -> list[Any]:
    return [row.get("age"), row.get("targets") or {}, row.get("age_std"), row.get("fold")]


def check_comparable(runs: Sequence[FinishedRun], labels: Sequence[str]) -> None:
    """Raise ``AgebenchError`` (one line) unless the runs scored the same records of the same
    data; see the module docstring for the rule."""
    if len(runs) < 2:
        raise AgebenchError(f"compare needs at least two runs, got {len(runs)}")
    folders = [r.path.resolve() for r in runs]
    for i, folder in enumerate(folders):
        if folder in folders[:i]:
            raise AgebenchError(f"{runs[i].path}: the same run is given twice")
    bench = [r.benchmark for r in runs]
    _differs("benchmarks", labels, [b.get("name") for b in bench])
    _differs("benchmark versions", labels, [b.get("version") for b in bench])
    _differs(
        "protocols/splits",
        labels,
        [[b.get("protocol"), b.get("split")] for b in bench],
        lambda v: f"{v[0]}/{v[1] or 'all'}",
    )
    short = lambda v: str(v)[:12] if v else "none"  # noqa: E731
    fingerprints = [b.get("fingerprint") for b in bench]
    if len(set(fingerprints)) > 1:
        # same faces mode: the fingerprints must agree; across faces modes, the image and
        # label files and the options must (the records' labels are checked below)
        by_mode: dict[Any, list[int]] = {}
        for i, run in enumerate(runs):
            by_mode.setdefault(run.faces, []).append(i)
        for members in by_mode.values():
            _differs(
                "data (fingerprints of the images and labels)",
                [labels[i] for i in members],
                [fingerprints[i] for i in members],
                short,
            )
        _differs(
            "data (the image and label files)",
            labels,
            [b.get("files_sha256") for b in bench],
            short,
        )
        _differs("benchmark options", labels, [b.get("options") or {} for b in bench], _json)
    keys = [[row_key(r) for r in run.rows] for run in runs]
    first = set(keys[0])
    reference = {row_key(r): _label_signature(r) for r in runs[0].rows}
    for label, run, run_keys in zip(labels[1:], runs[1:], keys[1:], strict=True):
        other = set(run_keys)
        if other != first:
            only_a = sorted(first - other)
            only_b = sorted(other - first)
            example = (
                f"{only_a[0].split('|')[0]} only in {labels[0]}"
                if only_a
                else f"{only_b[0].split('|')[0]} only in {label}"
            )
            raise AgebenchError(
                f"cannot compare runs on different record sets ({labels[0]}: "
                f"{len(first)} records, {label}: {len(other)}; {len(only_a)} only in "
                f"{labels[0]}, {len(only_b)} only in {label}, e.g. {example})"
            )
        for row in run.rows:
            if _label_signature(row) != reference[row_key(row)]:
                raise AgebenchError(
                    f"cannot compare runs whose labels differ ({row.get('image')}: "
                    f"{labels[0]} has {_json(reference[row_key(row)])}, "
                    f"{label} has {_json(_label_signature(row))})"
                )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def pick_target(runs: Sequence[FinishedRun], target: str | None = None) -> str:
    """The target compared: ``target`` when every run has metrics for it, else the first
    target of the first run's summary (the benchmark's headline) that every run has."""
    available = [list((r.summary.get("metrics") or {}).keys()) for r in runs]
    common = [t for t in available[0] if all(t in a for a in available[1:])]
    if target is not None:
        if target not in common:
            shown = ", ".join(common) or "none"
            raise AgebenchError(f"target {target!r} is not scored in every run (common: {shown})")
        return target
    if not common:
        bench = runs[0].benchmark.get("name", "?")
        raise AgebenchError(
            f"{bench}: the runs have no age target in common to compare "
            "(age-group benchmarks such as Adience are not supported by compare)"
        )
    return common[0]


# --- the comparison ----------------------------------------------------------------------------


def _failed(row: Mapping[str, Any]) -> bool:
    """Status not ok, or no usable prediction."""
    pred = row.get("pred_age")
    usable = isinstance(pred, int | float) and not isinstance(pred, bool) and math.isfinite(pred)
    return row.get("status") != "ok" or not usable


def _status(row: Mapping[str, Any]) -> str:
    return "no_prediction" if row.get("status") == "ok" and _failed(row) else str(row["status"])


def compare_id(runs: Iterable[FinishedRun]) -> str:
    """12 hex digits of the sha256 of the runs' resolved folders, sorted: the same runs give
    the same id whatever their order."""
    folders = sorted(str(r.path.resolve()) for r in runs)
    return hashlib.sha256("\n".join(folders).encode()).hexdigest()[:12]


def paired_rows(
    runs_rows: Sequence[Sequence[Mapping[str, Any]]], target: str
) -> tuple[list[str], list[list[Mapping[str, Any]]]]:
    """The intersection: keys (in the first run's order) of label rows for ``target`` that
    every run scored, and for each run its rows of those keys, aligned."""
    indexed = [{row_key(r): r for r in rows} for rows in runs_rows]
    keys = [
        row_key(r)
        for r in runs_rows[0]
        if true_value(r, target) is not None
        and all(not _failed(index[row_key(r)]) for index in indexed)
    ]
    return keys, [[index[k] for k in keys] for index in indexed]


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
        if _failed(row):
            status = _status(row)
            counts[status] = counts.get(status, 0) + 1
    return counts


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
    if catalog == "default":
        catalog = _catalog()

    # -- pairing
    keys, aligned = paired_rows([r.rows for r in runs], target)
    indexed = [{row_key(r): r for r in run.rows} for run in runs]
    all_keys = [row_key(r) for r in runs[0].rows]
    n_label_rows = sum(1 for r in runs[0].rows if true_value(r, target) is not None)
    failures = []
    for key in all_keys:
        rows: Sequence[Mapping[str, Any]] = [index[key] for index in indexed]
        if any(_failed(r) for r in rows):
            failures.append(
                {
                    "image": rows[0].get("image"),
                    "source": rows[0].get("source"),
                    "true": true_value(rows[0], target),
                    "failed": [lb for lb, r in zip(labels, rows, strict=True) if _failed(r)],
                    "status": {lb: _status(r) for lb, r in zip(labels, rows, strict=True)},
                    "error": {
                        lb: r.get("error")
                        for lb, r in zip(labels, rows, strict=True)
                        if _failed(r) and r.get("error")
                    },
                }
            )
    inter = set(keys)

    # -- per model, on the intersection
    true = np.array([true_value(r, target) for r in aligned[0]], dtype=float)
    preds = np.array([[float(r["pred_age"]) for r in rows] for rows in aligned], dtype=float)
    preds = preds.reshape(len(runs), len(keys))
    abs_err = np.abs(preds - true)
    models = []
    for label, run, rows in zip(labels, runs, aligned, strict=True):
        metrics = compute_metrics(
            rows, target=target, n_boot=n_boot, seed=seed, confidence=confidence
        )
        failed_here = [r for r in run.rows if _failed(r)]
        excluded_by_others = sum(
            1
            for r in run.rows
            if not _failed(r) and true_value(r, target) is not None and row_key(r) not in inter
        )
        models.append(
            {
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
                "model_size_bytes": _model_size(run, catalog),
                "failures": {
                    "records": len(failed_here),
                    "by_status": _failure_counts(run.rows),
                    "scored_but_excluded": excluded_by_others,
                },
            }
        )

    # -- per pair
    pairs_idx = stats.all_pairs(range(len(runs)))
    boot = stats.bootstrap_resampled_means(abs_err, n_boot=n_boot, seed=seed)
    pairs = []
    for i, j in pairs_idx:
        boot_ci = stats.percentile_ci(boot[i] - boot[j], confidence) if keys else None
        diff = float(abs_err[i].mean() - abs_err[j].mean()) if keys else None
        pairs.append(
            {
                "a": labels[i],
                "b": labels[j],
                "n": len(keys),
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
        pair["significant"] = None if p_holm is None else bool(p_holm < alpha)

    k = len(runs)
    matrix: dict[str, Any] = {
        "models": labels,
        "mae_diff": [[None] * k for _ in range(k)],
        "p": [[None] * k for _ in range(k)],
        "p_holm": [[None] * k for _ in range(k)],
    }
    for (i, j), pair in zip(pairs_idx, pairs, strict=True):
        diff = pair["mae_diff"]
        matrix["mae_diff"][i][j] = diff
        matrix["mae_diff"][j][i] = None if diff is None else -diff
        for name, value in (("p", pair["wilcoxon"]["p"]), ("p_holm", pair["wilcoxon"]["p_holm"])):
            matrix[name][i][j] = matrix[name][j][i] = value

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
        "matrix": matrix,
        "ranking": rank,
        "findings": [{"model": m["label"], **finding} for m in models for finding in m["findings"]],
        "failures": failures,
        "provenance": provenance(),
    }


# --- running models, then comparing -----------------------------------------------------------
