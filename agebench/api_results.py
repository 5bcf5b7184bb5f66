"""What the Python API returns: finished predict, eval and compare runs as typed objects.

A result is read back from its folder (``summary.json`` / ``comparison.json`` and the
prediction rows) by :func:`load_run`, whether this process just wrote it or an earlier agebench
did: the files are the one source of truth, so a result from ``agebench.predict(...)`` and one
from ``agebench.load_run(folder)`` are the same object. Older schemas are read by filling what
they lack (records written before run identities have no ``run``/``source``, eval rows before
decode notes no ``notes``, ``run`` or ``model``) instead of refusing them.

Pure: no click, no rich; pandas is imported only by ``to_pandas``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agebench.core.errors import AgebenchError
from agebench.core.tables import TableFormat, flatten, write_table
from agebench.runner import sink

if TYPE_CHECKING:  # pragma: no cover - typing only; pandas loads when a table is asked for
    import pandas as pd

PREDICT_SUMMARY_SCHEMA = "agebench.predict-summary/1"
EVAL_SUMMARY_SCHEMA = "agebench.eval-summary/1"
COMPARISON_SCHEMA = "agebench.comparison/1"
COMPARISON_FILE = "comparison.json"
REPORT_HTML = "report.html"


@dataclass(frozen=True)
class ModelRef:
    """Which model made a run: its registered name and the sha256 of its weights."""

    name: str | None
    sha256: str | None

    @classmethod
    def of(cls, model: Mapping[str, Any] | None) -> ModelRef:
        model = model or {}
        return cls(model.get("name"), model.get("sha256"))


@dataclass(frozen=True)
class TargetMetrics:
    """The headline metrics of one target (``age``, ``apparent_age``...) of an eval; ``values``
    holds every metric the summary has (CS curve, bands, folds...)."""

    target: str
    mae: float | None
    mae_ci: tuple[float, float] | None
    rmse: float | None
    bias: float | None
    cs5: float | None
    coverage: float | None
    n_scored: int | None
    epsilon_error: float | None
    values: Mapping[str, Any]

    @classmethod
    def of(cls, target: str, values: Mapping[str, Any]) -> TargetMetrics:
        ci = values.get("mae_ci")
        return cls(
            target=target,
            mae=values.get("mae"),
            mae_ci=(ci[0], ci[1]) if ci and None not in ci[:2] else None,
            rmse=values.get("rmse"),
            bias=values.get("bias"),
            cs5=values.get("cs5"),
            coverage=values.get("coverage"),
            n_scored=values.get("n_scored"),
            epsilon_error=values.get("epsilon_error"),
            values=MappingProxyType(dict(values)),
        )


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def _read_json(path: Path) -> dict[str, Any]:
    data = sink.read_json(path)
    if not isinstance(data, dict):
        raise AgebenchError(f"{path}: not a readable JSON object")
    return data


@dataclass(frozen=True)
class PredictCounts:
    images: int
    images_ok: int
    images_no_face: int
    images_failed: int
    faces: int
    decoder_warnings: int
    processed_this_run: int
    skipped_resumed: int


@dataclass(frozen=True)
class PredictResult:
    """A finished ``agebench predict`` folder. ``rows()`` are the lines of
    ``predictions.jsonl``: one per face, or one per image without a face (``face`` None)."""

    out: Path
    model: ModelRef
    counts: PredictCounts
    faces_mode: str | None
    failures: tuple[Mapping[str, Any], ...]
    #: what ran the graph (an onnxruntime provider name, or torch's device), as recorded
    provider: str | None
    #: images per second of this run's own work (None when it processed none)
    images_per_second: float | None
    summary: Mapping[str, Any] = field(repr=False)
    #: predict writes no report (its summary is ``summary.json``): always None
    report: Path | None = None

    @property
    def exit_code(self) -> int:
        """What ``agebench predict`` exits with: 3 when an image failed or had no face."""
        return 3 if self.counts.images_failed or self.counts.images_no_face else 0

    def rows(self) -> list[dict[str, Any]]:
        return sink.read_prediction_rows(self.out / sink.PREDICTIONS_FILE)

    def to_pandas(self) -> pd.DataFrame:
        return flatten(self.rows())

    @classmethod
    def read(cls, folder: Path, summary: Mapping[str, Any]) -> PredictResult:
        counts = summary.get("counts") or {}
        return cls(
            out=folder,
            model=ModelRef.of(summary.get("model")),
            counts=PredictCounts(
                images=counts.get("images", 0),
                images_ok=counts.get("images_ok", 0),
                images_no_face=counts.get("images_no_face", 0),
                images_failed=counts.get("images_failed", 0),
                faces=counts.get("faces", 0),
                decoder_warnings=counts.get("images_decoder_warnings", 0),
                processed_this_run=counts.get("processed_this_run", 0),
                skipped_resumed=counts.get("skipped_resumed", 0),
            ),
            faces_mode=summary.get("faces_mode"),
            failures=tuple(_frozen(f) for f in summary.get("failures") or ()),
            provider=(summary.get("execution") or {}).get("onnx_provider"),
            images_per_second=(summary.get("timing") or {}).get("images_per_second"),
            summary=_frozen(summary),
        )


@dataclass(frozen=True)
class EvalCounts:
    records: int
    scored: int
    no_face: int
    failed: int
    missing: int
    label_problems: int
    decoder_warnings: int
    processed_this_run: int


#: what an eval row of an earlier schema lacks, filled so that every row has every column
_EVAL_ROW_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"notes": (), "run": None, "model": None, "source": None, "attributes": {}, "targets": {}}
)


@dataclass(frozen=True)
class EvalResult:
    """A finished ``agebench eval`` folder: metrics per target, counts, the report."""

    out: Path
    benchmark: str | None
    protocol: str | None
    split: str | None
    model: ModelRef
    faces_mode: str | None
    counts: EvalCounts
    metrics: Mapping[str, TargetMetrics]
    report: Path | None
    #: whether the run was a finished one reused as is (None: read from a folder)
    reused: bool | None
    #: age-group accuracy (``accuracy``, ``one_off``) of a benchmark scored in groups, else None
    group_metrics: Mapping[str, Any] | None
    #: label rows that could not be read (one line each), as the summary lists them
    problems: tuple[str, ...]
    #: what the run noticed about its own results (``kind``, ``message``: contamination...)
    findings: tuple[Mapping[str, Any], ...]
    summary: Mapping[str, Any] = field(repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """Every record's row (``predictions.jsonl``), in the benchmark's order."""
        rows = sink.read_prediction_rows(self.out / sink.PREDICTIONS_FILE)
        for row in rows:
            for key, default in _EVAL_ROW_DEFAULTS.items():
                if key not in row:
                    row[key] = list(default) if isinstance(default, tuple) else default
        return rows

    def to_pandas(self) -> pd.DataFrame:
        return flatten(self.rows())

    @classmethod
    def read(
        cls, folder: Path, summary: Mapping[str, Any], reused: bool | None = None
    ) -> EvalResult:
        bench = summary.get("benchmark") or {}
        counts = summary.get("counts") or {}
        report = folder / REPORT_HTML
        return cls(
            out=folder,
            benchmark=bench.get("name"),
            protocol=bench.get("protocol"),
            split=bench.get("split"),
            model=ModelRef.of(summary.get("model")),
            faces_mode=(summary.get("faces") or {}).get("mode"),
            counts=EvalCounts(
                records=counts.get("records", 0),
                scored=counts.get("scored", 0),
                no_face=counts.get("no_face", 0),
                failed=counts.get("failed", 0),
                missing=counts.get("missing", 0),
                label_problems=counts.get("label_problems", 0),
                decoder_warnings=counts.get("decoder_warnings", 0),
                processed_this_run=counts.get("processed_this_run", 0),
            ),
            metrics=MappingProxyType(
                {t: TargetMetrics.of(t, m) for t, m in (summary.get("metrics") or {}).items()}
            ),
            report=report if report.is_file() else None,
            reused=reused,
            group_metrics=_frozen(summary["group_metrics"])
            if summary.get("group_metrics")
            else None,
            problems=tuple(str(p) for p in summary.get("problems") or ()),
            findings=tuple(_frozen(f) for f in summary.get("findings") or ()),
            summary=_frozen(summary),
        )


@dataclass(frozen=True)
class RankedModel:
    """One line of a comparison's ranking, on the records every model scored."""

    rank: int
    label: str
    model: ModelRef
    mae: float | None
    mae_ci: tuple[float, float] | None
    #: models sharing a letter are not distinguishable at the comparison's alpha
    groups: str | None


