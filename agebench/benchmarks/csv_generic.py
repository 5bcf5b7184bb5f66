"""Any CSV with an image-path column and an age column: for data laid out by hand.

Columns are named by role with ``LoadOptions.columns`` (``--column role=name``): ``path`` and
``age`` (defaults ``path`` and ``age``) are required; ``subject``, ``fold``, ``split``, ``std``
(apparent-age std, for the epsilon-error) and a face box ``x1``, ``y1``, ``x2``, ``y2`` (all four
or none, image pixels) are optional. Further columns named in ``--option attributes=a,b`` are
copied verbatim into each record's attributes.

What the images are cannot be known from a CSV, so ``--option crop=`` says it: ``photo`` (the
default: whole photos, faces are detected or the box columns used), ``tight`` (the image is the
face, tightly cropped), ``aligned`` (tight and aligned) or ``margin:<m>`` (the face box grown by
``m`` of its size on each side, e.g. ``margin:0.4``). ``SPEC.crops`` is static, so the runner asks
:func:`ready_crop` (wired as ``SPEC.crops_for_options``) and :func:`default_faces`.

The helpers at the top (header reading, label-file and image-path resolution) are shared by the
other CSV-based loaders (``morph``, ``lagenda``/``mivolo-csv``).
"""

from __future__ import annotations

import csv
import os
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from agebench.benchmarks.common import (
    RowError,
    number,
    read_label_text,
    read_table,
    rel,
    require_dir,
    require_file,
    resolve_images,
)
from agebench.benchmarks.spec import (
    BenchmarkData,
    BenchmarkError,
    BenchmarkSpec,
    FacesMode,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
)

ROLES = ("path", "age", "subject", "fold", "split", "std", "x1", "y1", "x2", "y2")
DEFAULT_COLUMNS = {"path": "path", "age": "age"}
BOX_ROLES = ("x1", "y1", "x2", "y2")
#: the ages a label may carry; anything outside is a typo or a unit mix-up (months, days)
AGE_RANGE = (0.0, 150.0)
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "\\t": "\t", "\t": "\t", "|": "|", " ": " "}


# --------------------------------------------------------------------------- shared helpers


def label_name(path: Path, root: Path) -> str:
    """How a label file is named in sources and problems: relative to the root when inside it."""
    try:
        return rel(path, root)
    except ValueError:
        return str(path)


def resolve_labels(options: LoadOptions, default: str | None, what: str) -> Path:
    """The label file: ``--labels`` (absolute, relative to the root, or else to the working
    directory) or ``default`` under the root. Missing is fatal, naming what was expected."""
    root = options.root
    if options.labels is None:
        if default is None:
            raise BenchmarkError(f"{root}: --labels FILE is required ({what})")
        return require_file(root / default, what)
    given = Path(options.labels)
    if given.is_absolute():
        return require_file(given, what)
    under_root = root / given
    if not under_root.is_file() and given.is_file():
        return given
    return require_file(under_root, what)


def read_header(path: Path, delimiter: str = ",") -> list[str]:
    """The stripped header of a delimited file (UTF-8 BOM dropped); empty or unreadable is fatal."""
    first_line = read_label_text(path).splitlines()[:1]
    try:
        return [name.strip() for name in next(csv.reader(first_line, delimiter=delimiter))]
    except StopIteration:
        raise BenchmarkError(f"{path}: label file is empty") from None
    except csv.Error as error:
        raise BenchmarkError(f"{path}: cannot read label file: {error}") from None


def find_column(header: Sequence[str], aliases: Sequence[str]) -> str | None:
    """The first header name equal, ignoring case, to one of ``aliases`` (tried in order)."""
    lowered = {name.lower(): name for name in reversed(header)}
    for alias in aliases:
        if alias.lower() in lowered:
            return lowered[alias.lower()]
    return None


