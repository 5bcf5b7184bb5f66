"""Which records each trained model learns from, is stopped by, and is scored on.

A cross-validated paper number is one model per fold: fold k is the test part, never seen in
training; the other folds train. Early stopping and model selection need data too, so a
validation part (about ``VAL_SHARE`` of the training folds, subject-disjoint where subjects
are known, seeded) is carved out of the training folds, never out of the test fold.

Fold assignment, in order of preference:

* the benchmark's own, when it offers the protocol (FG-NET ``kfold``/``lopo``) or its records
  carry folds (a csv ``fold`` column, Adience): the published protocol, as eval scores it;
* ``kfold`` otherwise: subject-disjoint (``subject_kfold``, the folds eval's loaders deal) when
  every record has a subject, else records dealt by ``seed``;
* ``lopo`` otherwise: one fold per subject (subjects required).

Without a protocol (``--split train`` and the like) there is one model on all the records
given, its test part empty: the data it is scored on is another split, chosen at eval time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agebench.benchmarks.common import subject_kfold
from agebench.benchmarks.spec import BenchmarkSpec, Record
from agebench.core.errors import AgebenchError

PROTOCOLS = ("kfold", "lopo")
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


def native_protocol(bench: BenchmarkSpec, protocol: str | None) -> bool:
    """Whether the benchmark's loader deals this protocol's folds itself."""
    return protocol is not None and protocol in bench.protocols


def assign_folds(
    bench: BenchmarkSpec, records: Sequence[Record], protocol: str, folds: int, seed: int
) -> tuple[list[str], str]:
    """Each record's fold label and where the labels came from."""
    if protocol not in PROTOCOLS:
        raise AgebenchError(f"--protocol {protocol}: training protocols are {', '.join(PROTOCOLS)}")
    if not records:
        raise AgebenchError(f"{bench.name}: no records to train on")
    given = [r.fold for r in records]
    if native_protocol(bench, protocol) or (protocol == "kfold" and None not in given):
        if None in given:
            raise AgebenchError(f"{bench.name} --protocol {protocol}: some records have no fold")
        return [str(f) for f in given], "benchmark"
    subjects = [r.subject for r in records]
    if protocol == "lopo":
        if None in subjects:
            raise AgebenchError(f"{bench.name}: --protocol lopo needs a subject for every record")
        return [str(s) for s in subjects], "subjects"
    if None not in subjects:
        dealt = subject_kfold((str(s) for s in subjects), folds, seed)
        return [str(dealt[str(s)]) for s in subjects], "subject_kfold"
    if folds > len(records):
        raise AgebenchError(f"cannot make {folds} folds from {len(records)} records")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    labels = [""] * len(records)
    for position, index in enumerate(order):
        labels[index] = str(position % folds)
    return labels, "records"


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
    bench: BenchmarkSpec,
    records: Sequence[Record],
    *,
    protocol: str | None,
    folds: int = 5,
    seed: int = 0,
    usable: np.ndarray | None = None,
    only: Sequence[str] = (),
) -> tuple[list[Fold], str]:
    """The folds to train (``only``: these labels; all when empty) over the ``usable``
    records (indices; all when None), and where the fold labels came from."""
    keep = np.arange(len(records)) if usable is None else np.asarray(usable, dtype=int)
    if protocol is None:
        train, val = carve_validation(records, keep, seed)
        return [Fold(None, train, val, np.array([], dtype=int))], "none"
    labels, source = assign_folds(bench, records, protocol, folds, seed)
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
    return plan, source