@dataclass(frozen=True)
class CompareResult:
    """A finished ``agebench compare`` folder: the ranking and the runs it compared."""

    out: Path
    target: str | None
    benchmark: str | None
    ranking: tuple[RankedModel, ...]
    #: the compared eval runs' folders, by label, in the comparison's order
    run_paths: Mapping[str, Path]
    n_scored_by_all: int
    report: Path | None
    comparison: Mapping[str, Any] = field(repr=False)
    #: per compared run, in order: whether its eval was reused (True) or run now (False);
    #: None for a run read from a finished folder, and for every run of a folder read back
    reused: tuple[bool | None, ...] = ()

    def runs(self) -> dict[str, EvalResult]:
        """The compared eval runs, read from their folders."""
        runs = {}
        for label, path in self.run_paths.items():
            result = load_run(path)
            if not isinstance(result, EvalResult):
                raise AgebenchError(f"{path}: not an eval run (compared as {label!r})")
            runs[label] = result
        return runs

    def to_pandas(self) -> pd.DataFrame:
        """One row per record: its labels (from the first run) then, per model label,
        ``<label>.status``, ``<label>.pred_age`` and ``<label>.pred_std``."""
        import pandas as pd

        runs = self.runs()
        first, *_ = runs.values()
        base = first.to_pandas()
        keep = [
            c
            for c in base.columns
            if c in ("image", "source", "age", "age_std", "subject", "fold", "split")
            or c.startswith(("targets.", "attributes."))
        ]
        table = base[keep].copy()
        for label, run in runs.items():
            other = run.to_pandas().set_index(["image", "source"], drop=False)
            picked = other.reindex(pd.MultiIndex.from_frame(table[["image", "source"]]))
            for column in ("status", "pred_age", "pred_std"):
                if column in picked:
                    table[f"{label}.{column}"] = picked[column].to_numpy()
        return table

    @classmethod
    def read(
        cls,
        folder: Path,
        comparison: Mapping[str, Any],
        reused: Sequence[bool | None] | None = None,
    ) -> CompareResult:
        models = {m.get("label"): m for m in comparison.get("models") or ()}
        ranking = []
        for entry in (comparison.get("ranking") or {}).get("order") or ():
            model = models.get(entry.get("model")) or {}
            ci = model.get("mae_ci")
            ranking.append(
                RankedModel(
                    rank=entry.get("rank"),
                    label=entry.get("model"),
                    model=ModelRef(model.get("model"), model.get("sha256")),
                    mae=model.get("mae"),
                    mae_ci=(ci[0], ci[1]) if ci and None not in ci[:2] else None,
                    groups=entry.get("groups"),
                )
            )
        report = folder / REPORT_HTML
        return cls(
            out=folder,
            target=comparison.get("target"),
            benchmark=(comparison.get("benchmark") or {}).get("name"),
            ranking=tuple(ranking),
            run_paths=MappingProxyType(
                {r["label"]: _run_path(folder, r["path"]) for r in comparison.get("runs") or ()}
            ),
            n_scored_by_all=(comparison.get("intersection") or {}).get("n_scored_by_all", 0),
            report=report if report.is_file() else None,
            comparison=_frozen(comparison),
            reused=tuple(reused)
            if reused is not None
            else (None,) * len(comparison.get("runs") or ()),
        )


