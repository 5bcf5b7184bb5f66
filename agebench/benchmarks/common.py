"""Small helpers every loader shares, so that each benchmark module is only its layout."""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from agebench.benchmarks.spec import BenchmarkError, LabelProblem, LoadOptions, Record
from agebench.runner.imageio import IMAGE_EXTENSIONS


class RowError(ValueError):
    """One label row is unusable; the loader records it as a LabelProblem and goes on."""


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def require_file(path: Path, what: str) -> Path:
    """A label file the benchmark cannot do without: missing is fatal, with what was expected."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: {what} not found")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise BenchmarkError(f"{path}: {what} not found")
    return path


def read_table(
    path: Path,
    *,
    required: Sequence[str],
    root: Path,
    delimiter: str = ",",
) -> tuple[list[tuple[int, dict[str, str]]], list[LabelProblem]]:
    """Rows of a delimited label file as (line number, column -> value).

    Header names are stripped (and a UTF-8 BOM dropped). A missing required column is fatal:
    nothing could be scored. A row with the wrong number of fields is a problem, not a crash.
    """
    name = rel(path, root) if path.is_relative_to(root) else str(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except OSError as error:
        raise BenchmarkError(f"{path}: cannot read label file: {error.strerror}") from None
    rows: list[tuple[int, dict[str, str]]] = []
    problems: list[LabelProblem] = []
    with handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise BenchmarkError(f"{path}: label file is empty") from None
        except csv.Error as error:
            raise BenchmarkError(f"{path}: not a readable table: {error}") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise BenchmarkError(
                f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}"
            )
        try:
            for fields in reader:
                line = reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    problems.append(
                        LabelProblem(name, line, f"{len(fields)} fields, header has {len(header)}")
                    )
                    continue
                rows.append((line, {h: f.strip() for h, f in zip(header, fields, strict=True)}))
        except csv.Error as error:
            problems.append(LabelProblem(name, reader.line_num, f"unreadable row: {error}"))
    return rows, problems


def number(
    value: str, column: str, *, low: float | None = None, high: float | None = None
) -> float:
    """A finite number from a label field, or a RowError saying which column and why."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{column} {value!r} is not a number") from None
    if not math.isfinite(result):
        raise RowError(f"{column} {value!r} is not finite")
    if low is not None and result < low:
        raise RowError(f"{column} {result:g} is below {low:g}")
    if high is not None and result > high:
        raise RowError(f"{column} {result:g} is above {high:g}")
    return result


def iter_image_files(folder: Path) -> Iterator[Path]:
    """Image files under ``folder`` (recursive, sorted, any extension case)."""
    for path in sorted(folder.rglob("*")):
        if (
            path.suffix.lower() in IMAGE_EXTENSIONS
            and path.is_file()
            and not path.name.startswith(".")
        ):
            yield path


def case_insensitive_index(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """lower-cased relative path -> actual relative path (FG-NET mixes .JPG and .jpg)."""
    return {rel(p, root).lower(): rel(p, root) for p in paths}


def missing_image_problems(records: Sequence[Record], root: Path) -> list[LabelProblem]:
    """Labels whose image is absent. The records stay: they count, as failures."""
    problems = []
    for record in records:
        if not (root / record.image).is_file():
            file, _, line = record.source.rpartition(":")
            problems.append(
                LabelProblem(
                    file or record.source,
                    int(line) if line.isdigit() else None,
                    f"label for {record.image}, but the image is missing",
                )
            )
    return problems


def unlabelled_image_problems(images: Iterable[str], labelled: set[str]) -> list[LabelProblem]:
    """Images no label row mentions: reported, never guessed at."""
    return [
        LabelProblem(image, None, "image has no label") for image in images if image not in labelled
    ]


def subject_kfold(subjects: Iterable[str], k: int, seed: int) -> dict[str, int]:
    """Subject-disjoint folds: subjects shuffled with a fixed seed, dealt round-robin.

    Deterministic for a given subject set, k and seed, whatever order the subjects came in.
    """
    unique = sorted(set(subjects))
    if k < 2 or k > len(unique):
        raise BenchmarkError(f"cannot make {k} subject-disjoint folds from {len(unique)} subjects")
    random.Random(seed).shuffle(unique)
    return {subject: index % k for index, subject in enumerate(unique)}


def option_choice(options: LoadOptions, key: str, choices: Sequence[str]) -> str:
    """A ``--option key=value`` limited to a few values; the first choice is the default.

    An unknown value is fatal (one line naming the key and the allowed values): a typo must
    not silently run a different benchmark variant.
    """
    value = str(options.options.get(key, choices[0])).strip().lower()
    if value not in choices:
        raise BenchmarkError(
            f"--option {key}={options.options[key]}: expected one of {', '.join(choices)}"
        )
    return value
