"""What a model was trained on, as a manifest's ``[provenance]`` declares it.

A score on a benchmark the model was trained on measures memory, not age estimation, and no
number in a report can show that by itself. So a manifest says what is known, in keys that a
program can match against the benchmark of a run:

- ``training_data = ["imdb-wiki", ...]``: benchmark names (``agebench benches list``) of data
  the model's authors say it was trained on. A dataset agebench has no loader for may be named
  too (lower case, ``[a-z0-9][a-z0-9._-]*``); it is never matched against a run.
- ``suspected_training_data = [{name = "fgnet", reason = "..."}]``: data not declared by the
  authors but suspected from evidence, with that evidence. Kept apart so that a report never
  presents a suspicion as the authors' word.
- ``training_data_notes``: free text (subsets, filters, what the authors wrote).

Manifests written before these keys held free text in ``training_data``; such a string is read
as ``training_data_notes`` and declares nothing, since free text cannot be matched reliably.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agebench.core.errors import ManifestError

TRAINING_DATA = "training_data"
SUSPECTED = "suspected_training_data"
NOTES = "training_data_notes"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _squash(name: str) -> str:
    """A name without case or separators: "FG-NET", "fg_net" and "fgnet" are one dataset."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _known_benchmarks() -> list[str]:
    from agebench.benchmarks.registry import benchmarks

    return benchmarks().names()


def check_dataset_name(name: Any, where: str, key: str) -> str:
    """A declared dataset name: well-formed, and spelt as agebench's benchmark when it is one.

    A name that differs from a registered benchmark only by case or separators, or is a close
    misspelling of one, is refused with the benchmark's name: left as written, it would never
    match a run, and the contamination it declares would go unreported."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ManifestError(
            f"{where}: '{key}' names datasets in lower case (letters, digits, . _ -), "
            f"as 'agebench benches list' does; got {name!r}"
        )
    known = _known_benchmarks()
    if name in known:
        return name
    same = [b for b in known if _squash(b) == _squash(name)]
    close = same or difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    if close:
        raise ManifestError(
            f"{where}: '{key}' names {name!r}; the benchmark is called {close[0]!r} "
            "(a name that is no benchmark is never matched against a run)"
        )
    return name


def _names(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: '{key}' must be a list of dataset names, got {value!r}")
    names = [check_dataset_name(v, where, key) for v in value]
    if len(set(names)) != len(names):
        raise ManifestError(f"{where}: '{key}' names a dataset twice: {names}")
    return names


def _suspected(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise ManifestError(
            f"{where}: '{SUSPECTED}' must be a list of tables {{name = ..., reason = ...}}"
        )
    entries = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or set(item) != {"name", "reason"}:
            raise ManifestError(
                f"{where}: '{SUSPECTED}' entry {index + 1} must be a table with exactly "
                f"'name' and 'reason', got {item!r}"
            )
        reason = item["reason"]
        if not isinstance(reason, str) or not reason.strip():
            raise ManifestError(
                f"{where}: '{SUSPECTED}' entry {index + 1} needs a non-empty 'reason': "
                "a suspicion without its evidence cannot be weighed"
            )
        entries.append(
            {"name": check_dataset_name(item["name"], where, SUSPECTED), "reason": reason}
        )
    return entries


def parse_training_data(provenance: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``provenance`` with its training-data keys validated and in their one form.

    Returns a new mapping: ``training_data`` a list of names (empty when nothing is declared),
    ``suspected_training_data`` a list of ``{name, reason}`` (present only when given), a
    legacy free-text ``training_data`` moved to ``training_data_notes``."""
    out = dict(provenance)
    declared = out.get(TRAINING_DATA, [])
    if isinstance(declared, str):  # the older free-text form: notes, not a declaration
        notes = out.get(NOTES)
        if notes is not None:
            raise ManifestError(
                f"{where}: '{TRAINING_DATA}' is free text and '{NOTES}' is given too; "
                f"make '{TRAINING_DATA}' a list of dataset names"
            )
        out[NOTES] = declared
        declared = []
    out[TRAINING_DATA] = _names(declared, where, TRAINING_DATA)
    if SUSPECTED in out:
        out[SUSPECTED] = _suspected(out[SUSPECTED], where)
        overlap = set(out[TRAINING_DATA]) & {s["name"] for s in out[SUSPECTED]}
        if overlap:
            raise ManifestError(
                f"{where}: {sorted(overlap)} both declared and suspected; keep it in one key"
            )
    if NOTES in out and not isinstance(out[NOTES], str):
        raise ManifestError(f"{where}: '{NOTES}' must be a string, got {out[NOTES]!r}")
    return out


def declared_training_data(provenance: Mapping[str, Any]) -> list[str]:
    """The benchmark names a parsed manifest declares as training data."""
    value = provenance.get(TRAINING_DATA) or []
    return (
        [str(v) for v in value]
        if isinstance(value, Sequence) and not isinstance(value, str)
        else []
    )


def suspected_training_data(provenance: Mapping[str, Any]) -> list[dict[str, str]]:
    """The ``{name, reason}`` suspicions of a parsed manifest."""
    value = provenance.get(SUSPECTED) or []
    return [dict(v) for v in value if isinstance(v, Mapping)]
