"""What a reader of an eval must not miss beside the numbers.

Each finding is a small record, ``{"kind": ..., "message": ...}``, written into
``summary.json`` under ``findings``, printed in the terminal after the metrics and shown at the
top of the report. A finding never changes a number: it says why a number may not mean what it
seems to (labels read with the wrong offset, a model that has seen the test set).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Finding = dict[str, str]
#: fold label -> (the ModelSpec that scored the fold, the images of the fold's records)
PerFold = Mapping[str, tuple[Any, Sequence[str]]]


def eval_findings(
    summary: Mapping[str, Any], models: Sequence[Any], per_fold: PerFold | None = None
) -> list[Finding]:
    """Every finding of one eval summary; ``models`` are the ModelSpecs that produced it and
    ``per_fold`` which of them scored which fold's images (a ``NAME-fold{fold}`` family)."""
    crossed = cross_validation_finding(summary, per_fold or {})
    return [
        *bias_findings(summary),
        *([crossed] if crossed else []),
        *contamination_findings(summary, models, cross_validated=crossed is not None),
    ]


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


# --- a per-fold family scored on its own test folds: cross-validated ---------------------------


def fold_images_digest(images: Iterable[str]) -> str:
    """The sha256 of a fold's image paths (sorted, one a line): what a trained model's
    ``[training]`` table records of its test fold, and what eval compares it with."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(images)).encode()).hexdigest()


def cross_validation_finding(summary: Mapping[str, Any], per_fold: PerFold) -> Finding | None:
    """The finding of a clean cross-validated score, or None.

    ``agebench train --protocol P`` exports one model per fold, each declaring the benchmark
    (it was trained on the other folds). Scored with ``eval --protocol P --model
    NAME-fold{fold}``, every fold's images go to the model whose test fold they are: the score
    the papers report, not contamination. That is only said when every model's ``[training]``
    table proves it: the same benchmark, protocol (and for ``kfold`` the same folds and seed),
    a test fold that is the fold it scored and none of its training folds, the same images in
    that fold (``test_images``), training folds that with it make up this run's folds, and a
    backbone that had not seen the benchmark before. Anything else (a model scored on its
    training folds, another split or seed, other data) stays flagged as trained-on-benchmark.
    """
    bench = summary.get("benchmark") or {}
    name, protocol = bench.get("name"), bench.get("protocol")
    folds = set(per_fold)
    if len(folds) < 2:
        return None
    for fold, (spec, images) in per_fold.items():
        table = (getattr(spec, "extra", None) or {}).get("training")
        if not isinstance(table, Mapping):
            return None
        trained_on = {str(f) for f in table.get("train_folds") or []}
        if (
            table.get("bench") != name
            or table.get("protocol") != protocol
            or str(table.get("test_fold")) != fold
            or fold in trained_on
            or trained_on | {fold} != folds
            or table.get("test_images") != fold_images_digest(images)
            or name in table.get("backbone_training_data", [name])  # unknown: maybe seen
        ):
            return None
        if protocol == "kfold" and (
            table.get("folds") != bench.get("folds") or table.get("seed") != bench.get("seed")
        ):
            return None
    label = (summary.get("model") or {}).get("name", "the model")
    return {
        "kind": "cross-validated",
        "message": f"{label}: each of the {len(folds)} folds of {name} ({protocol}) was scored "
        "by the model whose test fold it is, trained on the other folds only: no model saw "
        "the images it scored (checked against each manifest's [training] table and this "
        "run's folds). A cross-validated score, not contamination",
    }


# --- a model that has seen the test set -------------------------------------------------------


#: the kinds that say a model may have seen the test set, with the short word a ranking shows
CONTAMINATION_KINDS: dict[str, str] = {
    "trained-on-benchmark": "declared",
    "suspected-trained-on-benchmark": "suspected",
    "memorisation": "memorised",
}


def contamination_marks(findings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The short words (declared, suspected, memorised) of a run's contamination findings,
    each once, in that order: what a ranking shows beside a model's name."""
    kinds = {str(f.get("kind")) for f in findings}
    return [word for kind, word in CONTAMINATION_KINDS.items() if kind in kinds]


