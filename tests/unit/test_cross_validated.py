"""A ``NAME-fold{fold}`` family from ``agebench train`` scored on its own test folds is a
cross-validated score, not contamination; the same models on their training folds, on another
split or seed, or on other images are flagged as trained on the benchmark."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agebench.findings import eval_findings, fold_images_digest
from agebench.models.training_data import parse_training_data

FOLDS = {"0": ["a.jpg", "b.jpg"], "1": ["c.jpg", "d.jpg"], "2": ["e.jpg", "f.jpg"]}


def _family(**overrides: Any) -> dict[str, SimpleNamespace]:
    """One model per fold, each with the [training] table ``agebench train`` exports."""
    family = {}
    for fold, images in FOLDS.items():
        table = {
            "bench": "fgnet",
            "protocol": "kfold",
            "folds": 3,
            "seed": 0,
            "train_folds": sorted(set(FOLDS) - {fold}),
            "test_fold": fold,
            "test_images": fold_images_digest(images),
            "backbone_training_data": ["imdb-wiki"],
            **overrides,
        }
        family[fold] = SimpleNamespace(
            name=f"tiny-fold{fold}",
            provenance=parse_training_data({"training_data": ["fgnet", "imdb-wiki"]}, "t"),
            extra={"training": table},
        )
    return family


def _summary(**bench: Any) -> dict[str, Any]:
    return {
        "benchmark": {"name": "fgnet", "protocol": "kfold", "folds": 3, "seed": 0, **bench},
        "model": {"name": "tiny-foldfold"},
        "metrics": {},
    }


def _kinds(summary: dict[str, Any], per_fold: dict[str, Any]) -> list[str]:
    models = [spec for spec, _ in per_fold.values()]
    return [f["kind"] for f in eval_findings(summary, models, per_fold)]


def test_each_fold_scored_by_the_model_that_never_saw_it_is_cross_validated():
    family = _family()
    per_fold = {fold: (family[fold], FOLDS[fold]) for fold in FOLDS}
    findings = eval_findings(_summary(), list(family.values()), per_fold)
    assert [f["kind"] for f in findings] == ["cross-validated"]
    assert "3 folds of fgnet (kfold)" in findings[0]["message"]
    assert "no model saw the images it scored" in findings[0]["message"]
    bare = _family(backbone_training_data=[])  # a backbone that declares nothing
    per_fold = {fold: (bare[fold], FOLDS[fold]) for fold in FOLDS}
    assert _kinds(_summary(), per_fold) == ["cross-validated"]


def test_a_model_on_its_training_folds_is_trained_on_benchmark():
    family = _family()
    swapped = {"0": (family["1"], FOLDS["0"]), "1": (family["0"], FOLDS["1"])}
    swapped["2"] = (family["2"], FOLDS["2"])
    assert _kinds(_summary(), swapped) == ["trained-on-benchmark"]
    # the whole benchmark by one fold's model (no per-fold family): trained on it
    assert [f["kind"] for f in eval_findings(_summary(), [family["0"]])] == ["trained-on-benchmark"]


def test_another_split_seed_or_other_images_is_trained_on_benchmark():
    family = _family()
    per_fold = {fold: (family[fold], FOLDS[fold]) for fold in FOLDS}
    assert _kinds(_summary(seed=1), per_fold) == ["trained-on-benchmark"]
    assert _kinds(_summary(folds=5), per_fold) == ["trained-on-benchmark"]
    assert _kinds(_summary(protocol="lopo"), per_fold) == ["trained-on-benchmark"]
    moved = {fold: (family[fold], [*FOLDS[fold], "z.jpg"]) for fold in FOLDS}
    assert _kinds(_summary(), moved) == ["trained-on-benchmark"]
    assert _kinds(_summary(name="utkface"), per_fold) == []  # another benchmark: nothing


def test_a_backbone_that_saw_the_benchmark_leaves_every_fold_contaminated():
    family = _family(backbone_training_data=["fgnet"])
    per_fold = {fold: (family[fold], FOLDS[fold]) for fold in FOLDS}
    assert _kinds(_summary(), per_fold) == ["trained-on-benchmark"]
    plain = {fold: (SimpleNamespace(name=s.name, provenance=s.provenance, extra={}), FOLDS[fold])
             for fold, s in _family().items()}  # fmt: skip
    assert _kinds(_summary(), plain) == ["trained-on-benchmark"]  # no [training] table


def test_a_backbone_suspected_of_the_benchmark_stays_suspected_through_clean_folds():
    """dlib-age-v1 is suspected of having seen FG-NET: folds clean of each other do not make
    its features clean, so the suspicion is reported beside the cross-validated finding."""
    reason = "MAE far below other benchmarks"
    family = _family(
        backbone="dlib-age-v1",
        backbone_suspected_training_data=[{"name": "fgnet", "reason": reason}],
    )
    per_fold = {fold: (family[fold], FOLDS[fold]) for fold in FOLDS}
    findings = eval_findings(_summary(), list(family.values()), per_fold)
    assert [f["kind"] for f in findings] == ["cross-validated", "suspected-trained-on-benchmark"]
    assert f"its backbone dlib-age-v1 is: {reason}" in findings[1]["message"]
    other = _family(backbone_suspected_training_data=[{"name": "morph", "reason": reason}])
    per_fold = {fold: (other[fold], FOLDS[fold]) for fold in FOLDS}
    assert _kinds(_summary(), per_fold) == ["cross-validated"]
