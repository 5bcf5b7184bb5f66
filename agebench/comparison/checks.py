"""Can these finished runs be compared, and on which target? (The rule: the package
docstring.) Every refusal is one ``AgebenchError`` line naming the runs and what differs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agebench.comparison.runs import FinishedRun, row_key
from agebench.core.errors import AgebenchError


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
    data; see the package docstring for the rule."""
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