def contamination_findings(
    summary: Mapping[str, Any], models: Sequence[Any], *, cross_validated: bool = False
) -> list[Finding]:
    """Declared training data that includes this benchmark, and the data's own signal.

    Three kinds, each reported on its own because each has its own evidence: the manifest's
    authors declare the benchmark (``trained-on-benchmark``), someone suspects it with a reason
    (``suspected-trained-on-benchmark``), and the errors themselves pile up at zero
    (``memorisation``, from ``agebench.core.metrics.memorisation``). The first two are
    matched on the benchmark's name only: a run through a generic loader (``csv``,
    ``facebase``) is identified by the data's signal alone. A ``cross_validated`` run (see
    :func:`cross_validation_finding`) declares the benchmark by design, each fold's model
    trained on the other folds only: its declaration is no contamination."""
    bench = str((summary.get("benchmark") or {}).get("name", ""))
    label = str((summary.get("model") or {}).get("name", "the model"))
    findings: list[Finding] = []
    declared = sorted(
        {spec_name for spec_name, names in _declared(models) if bench in names},
    )
    if declared and not cross_validated:
        findings.append(
            {
                "kind": "trained-on-benchmark",
                "message": f"{_who(label, declared)} declares {bench} among its training data "
                "(manifest provenance.training_data): these numbers measure how well it "
                "remembers images it was trained on, not how well it estimates age",
            }
        )
    for spec_name, reason in _suspected(models, bench):
        findings.append(
            {
                "kind": "suspected-trained-on-benchmark",
                "message": f"{_who(label, [spec_name])} is suspected of having been trained "
                f"on {bench} (manifest provenance.suspected_training_data): {reason}",
            }
        )
    for target, metrics in (summary.get("metrics") or {}).items():
        signal = metrics.get("memorisation") if isinstance(metrics, Mapping) else None
        if isinstance(signal, Mapping) and signal.get("flagged"):
            findings.append(memorisation_finding(target, signal))
    return findings


def declared_training(models: Sequence[Any]) -> dict[str, list[Any]]:
    """What the models of a run declare and are suspected of having been trained on, for
    ``summary["model"]``: names across every model of a per-fold family, each once."""
    from agebench.models.training_data import suspected_training_data

    declared = sorted({name for _, names in _declared(models) for name in names})
    suspected: list[dict[str, str]] = []
    for spec in models:
        for entry in suspected_training_data(getattr(spec, "provenance", {}) or {}):
            if entry not in suspected:
                suspected.append(entry)
    return {"training_data": declared, "suspected_training_data": suspected}


def _declared(models: Sequence[Any]) -> list[tuple[str, list[str]]]:
    from agebench.models.training_data import declared_training_data

    return [
        (str(spec.name), declared_training_data(getattr(spec, "provenance", {}) or {}))
        for spec in models
    ]


def _suspected(models: Sequence[Any], bench: str) -> list[tuple[str, str]]:
    """(model, reason) for each suspicion naming ``bench``; one line per distinct reason."""
    from agebench.models.training_data import suspected_training_data

    seen: dict[str, list[str]] = {}
    for spec in models:
        for entry in suspected_training_data(getattr(spec, "provenance", {}) or {}):
            if entry["name"] == bench:
                seen.setdefault(entry["reason"], []).append(str(spec.name))
        # a model trained here by agebench train carries what its backbone was suspected of
        training = (getattr(spec, "extra", None) or {}).get("training") or {}
        backbone = training.get("backbone") or "its backbone"
        for entry in training.get("backbone_suspected_training_data") or []:
            if isinstance(entry, Mapping) and entry.get("name") == bench:
                reason = f"its backbone {backbone} is: {entry.get('reason')}"
                seen.setdefault(reason, []).append(str(spec.name))
    return [(names[0] if len(names) == 1 else "", reason) for reason, names in seen.items()]


def _who(label: str, names: Sequence[str]) -> str:
    """The run's model label, naming the fold models when only some of a family are meant."""
    shown = [n for n in names if n and n != label]
    return f"{label} ({', '.join(shown)})" if shown else label


def memorisation_finding(target: str, signal: Mapping[str, Any]) -> Finding:
    """The finding of a flagged memorisation signal (also used by compare on its records)."""
    return {"kind": "memorisation", "message": _memorisation(target, signal)}


def _memorisation(target: str, signal: Mapping[str, Any]) -> str:
    ratio = signal.get("ratio")
    ratio_text = "infinitely" if ratio is None else f"{ratio:.1f} times"
    confidence = float(signal.get("confidence") or 0.95)
    return (
        f"{target}: {signal['n_zero']} of {signal['n']} scored errors are within "
        f"{signal['zero_window']:g} years of zero and {signal['n_neighbour']} between "
        f"{signal['zero_window']:g} and {signal['neighbour_window'][1]:g}: the error density at "
        f"zero is {ratio_text} the density beside it (lower {confidence:.0%} bound "
        f"{signal['ratio_low']:.1f}, over the threshold {signal['threshold']:g}; a model that "
        "generalises gives about 1). The model has probably seen these images, or copies of "
        "them, with their labels"
    )
