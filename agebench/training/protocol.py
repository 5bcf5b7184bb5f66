"""Which records each trained model learns from, is stopped by, and is scored on.

A cross-validated paper number is one model per fold: fold k is the test part, never seen in
training; the other folds train. Early stopping and model selection need data too, so a
validation part (about ``VAL_SHARE`` of the training folds, subject-disjoint where subjects
are known, seeded) is carved out of the training folds, never out of the test fold.

The folds are the records' own, as the benchmark loaded them under ``--protocol``: its own
protocol's (FG-NET ``lopo``/``kfold``, Adience ``5fold``) or a generic one's
(``agebench.benchmarks.spec.GENERIC_PROTOCOLS``: ``kfold`` and ``lopo`` on every benchmark).
Nothing is dealt here, so ``agebench eval --protocol P --model NAME-fold{fold}`` reads exactly
the folds each model was trained without.

Without a protocol (``--split train`` and the like) there is one model on all the records
given, its test part empty: the data it is scored on is another split, chosen at eval time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agebench.benchmarks.spec import Record
from agebench.core.errors import AgebenchError

#: the share of the training folds held out for early stopping and model selection
VAL_SHARE = 0.1


@dataclass(frozen=True)
class Fold:
    """Indices into the benchmark's records. ``name`` is None for a run without a protocol
    (one model, registered as NAME) else the fold's label (registered as NAME-fold{name})."""

    name: str | None
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def suffix(self) -> str:
        return "" if self.name is None else f"-fold{self.name}"


def record_folds(records: Sequence[Record], protocol: str, bench: str) -> list[str]:
    """Each record's fold label, as the benchmark dealt it under ``protocol``."""
    if not records:
        raise AgebenchError(f"{bench}: no records to train on")
    if any(r.fold is None for r in records):
        raise AgebenchError(
            f"{bench} --protocol {protocol}: some records have no fold; the generic protocols "
            "kfold and lopo deal folds on every benchmark"
        )
    return [str(r.fold) for r in records]


def _fold_order(labels: Sequence[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others as strings."""
    unique = set(labels)
    if all(label.isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def carve_validation(
    records: Sequence[Record], train: np.ndarray, seed: int, share: float = VAL_SHARE
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) from ``train``: whole subjects (when every record has one) shuffled by
    ``seed`` and taken until ``share`` of the images is reached; at least one record each."""
    train = np.asarray(train, dtype=int)
    if len(train) < 2:
        raise AgebenchError(f"{len(train)} training record(s): too few to hold out a validation")
    subjects = [records[i].subject for i in train]
    rng = random.Random(seed)
    if None not in subjects:
        groups = sorted({str(s) for s in subjects})
        if len(groups) < 2:
            raise AgebenchError("one training subject: no subject-disjoint validation possible")
        rng.shuffle(groups)
        target, taken, held = max(1, round(share * len(train))), 0, set()
        for subject in groups[:-1]:  # one subject at least stays for training
            if taken >= target:
                break
            held.add(subject)
            taken += subjects.count(subject)
        mask = np.array([str(s) in held for s in subjects])
    else:
        order = list(range(len(train)))
        rng.shuffle(order)
        mask = np.zeros(len(train), dtype=bool)
        mask[order[: max(1, round(share * len(train)))]] = True
    return train[~mask], train[mask]


def plan_folds(
    bench: str,
    records: Sequence[Record],
    *,
    protocol: str | None,
    seed: int = 0,
    usable: np.ndarray | None = None,
    only: Sequence[str] = (),
) -> list[Fold]:
    """The folds to train (``only``: these labels; all when empty) over the ``usable``
    records (indices; all when None), loaded by benchmark ``bench`` under ``protocol``."""
    keep = np.arange(len(records)) if usable is None else np.asarray(usable, dtype=int)
    if protocol is None:
        train, val = carve_validation(records, keep, seed)
        return [Fold(None, train, val, np.array([], dtype=int))]
    labels = record_folds(records, protocol, bench)
    order = _fold_order(labels)
    unknown = sorted(set(only) - set(order))
    if unknown:
        raise AgebenchError(f"--fold {', '.join(unknown)}: the folds are {', '.join(order)}")
    kept = np.array([labels[i] for i in keep])
    plan = []
    for number, label in enumerate(order):
        if only and label not in only:
            continue
        test = keep[kept == label]
        train, val = carve_validation(records, keep[kept != label], seed + number)
        plan.append(Fold(label, train, val, test))
    return plan
