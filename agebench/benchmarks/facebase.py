"""The unified benchmark of Paplham et al. (CVPR 2024): one JSON "database" per dataset.

Each database (``AgeDB.json``, ``MORPH_aligned.json``, ``CLAP2016.json``, ...) is a JSON list of
entries such as::

    {"img_path": "AFAD/AFAD-Full/15/111/638660-1.jpg", "id_num": 638660, "age": 15,
     "gender": "M", "database": "AFAD-Full", "folder": 0,
     "aligned_bbox": [-57, -95, 372, -83, 360, 346, -69, 334],
     "alignment_source": "in the wild"}

``img_path`` is relative to the folder holding all the raw datasets (their ``img_dir``), which
is ``--root`` here. ``folder`` assigns each subject to one of ten folders 0-9, and the paper's
five subject-exclusive splits use them as

    split0: train 0-5, val 6-7, test 8-9     split3: train 5-9,0, val 1-2, test 3-4
    split1: train 2-7, val 8-9, test 0-1     split4: train 6-9,0-1, val 2-3, test 4-5
    split2: train 4-9, val 0-1, test 2-3

CLAP2016 (ChaLearn 2016) and CACD2000 keep their own single split as folders 0/1/2
(train/val/test), whichever ``splitN`` is asked. FG-NET's folder is its subject (1-82, for
leave-one-person-out), so it is scored with ``--protocol all`` (every entry, fold = folder),
the protocol used when none is given for a database holding FG-NET. ``all`` has no split. It is
also how the authors' benchmark files use every other database for cross-dataset
testing.

``age`` is completed years and -1 means unknown (reported, skipped). In CLAP2016 ``age`` is the
**apparent** age, the votes' mean rounded to an integer by the authors, and ``std_age`` the
votes' std: records carry it as ``age`` (what the benchmark scores), as
``targets['apparent_age']`` and ``age_std``.

``aligned_bbox`` is the four corners A, B, C, D (x, y each; top-left, top-right, bottom-right,
bottom-left of the face upright) of a rotated square, in 1-based pixel coordinates (their
``crop_image`` subtracts 1). It is FFHQ-like: about 3.8 eye distances wide, so loose compared with
a detector's box. ``Record.box`` is its axis-aligned hull in 0-based pixels; the corners
themselves are kept in ``attributes['aligned_bbox']`` (8 comma-separated numbers as published)
for an exact rotated crop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agebench.benchmarks.common import RowError, number, read_label_text, resolve_images
from agebench.benchmarks.csv_generic import image_path, images_base, label_name, resolve_labels
from agebench.benchmarks.spec import (
    BenchmarkData,
    BenchmarkError,
    BenchmarkSpec,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
)

#: the paper's five subject-exclusive splits: (train, val, test) folders
SPLITS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "split0": ((0, 1, 2, 3, 4, 5), (6, 7), (8, 9)),
    "split1": ((2, 3, 4, 5, 6, 7), (8, 9), (0, 1)),
    "split2": ((4, 5, 6, 7, 8, 9), (0, 1), (2, 3)),
    "split3": ((5, 6, 7, 8, 9, 0), (1, 2), (3, 4)),
    "split4": ((6, 7, 8, 9, 0, 1), (2, 3), (4, 5)),
}
#: databases with their own single split as folders 0/1/2 (the "database" field)
FIXED_SPLIT = {"ChaLearn2016", "CACD"}
FIXED = ((0,), (1,), (2,))
#: databases whose folder is the subject (leave-one-person-out)
PER_SUBJECT = {"FG-NET"}
SPLIT_NAMES = ("train", "val", "test")
GENDERS = {"M": "male", "F": "female"}
CORNERS = 8


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    if options.labels is None:
        raise BenchmarkError(
            f"{root}: --labels is required: the database JSON to score ({_found_json(root)})"
        )
    path = resolve_labels(options, None, "facebase database JSON")
    name = label_name(path, root)
    entries = _read(path)
    base = images_base(options)
    databases = {str(entry.get("database")) for entry in entries if isinstance(entry, dict)}
    protocol = options.protocol or _default_protocol(databases)
    if protocol == "all" and options.split is not None:
        raise BenchmarkError("facebase: --protocol all scores every entry; omit --split")
    split = options.split or SPEC.default_split_for(protocol)
    if protocol != "all" and databases & PER_SUBJECT:
        raise BenchmarkError(
            f"{path}: FG-NET's folders are its subjects (leave-one-person-out); use "
            "--protocol all (fold = subject), or give no --protocol"
        )
    wanted = _folders(protocol, split, databases)

    records: list[Record] = []
    problems: list[LabelProblem] = []
    for index, entry in enumerate(entries):
        where = f"{name}#{index}"
        try:
            if not isinstance(entry, dict):
                raise RowError(f"entry is a {type(entry).__name__}, not an object")
            folder = _folder(entry)
            if wanted is not None and folder not in wanted:
                continue
            image = image_path(_text(entry, "img_path"), base, root)
            age = _number(entry, "age")
            if age is None or age == -1:
                raise RowError(f"no age for {image} (age is {entry.get('age')!r})")
            if age < 0:
                raise RowError(f"age {age:g} is negative")
            spread = _number(entry, "std_age")
        except RowError as error:
            problems.append(LabelProblem(where, None, str(error)))
            continue
        box, corners, box_problem = _aligned_box(entry.get("aligned_bbox"))
        if box_problem:
            problems.append(LabelProblem(where, None, f"{box_problem}; record kept without a box"))
        attributes: dict[str, str] = {}
        gender = GENDERS.get(str(entry.get("gender", "")).upper())
        if gender:
            attributes["gender"] = gender
        for key in ("database", "alignment_source"):
            if isinstance(entry.get(key), str) and entry[key]:
                attributes[key] = entry[key]
        if corners:
            attributes["aligned_bbox"] = corners
        records.append(
            Record(
                image=image,
                age=age,
                source=where,
                targets={"apparent_age": age} if spread is not None else {},
                age_std=spread,
                subject=_subject(entry),
                fold=str(folder),
                split=None if wanted is None else split,
                box=box,
                attributes=attributes,
            )
        )
    records, missing = resolve_images(records, root)
    problems += missing
    return BenchmarkData(records, problems, [path], protocol=protocol, split=split)


def _default_protocol(databases: set[str]) -> str:
    """What no --protocol means: the paper's split0, except for a database whose folders are
    its subjects (FG-NET), which only ``all`` (fold = subject, leave-one-person-out) can
    score; asking the user to type it would only make the default fail."""
    return "all" if databases & PER_SUBJECT else SPEC.default_protocol


def _found_json(root: Path) -> str:
    found = sorted(
        path.relative_to(root).as_posix()
        for folder in (root, root / "databases", root / "facebase/benchmarks/databases")
        if folder.is_dir()
        for path in folder.glob("*.json")
    )
    return "found: " + ", ".join(found) if found else "no .json found under the root"


def _read(path: Path) -> list[Any]:
    text = read_label_text(path, "database JSON")
    try:
        data = json.loads(text)  # NaN, as pandas writes it, is accepted
    except json.JSONDecodeError as error:
        raise BenchmarkError(f"{path}:{error.lineno}: not a JSON database: {error.msg}") from None
    if not isinstance(data, list):
        raise BenchmarkError(
            f"{path}: expected a JSON list of entries (a facebase database), got a "
            f"{type(data).__name__}"
        )
    return data


def _folders(protocol: str, split: str | None, databases: set[str]) -> set[int] | None:
    if protocol == "all" or split is None:
        return None
    parts = FIXED if databases and databases <= FIXED_SPLIT else SPLITS[protocol]
    return set(parts[SPLIT_NAMES.index(split)])


def _folder(entry: Mapping[str, Any]) -> int:
    value = entry.get("folder")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RowError(f"folder {value!r} is not a number")
    if value != int(value):
        raise RowError(f"folder {value!r} is not a whole number")
    return int(value)


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise RowError(f"{key} {value!r} is not a path")
    return value


def _number(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        raise RowError(f"{key} {value!r} is not a number")
    return number(value, key)


def _subject(entry: Mapping[str, Any]) -> str | None:
    value = entry.get("id_num")
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, float) and value == int(value):
        value = int(value)
    return str(value)


def _aligned_box(
    value: Any,
) -> tuple[tuple[float, float, float, float] | None, str, str]:
    """(axis-aligned hull in 0-based pixels, the corners as published, problem or '')."""
    if value is None or (isinstance(value, Sequence) and len(value) == 0):
        return None, "", ""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != CORNERS:
        return None, "", f"aligned_bbox {value!r} is not 8 numbers"
    try:
        corners = [number(v, "aligned_bbox") for v in value]
    except RowError as error:
        return None, "", str(error)
    xs, ys = corners[0::2], corners[1::2]
    box = (min(xs) - 1, min(ys) - 1, max(xs) - 1, max(ys) - 1)
    if box[2] <= box[0] or box[3] <= box[1]:
        return None, "", f"aligned_bbox {value!r} encloses no area"
    return box, ",".join(f"{v:g}" for v in corners), ""


SPEC = BenchmarkSpec(
    name="facebase",
    version="1",
    title="Unified facial age estimation benchmark (Paplham et al., CVPR 2024)",
    citation=(
        "J. Paplham, V. Franc. A Call to Reflect on Evaluation Practices for Age Estimation: "
        "Comparative Analysis of the State-of-the-Art and a Unified Benchmark. CVPR 2024 "
        "(arXiv:2307.04570)."
    ),
    url="https://github.com/paplhjak/Facial-Age-Estimation-Benchmark-Databases",
    layout="""\
