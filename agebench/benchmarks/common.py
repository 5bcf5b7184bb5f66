"""Small helpers every loader shares, so that each benchmark module is only its layout."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from agebench.benchmarks.spec import (  # noqa: F401 - subject_kfold: loaders import it here
    BenchmarkError,
    LabelProblem,
    LoadOptions,
    Record,
    subject_kfold,
)
from agebench.core.fileread import (
    IMAGE_EXTENSIONS,
    MAX_LABEL_FILE_BYTES,
    ImageDecodeError,
    read_image_bytes,
)


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


#: a label file with a NUL byte in its first block is no text (a zip, an image, a .mat)
_BINARY_PROBE = 8192


def read_label_bytes(path: Path, what: str = "label file") -> bytes:
    """A label file's bytes, read as image files are (:mod:`agebench.core.fileread`): a FIFO named
    as a label file would block ``open()`` forever and a link to ``/dev/zero`` never ends."""
    try:
        return read_image_bytes(path, max_bytes=MAX_LABEL_FILE_BYTES)
    except ImageDecodeError as error:
        raise BenchmarkError(f"{path}: cannot read {what}: {error.reason}") from None


def read_label_text(path: Path, what: str = "label file") -> str:
    """The whole text of a label file, decoded as UTF-8 (a BOM dropped).

    Every text label file goes through here so that a file which is not UTF-8 text is one
    line naming the file, the line and the byte, never a ``UnicodeDecodeError`` traceback.
    Latin-1 (or any other 8-bit) text is refused rather than guessed at: its non-ASCII bytes
    sit in image names, and a guessed decoding would name files that are not on disk.
    """
    data = read_label_bytes(path, what)
    if b"\0" in data[:_BINARY_PROBE]:
        raise BenchmarkError(f"{path}: {what} is a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start : error.start + 1].hex()
        raise BenchmarkError(
            f"{path}:{line}: {what} is not UTF-8 text (byte 0x{byte}); save it as UTF-8"
        ) from None


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
    text = read_label_text(path)
    rows: list[tuple[int, dict[str, str]]] = []
    problems: list[LabelProblem] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
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
    value: str | float, column: str, *, low: float | None = None, high: float | None = None
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


def _missing(record: Record, why: str) -> LabelProblem:
    file, _, line = record.source.rpartition(":")
    return LabelProblem(
        file or record.source,
        int(line) if line.isdigit() else None,
        f"label for {record.image}, but {why}",
    )


class CaseResolver:
    """Finds the one file a label names when only the letter case differs.

    Published label files and archives disagree on case (FaceBase's FG-NET JSON says
    ``009A16b.jpg`` where FGNET.zip has ``009A16b.JPG``). A path that exists exactly is taken as
    is (one stat); only a missing one is looked up, component by component, ignoring case. Each
    folder is listed once and its names cached, so resolving thousands of paths stays cheap.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[str, dict[str, list[str]]] = {}

    def _listing(self, folder: str) -> dict[str, list[str]]:
        if folder not in self._listings:
            names: dict[str, list[str]] = {}
            try:
                with os.scandir(self.root / folder if folder else self.root) as entries:
                    for entry in entries:
                        names.setdefault(entry.name.lower(), []).append(entry.name)
            except OSError:
                pass
            self._listings[folder] = {key: sorted(value) for key, value in names.items()}
        return self._listings[folder]

    def resolve(self, image: str) -> tuple[str | None, list[str]]:
        """(the actual relative path, []) when exactly one file matches ignoring case;
        (None, candidates) when several do; (None, []) when none does."""
        folder = ""
        parts = image.split("/")
        for index, part in enumerate(parts):
            matches = self._listing(folder).get(part.lower(), [])
            if part in matches:
                matches = [part]  # an exact name wins over its case variants
            if len(matches) != 1:
                if len(matches) > 1:
                    rest = "/".join(parts[index + 1 :])
                    joined = [posix_join(folder, m, rest) for m in matches]
                    return None, joined
                return None, []
            folder = posix_join(folder, matches[0])
        return (folder if (self.root / folder).is_file() else None), []


def posix_join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def resolve_images(
    records: Sequence[Record], root: Path
) -> tuple[list[Record], list[LabelProblem]]:
    """Records whose image path is fixed up where only its letter case was wrong, and a
    problem for every label whose image is still missing (the record stays: a failure) or
    matches several files ignoring case (ambiguous: named, never guessed)."""
    resolver = CaseResolver(root)
    resolved: list[Record] = []
    problems: list[LabelProblem] = []
    for record in records:
        if (root / record.image).is_file():
            resolved.append(record)
            continue
        actual, candidates = resolver.resolve(record.image)
        if actual is not None:
            resolved.append(replace(record, image=actual))
            continue
        resolved.append(record)
        why = (
            f"several files match it ignoring case: {', '.join(candidates)}"
            if candidates
            else "the image is missing"
        )
        problems.append(_missing(record, why))
    return resolved, problems


def unlabelled_image_problems(images: Iterable[str], labelled: set[str]) -> list[LabelProblem]:
    """Images no label row mentions: reported, never guessed at. Letter case is ignored, as
    :func:`resolve_images` ignores it when a label's own spelling is missing."""
    known = {name.lower() for name in labelled}
    return [
        LabelProblem(image, None, "image has no label")
        for image in images
        if image not in labelled and image.lower() not in known
    ]


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
