"""What a reader of an eval must not miss beside the numbers.

Each finding is a small record, ``{"kind": ..., "message": ...}``, written into
``summary.json`` under ``findings``, printed in the terminal after the metrics and shown at the
top of the report. A finding never changes a number: it says why a number may not mean what it
seems to (labels read with the wrong offset, a model that has seen the test set).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Finding = dict[str, str]


def eval_findings(summary: Mapping[str, Any], models: Sequence[Any]) -> list[Finding]:
    """Every finding of one eval summary; ``models`` are the ModelSpecs that produced it."""
    return [*bias_findings(summary), *contamination_findings(summary, models)]


# --- labels read wrong: a whole-benchmark bias -----------------------------------------------


#: |mean error| in years over a whole benchmark above which the labels are suspect. The worst
#: honest models sit well inside it (dlib-age-v1 on UTKFace about -2; models scored on a
#: benchmark far from their training data reach 5 to 7), while a label offset shows up whole:
#: coral-cnn's UTKFace CSVs hold age - 21, read with the wrong offset they give +20.6
BIAS_LIMIT_YEARS = 10.0
#: fewer scored images say too little about a benchmark to accuse its labels
BIAS_MIN_SCORED = 10


def bias_findings(summary: Mapping[str, Any]) -> list[Finding]:
    """A whole-benchmark bias so large that the labels are probably read wrong.

    A model is rarely wrong by the same ten years on every face; labels shifted by a constant
    (an offset stored in the file), scaled (months, days) or taken from the wrong column are.
    The numbers stay as computed: the finding tells the reader not to trust them yet.
    """
    findings: list[Finding] = []
    for target, metrics in (summary.get("metrics") or {}).items():
        bias, mae = _number(metrics.get("bias")), _number(metrics.get("mae"))
        scored = metrics.get("n_scored") or 0
        if bias is None or abs(bias) <= BIAS_LIMIT_YEARS or scored < BIAS_MIN_SCORED:
            continue
        findings.append(
            {"kind": "labels", "message": _bias_message(summary, target, bias, mae, scored)}
        )
    return findings


def _bias_message(
    summary: Mapping[str, Any], target: str, bias: float, mae: float | None, scored: int
) -> str:
    side = "above" if bias > 0 else "below"
    # one-sided errors (|bias| close to the MAE) are the mark of a constant shift
    shifted = mae is not None and mae > 0 and abs(bias) >= 0.8 * mae
    shape = (
        f"nearly every prediction lies {side} its label, as a constant shift of the labels does"
        if shifted
        else f"predictions lie {side} the labels on average"
    )
    bench = (summary.get("benchmark") or {}).get("name", "the benchmark")
    mae_text = f", MAE {mae:.1f}" if mae is not None else ""
    low_high = "low" if bias > 0 else "high"
    return (
        f"{target} mean error {bias:+.1f} years over {scored} scored images of {bench}"
        f"{mae_text}: {shape}, as if the labels were about {abs(bias):.0f} years too {low_high}. "
        "The labels are probably read wrong: a label offset (coral-cnn's CSVs store age minus "
        "a constant, e.g. UTKFace age - 21), a wrong --option (morph's age_offset), or the "
        "wrong column or unit (--column age=..., months or days for years). Check the labels "
        "before trusting these numbers."
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


# --- a model that has seen the test set -------------------------------------------------------


def contamination_findings(summary: Mapping[str, Any], models: Sequence[Any]) -> list[Finding]:
    """Declared training data that includes this benchmark, and the data's own signal."""
    return []
