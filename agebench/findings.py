"""What a reader of an eval must not miss beside the numbers.

Each finding is a small record, ``{"kind": ..., "message": ...}``, written into
``summary.json`` under ``findings``, printed in the terminal after the metrics and shown at the
top of the report. A finding never changes a number: it says why a number may not mean what it
seems to (labels read with the wrong offset, a model that has seen the test set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Finding = dict[str, str]


def eval_findings(summary: Mapping[str, Any], models: Sequence[Any]) -> list[Finding]:
    """Every finding of one eval summary; ``models`` are the ModelSpecs that produced it."""
    return [*bias_findings(summary), *contamination_findings(summary, models)]


# --- labels read wrong: a whole-benchmark bias -----------------------------------------------


def bias_findings(summary: Mapping[str, Any]) -> list[Finding]:
    """A whole-benchmark bias so large that the labels are probably read wrong."""
    return []


# --- a model that has seen the test set -------------------------------------------------------


def contamination_findings(summary: Mapping[str, Any], models: Sequence[Any]) -> list[Finding]:
    """Declared training data that includes this benchmark, and the data's own signal."""
    return []