--root is the folder holding the raw datasets (their img_dir), named as img_path says:

root/
  AgeDB/...                  each dataset as its authors publish it, under the folder
  AFAD/AFAD-Full/15/111/...  name img_path starts with
  ChaLearn2016/train/...     (CLAP2016)
  FG-NET/images/...
  MORPH/...
  databases/                 the database JSONs (anywhere; --labels names one, relative to
    AgeDB_aligned.json       the root or absolute). *_aligned.json carry aligned_bbox; the
    CLAP2016.json            plain ones do not (then faces are detected)
    ...
""",
    labels="""\
--labels FILE (required): a JSON list of entries, one per face:
  img_path          image path relative to the root -> image
  age               completed years; -1 unknown (reported, skipped). CLAP2016: the apparent
                    age (rounded mean of the votes) -> also targets['apparent_age']
  std_age           CLAP2016 only: std of the apparent-age votes -> age_std
  folder            folder number -> fold; picks train/val/test (see protocols)
  id_num            subject id (optional) -> subject
  gender            M / F / U -> attributes['gender'] male / female / (left out)
  database          dataset name -> attributes['database']
  aligned_bbox      8 numbers: corners A,B,C,D (x,y) of the rotated aligned face square,
                    1-based -> box (axis-aligned hull, 0-based) and attributes['aligned_bbox']
  alignment_source  -> attributes['alignment_source']
Source of each record: <file>#<0-based index in the list>.
""",
    protocols={
        **{
            name: (
                f"subject-exclusive {name}: train {list(parts[0])}, val {list(parts[1])}, test "
                f"{list(parts[2])} (CLAP2016/CACD2000: their own folders 0/1/2)"
            )
            for name, parts in SPLITS.items()
        },
        "all": (
            "every entry whatever its folder (cross-dataset testing; FG-NET, where it is the "
            "default), no --split"
        ),
    },
    splits=SPLIT_NAMES[::-1],
    targets=("age", "apparent_age"),
    crops=ReadyCrop(
        "photo", description="raw photos as each dataset publishes them; aligned_bbox locates"
    ),
    default_faces="box",
    loader=load,
    unsplit_protocols=("all",),
    options={"images": "folder under the root img_path is relative to (default the root)"},
    notes=(
        "The box is the hull of the aligned square, which is already loose (about 1.5x a "
        "detector's face box); a model expecting its own margin around a detector box should "
        "be run with --faces detect. Entries without aligned_bbox (the plain JSONs, CLAP2016) "
        "have box None. A missing image stays a record (a failure) and is reported. "
        "MORPH's coral-cnn splits are the morph benchmark."
    ),
)
