"""``agebench compare`` as a run: evaluate the models that are not finished runs yet, compare,
write the report.

The comparison itself (``agebench.comparison``) reads finished runs only; this module is the
part that runs things, so it sits in the runner, above both the comparison and the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agebench.comparison.checks import run_labels
from agebench.comparison.runs import FinishedRun, load_run
from agebench.comparison.statistics import compare_runs
from agebench.core.errors import AgebenchError
from agebench.core.runfiles import SUMMARY_FILE
from agebench.report.write import write_compare_report
from agebench.runner.evaluate import EvalConfig, EvalRun

#: ``progress(item, event, amount)``: one model's eval progress ("total"/"advance")
CompareProgress = Callable[[str, str, int], None]


@dataclass
class CompareOutcome:
    comparison: dict[str, Any]
    out: Path
    runs: list[FinishedRun]
    #: per run, in order: True/False whether its eval was reused, None when read from a folder
    reused: list[bool | None] = field(default_factory=list)


def _is_run_folder(item: str | Path) -> bool:
    path = Path(item)
    return path.is_dir() or path.name == SUMMARY_FILE


def run_compare(
    models_or_paths: Sequence[str | Path],
    eval_kwargs: Mapping[str, Any] | None = None,
    out_root: Path = Path("reports"),
    progress: CompareProgress | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    confidence: float = 0.95,
    target: str | None = None,
) -> CompareOutcome:
    """Compare models or finished runs; write ``<out_root>/compare-<id>/``.

    Each item is a finished eval run folder (any existing folder is read as one) or a model
    (a registered name or a manifest ``.toml``), which is run with ``run_eval`` over
    ``eval_kwargs`` (``EvalConfig`` fields: bench and root at least; ``out_root`` defaults to
    this one). Every model is resolved and its benchmark loaded before any is run, so a typo
    fails before hours of inference. ``progress(item, event, amount)`` relays each model's
    eval progress ("total"/"advance").
    """
    if len(models_or_paths) < 2:
        raise AgebenchError(
            f"compare needs at least two models or runs, got {len(models_or_paths)}"
        )
    kwargs = dict(eval_kwargs or {})
    kwargs.setdefault("out_root", out_root)
    plans: list[FinishedRun | tuple[str, Any]] = []
    for item in models_or_paths:
        if _is_run_folder(item):
            plans.append(load_run(item))
            continue
        if not kwargs.get("bench") or not kwargs.get("root"):
            raise AgebenchError(
                f"{item}: not a finished eval run folder; to run it as a model, give "
                "--bench and --root"
            )
        plans.append((str(item), EvalRun(EvalConfig(**kwargs, model=str(item)))))
    runs: list[FinishedRun] = []
    reused: list[bool | None] = []
    for plan in plans:
        if isinstance(plan, FinishedRun):
            runs.append(plan)
            reused.append(None)
            continue
        item, evaluation = plan
        relay = (
            (lambda event, amount, item=item: progress(item, event, amount)) if progress else None
        )
        outcome = evaluation.run(relay)
        run = load_run(outcome.out)
        files = {spec.file for spec in evaluation.models.values()}
        run.model_file = files.pop() if len(files) == 1 else None
        runs.append(run)
        reused.append(outcome.reused)
    comparison = compare_runs(
        runs, n_boot=n_boot, seed=seed, alpha=alpha, confidence=confidence, target=target
    )
    out = Path(out_root) / f"compare-{comparison['id']}"
    rows_by_model = {label: run.rows for label, run in zip(run_labels(runs), runs, strict=True)}
    write_compare_report(out, comparison, rows_by_model)
    return CompareOutcome(comparison, out, runs, reused)