def _run_path(compare_folder: Path, recorded: str) -> Path:
    """Where a compared run is now: where it was recorded (a relative path is the compare
    command's working folder's), else beside the compare folder under the same name (the
    folders were moved together), else inside it."""
    path = Path(recorded)
    for candidate in (path, compare_folder.parent / path.name, compare_folder / path):
        if candidate.is_dir():
            return candidate
    return path


Result = PredictResult | EvalResult | CompareResult


def load_run(path: Path | str) -> Result:
    """Read any finished predict, eval or compare folder (or its ``summary.json`` /
    ``comparison.json``) into its result object.

    Raises :class:`~agebench.core.errors.AgebenchError`, one line naming the folder, when it is
    not a finished run of any kind.
    """
    folder = Path(path)
    if folder.name in (sink.SUMMARY_FILE, COMPARISON_FILE):
        folder = folder.parent
    if not folder.is_dir():
        raise AgebenchError(f"{folder}: no such run folder")
    if (folder / COMPARISON_FILE).is_file():
        comparison = _read_json(folder / COMPARISON_FILE)
        _check_schema(folder / COMPARISON_FILE, comparison, COMPARISON_SCHEMA)
        return CompareResult.read(folder, comparison)
    summary_path = folder / sink.SUMMARY_FILE
    if not summary_path.is_file():
        raise AgebenchError(
            f"{folder}: no {sink.SUMMARY_FILE} or {COMPARISON_FILE}: not a finished run "
            "(an interrupted one finishes when its command is run again)"
        )
    summary = _read_json(summary_path)
    schema = summary.get("schema")
    if schema == PREDICT_SUMMARY_SCHEMA:
        return PredictResult.read(folder, summary)
    if schema == EVAL_SUMMARY_SCHEMA:
        return EvalResult.read(folder, summary)
    raise AgebenchError(
        f"{summary_path}: schema {schema!r}: not a predict or eval summary this agebench reads"
    )


def _check_schema(path: Path, data: Mapping[str, Any], expected: str) -> None:
    if data.get("schema") != expected:
        raise AgebenchError(f"{path}: schema {data.get('schema')!r}, expected {expected!r}")


def export(run: Path | str, fmt: TableFormat = "csv", out: Path | str | None = None) -> Path:
    """``agebench export RUN``: a finished run's table (:meth:`to_pandas`: one row per record,
    attributes and extra heads flattened into columns) as CSV or parquet, written all or
    nothing to ``out`` (default: ``predictions.csv`` / ``predictions.parquet`` in the run
    folder, ``comparison.csv`` / ``.parquet`` for a compare run). Returns the file written."""
    result = load_run(run)
    stem = "comparison" if isinstance(result, CompareResult) else "predictions"
    target = Path(out) if out is not None else result.out / f"{stem}.{fmt}"
    return write_table(result.to_pandas(), target, fmt)
