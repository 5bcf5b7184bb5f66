"""An eval's prediction row: one label record with what the model said about its image."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agebench.benchmarks.spec import Record
from agebench.core.metrics.groups import predicted_group
from agebench.models.manifest import ModelSpec
from agebench.runner.faces import PreparedImage


def group_label(group: tuple[float, float] | None) -> list[float] | None:
    """An age group as JSON keeps it: ``[low, high]`` floats."""
    return None if group is None else [float(group[0]), float(group[1])]


def eval_row(
    record: Record,
    item: PreparedImage,
    sha: str | None,
    spec: ModelSpec,
    run_id: str,
    groups: Sequence[tuple[float, float]] = (),
) -> dict[str, Any]:
    """The ``predictions.jsonl`` row of one label record: its labels, what the model said about
    its first face, and, on a benchmark of age groups, the group that is scored."""
    face = item.faces[0] if item.faces else {}
    pred_group = face.get("age_group")
    row: dict[str, Any] = {
        "image": record.image,
        "source": record.source,
        "status": item.status,
        "error": item.error
        if item.status != "missing"
        else f"image file not found: {record.image}",
        "age": record.age,
        "targets": dict(record.targets),
        "age_std": record.age_std,
        "age_group": group_label(record.age_group),
        "subject": record.subject,
        "fold": record.fold,
        "split": record.split,
        "attributes": dict(record.attributes),
        "pred_age": face.get("age") if item.status == "ok" else None,
        "pred_std": face.get("age_std") if item.status == "ok" else None,
        "pred_group": parse_group(pred_group) if isinstance(pred_group, str) else None,
        "face_box": face.get("box"),
        "face_score": face.get("score"),
        "image_sha256": sha,
        "notes": list(item.notes),
        "model": {"name": spec.name, "sha256": spec.sha256},
        "run": run_id,
    }
    if groups:
        # the group the metrics score (metrics.predicted_group, the one definition): the
        # model's own group where the benchmark has it, else the group its age falls in
        index = predicted_group(row, groups) if item.status == "ok" else None
        row["pred_group"] = None if index is None else group_label(groups[index])
    return row


#: two numbers in a group label: "25-32", "(25, 32)", "25 to 32"
GROUP_LABEL = re.compile(r"^\D*?(\d+(?:\.\d+)?)\D+?(\d+(?:\.\d+)?)\D*$")


def parse_group(label: str) -> list[float] | None:
    """A group head's label as [low, high]; None for one that names no range ("60+"), whose
    row then falls back to the head's age (the group's midpoint) when mapped to groups."""
    match = GROUP_LABEL.match(label.strip())
    return [float(match[1]), float(match[2])] if match else None