def images_base(options: LoadOptions, default: str = "") -> str:
    """``--option images=DIR``: the folder image paths are relative to, as a POSIX path relative
    to the root ('' for the root itself). A folder named explicitly must exist."""
    given = options.options.get("images")
    if given is None:
        return default
    text = str(given).strip().replace("\\", "/")
    folder = Path(text) if Path(text).is_absolute() else options.root / text
    require_dir(folder, "image folder (--option images)")
    try:
        base = Path(os.path.abspath(folder)).relative_to(os.path.abspath(options.root))
    except ValueError:
        raise BenchmarkError(
            f"{folder}: image folder must lie under the root {options.root}"
        ) from None
    text = base.as_posix()
    return "" if text == "." else text


def image_path(value: str, base: str, root: Path) -> str:
    """A label's image path, made relative to the root (POSIX). Raises RowError when empty or
    outside the root."""
    text = value.strip().replace("\\", "/")
    if not text:
        raise RowError("image path is empty")
    if PurePosixPath(text).is_absolute():
        try:
            return Path(os.path.abspath(text)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            raise RowError(f"image path {text!r} is outside the root") from None
    joined = posixpath.normpath(posixpath.join(base, text) if base else text)
    if joined == ".." or joined.startswith("../") or joined == ".":
        raise RowError(f"image path {text!r} leaves the root")
    return joined


def delimiter_option(options: LoadOptions) -> str:
    value = str(options.options.get("delimiter", ","))
    if value in DELIMITERS:
        return DELIMITERS[value]
    if value.lower() in DELIMITERS:
        return DELIMITERS[value.lower()]
    if len(value) == 1:
        return value
    raise BenchmarkError(
        f"--option delimiter={value}: expected one character, or tab (found {len(value)} chars)"
    )


def parse_box(values: Sequence[str], names: Sequence[str]) -> tuple[float, float, float, float]:
    """x1, y1, x2, y2 as floats, or RowError when not numbers or empty (x2 <= x1, y2 <= y1)."""
    x1, y1, x2, y2 = (number(value, name) for value, name in zip(values, names, strict=True))
    if x2 <= x1 or y2 <= y1:
        raise RowError(f"face box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty")
    return (x1, y1, x2, y2)


# --------------------------------------------------------------------------- the csv benchmark


#: ``--option crop=`` values other than ``margin:<m>``
_FIXED_CROPS = {
    "photo": ReadyCrop("photo", description="whole photos (--option crop=photo)"),
    "tight": ReadyCrop("tight", description="tight face crops (--option crop=tight)"),
    "aligned": ReadyCrop(
        "tight", aligned=True, description="tight, aligned face crops (--option crop=aligned)"
    ),
}


def ready_crop(options: Mapping[str, Any]) -> ReadyCrop:
    """What the images are, from ``--option crop=`` (photo, tight, aligned or margin:<m>)."""
    value = str(options.get("crop", "photo")).strip().lower()
    if value in _FIXED_CROPS:
        return _FIXED_CROPS[value]
    if value.startswith("margin:"):
        try:
            margin = float(value.split(":", 1)[1])
        except ValueError:
            margin = -1.0
        if 0.0 <= margin <= 5.0:
            return ReadyCrop(
                "margin",
                margin=margin,
                description=f"face crops with a {margin:g} margin on each side ({value})",
            )
    raise BenchmarkError(
        f"--option crop={options.get('crop')}: expected photo, tight, aligned or margin:<m> "
        "with m a fraction such as 0.4"
    )


def default_faces(options: LoadOptions) -> FacesMode:
    """``--faces`` to use when none is given: the box columns if mapped, none for crops,
    detection for photos."""
    if all(role in options.columns for role in BOX_ROLES):
        return "box"
    return "detect" if ready_crop(options.options).kind == "photo" else "none"


def _columns(options: LoadOptions) -> dict[str, str]:
    unknown = sorted(set(options.columns) - set(ROLES))
    if unknown:
        raise BenchmarkError(
            f"csv: unknown column role(s) {', '.join(unknown)}; roles: {', '.join(ROLES)}"
        )
    columns = {**DEFAULT_COLUMNS, **{role: name.strip() for role, name in options.columns.items()}}
    given_box = [role for role in BOX_ROLES if role in columns]
    if given_box and len(given_box) != len(BOX_ROLES):
        raise BenchmarkError(
            f"csv: a face box needs all of {', '.join(BOX_ROLES)}; got only {', '.join(given_box)}"
        )
    return columns


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    columns = _columns(options)
    delimiter = delimiter_option(options)
    ready_crop(options.options)  # a bad crop= is fatal before anything is read
    attribute_columns = [
        name.strip() for name in str(options.options.get("attributes", "")).split(",")
    ]
    attribute_columns = [name for name in attribute_columns if name]
    path = resolve_labels(options, None, "the CSV to score (any CSV with a path and an age)")
    base = images_base(options)
    name = label_name(path, root)
    required = list(dict.fromkeys([*columns.values(), *attribute_columns]))
    rows, problems = read_table(path, required=required, root=root, delimiter=delimiter)

    records: list[Record] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        try:
            image = image_path(row[columns["path"]], base, root)
            age = number(row[columns["age"]], columns["age"], low=AGE_RANGE[0], high=AGE_RANGE[1])
            spread = None
            if "std" in columns:
                spread = number(row[columns["std"]], columns["std"], low=0)
        except RowError as error:
            problems.append(LabelProblem(name, line, str(error)))
            continue
        if image in first_line:
            problems.append(
                LabelProblem(name, line, f"{image} repeats line {first_line[image]}; ignored")
            )
            continue
        first_line[image] = line
        box = None
        if "x1" in columns:
            try:
                names = [columns[role] for role in BOX_ROLES]
                box = parse_box([row[column] for column in names], names)
            except RowError as error:
                problems.append(LabelProblem(name, line, f"{error}; record kept without a box"))
        records.append(
            Record(
                image=image,
                age=age,
                source=f"{name}:{line}",
                age_std=spread,
                subject=_optional(row, columns.get("subject")),
                fold=_optional(row, columns.get("fold")),
                split=_optional(row, columns.get("split")),
                box=box,
                attributes={column: row[column] for column in attribute_columns if row[column]},
            )
        )
    problems.sort(key=lambda problem: problem.line or 0)  # file order
    records, missing = resolve_images(records, root)
    problems += missing
    return BenchmarkData(records, problems, [path])


def _optional(row: Mapping[str, str], column: str | None) -> str | None:
    if column is None:
        return None
    return row[column] or None


SPEC = BenchmarkSpec(
    name="csv",
    version="1",
    title="Any CSV of image paths and ages",
    citation="(your data: cite its source)",
    url="",
    layout="""\
--root is the folder the image paths are relative to (or --option images=DIR under it):

root/
  labels.csv              any name; passed with --labels (required), relative to the root
                          or absolute
  photos/a.jpg            images, wherever the path column says
  faces/b.png
""",
    labels="""\
--labels FILE: a delimited text file with a header row (--option delimiter=, default ',').
Columns are named by role with --column role=name:
  path       image path, relative to --root (or to --option images); required (default 'path')
  age        age in years, 0..150; required (default 'age')
  subject    person id (optional) -> subject
  fold       fold id (optional) -> fold
  split      split name (optional) -> split (recorded, not filtered)
  std        apparent-age std (optional) -> age_std
  x1 y1 x2 y2
             face box in image pixels (optional, all four) -> box
Columns listed in --option attributes=a,b go verbatim into attributes (empty values left out).
A row whose age is not a number is reported with its line; a path whose image is missing stays
a record (a failure) and is reported.
""",
    protocols={"as-labelled": "every row of the CSV, as it is"},
    splits=(),
    targets=("age",),
    crops=ReadyCrop("photo", description="whole photos unless --option crop= says otherwise"),
    default_faces="detect",
    loader=load,
    options={
        "delimiter": "field delimiter: one character, or tab (default ,)",
        "images": "folder, under the root, that the path column is relative to (default the root)",
        "attributes": "comma-separated columns copied into attributes (default none)",
        "crop": (
            "what the images are: photo, tight, aligned or margin:<m>, e.g. margin:0.4 "
            "(default photo)"
        ),
    },
    notes=(
        "The default --faces follows the options: box when the four box columns are mapped, "
        "none with --option crop=tight, aligned or margin:<m>, detect otherwise. A repeated "
        "image path is reported and its later rows ignored."
    ),
    crops_for_options=ready_crop,
)
