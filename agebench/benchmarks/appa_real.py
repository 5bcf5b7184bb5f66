"""APPA-REAL (ChaLearn LAP): real and apparent age of 7,591 faces, one split at a time.

The published per-image summary ``gt_avg_<split>.csv`` gives each image's real age and the
mean and std of its ~38 apparent-age votes. Every row is a record, even when its image is
missing (the denominator is the label rows). The headline target is the real age; the
apparent-age mean rides along in ``targets`` (never rounded) and its std in ``age_std`` for the
epsilon-error of the original challenge.

Images: ``X.jpg`` is the photo, ``X.jpg_face.jpg`` the authors' face crop (40% margin, rotated
upright). The crop is the default (``--faces none``); ``--option crop=original`` scores the
photos instead, and then the face must be found: ``SPEC.ready_crop(options)`` says ``photo``
for it, so ``SPEC.faces_for(options)`` (the runner's default ``--faces``) becomes ``detect``.
``SPEC.default_faces`` alone describes the default crop only.

The optional attribute files of Clapés et al. 2018 (``allcategories_<split>.csv``) add gender,
race, makeup, time and happiness to each record's attributes, with the published values kept
verbatim (gender is ``male``/``female``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agebench.benchmarks.common import (
    RowError,
    iter_image_files,
    number,
    option_choice,
    read_table,
    rel,
    require_dir,
    require_file,
    resolve_images,
    unlabelled_image_problems,
)
from agebench.benchmarks.spec import (
    BenchmarkData,
    BenchmarkSpec,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
)

FACE_SUFFIX = "_face.jpg"
CROPS = ("face", "original")
COLUMNS = ("file_name", "apparent_age_avg", "apparent_age_std", "real_age")
#: where the separately published attribute files may lie, relative to the root
CATEGORY_FOLDERS = ("", "allcategories_trainvalidtest_split")
CATEGORY_KEY = "file"


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    split = options.split or SPEC.splits[0]
    crop = option_choice(options, "crop", CROPS)
    labels = require_file(root / f"gt_avg_{split}.csv", f"APPA-REAL {split} labels (gt_avg)")
    folder = require_dir(root / split, f"APPA-REAL {split} image folder")
    rows, problems = read_table(labels, required=COLUMNS, root=root)
    label_name = rel(labels, root)
    categories = _read_categories(root, split)

    records: list[Record] = []
    first_line: dict[str, int] = {}
    referenced: set[str] = set()  # rows that became problems name their image too
    for line, row in rows:
        name = row["file_name"]
        if not name:
            problems.append(LabelProblem(label_name, line, "file_name is empty"))
            continue
        referenced.add(_image(split, name, crop))
        if name in first_line:
            problems.append(
                LabelProblem(label_name, line, f"{name} repeats line {first_line[name]}; ignored")
            )
            continue
        try:
            real_age = number(row["real_age"], "real_age", low=0)
            apparent = number(row["apparent_age_avg"], "apparent_age_avg", low=0)
            spread = number(row["apparent_age_std"], "apparent_age_std", low=0)
        except RowError as error:
            problems.append(LabelProblem(label_name, line, str(error)))
            continue
        first_line[name] = line
        records.append(
            Record(
                image=_image(split, name, crop),
                age=real_age,
                source=f"{label_name}:{line}",
                targets={"apparent_age": apparent},
                age_std=spread,
                split=split,
                attributes=dict(categories.attributes.get(name, {})),
            )
        )
    problems.sort(key=lambda problem: problem.line or 0)

    problems += categories.problems
    problems += [
        LabelProblem(file, line, f"attributes for {name}, which has no gt_avg row")
        for name, (file, line) in categories.sources.items()
        if name not in first_line
    ]
    records, missing = resolve_images(records, root)
    problems += missing
    on_disk = [
        rel(path, root)
        for path in iter_image_files(folder)
        if path.name.endswith(FACE_SUFFIX) == (crop == "face")
    ]
    problems += unlabelled_image_problems(on_disk, referenced)
    return BenchmarkData(records, problems, [labels, *categories.files])


FACE_CROP = ReadyCrop(
    kind="margin",
    margin=0.4,
    aligned=False,
    description="X.jpg_face.jpg: the face box grown by 40% on each side, rotated upright",
)
PHOTO = ReadyCrop(kind="photo", description="X.jpg photos (--option crop=original)")


def ready_crop(options: Mapping[str, Any]) -> ReadyCrop:
    """The face crops by default; the photos, whose faces must be found, with crop=original."""
    return PHOTO if str(options.get("crop", "")).strip().lower() == "original" else FACE_CROP


def _image(split: str, name: str, crop: str) -> str:
    return f"{split}/{name}{FACE_SUFFIX}" if crop == "face" else f"{split}/{name}"


@dataclass
class _Categories:
    """The optional attribute file: image name -> attributes, and the row each came from."""

    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    sources: dict[str, tuple[str, int]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    problems: list[LabelProblem] = field(default_factory=list)


def _read_categories(root: Path, split: str) -> _Categories:
    found = _Categories()
    for folder in CATEGORY_FOLDERS:
        path = root / folder / f"allcategories_{split}.csv"
        if path.is_file():
            break
    else:
        return found
    rows, found.problems = read_table(path, required=(CATEGORY_KEY,), root=root)
    found.files.append(path)
    name = rel(path, root)
    for line, row in rows:
        key = row[CATEGORY_KEY]
        if key in found.sources:
            first = found.sources[key][1]
            found.problems.append(LabelProblem(name, line, f"{key} repeats line {first}; ignored"))
            continue
        found.attributes[key] = {
            column: value for column, value in row.items() if column != CATEGORY_KEY and value
        }
        found.sources[key] = (name, line)
    return found


SPEC = BenchmarkSpec(
    name="appa-real",
    version="1",
    title="APPA-REAL: real and apparent age (ChaLearn LAP 2017)",
    citation=(
        "E. Agustsson, R. Timofte, S. Escalera, X. Baro, I. Guyon, R. Rothe. Apparent and real "
        "age estimation in still images with deep residual regressors on APPA-REAL database. "
        "IEEE FG 2017. Attributes: A. Clapes, O. Bilici, D. Temirova, E. Avots, "
        "G. Anbarjafari, S. Escalera. From apparent to real age: gender, age, ethnic, makeup, "
        "and expression bias analysis in real age estimation. CVPR Workshops 2018."
    ),
    url="https://chalearnlap.cvc.uab.cat/dataset/26/description/",
    layout="""\
--root is the unpacked appa-real-release/ folder:

appa-real-release/
  gt_avg_train.csv        per-image summary, one per split (required for the split you score)
  gt_avg_valid.csv
  gt_avg_test.csv
  gt_train.csv ...        one row per vote (not read)
  train/                  4,113 images
    000000.jpg            the photo (used with --option crop=original)
    000000.jpg_face.jpg   the face crop, 40% margin, rotated upright (the default)
    000000.jpg.mat        face detection meta-data (not read)
  valid/                  1,500 images, same naming
  test/                   1,978 images, same naming
  allcategories_test.csv  optional attributes (Clapes et al. 2018, a separate download);
                          also found in allcategories_trainvalidtest_split/ under the root
""",
    labels="""\
gt_avg_<split>.csv (comma-separated, header row):
  file_name         image name in <split>/, e.g. 005613.jpg
  num_ratings       number of apparent-age votes (not used)
  apparent_age_avg  mean apparent age -> targets["apparent_age"], kept unrounded
  apparent_age_std  std of the votes -> age_std (epsilon-error)
  real_age          chronological age -> age (the headline target)
allcategories_<split>.csv (optional, header row):
  file              image name, as file_name above
  gender, race, makeup, time, happiness
                    copied verbatim into attributes under the column's name (gender is
                    male/female); empty values are left out
""",
    protocols={"split": "score every labelled image of one published split"},
    splits=("test", "valid", "train"),
    targets=("age", "apparent_age"),
    crops=FACE_CROP,
    default_faces="none",
    loader=load,
    options={
        "crop": (
            "face: score the X.jpg_face.jpg crops; original: score the X.jpg photos, whose "
            "faces are then detected (default face)"
        ),
    },
    notes=(
        "A label row whose image is missing stays a record (a failure) and is reported; images "
        "of the scored kind with no row are reported too."
    ),
    crops_for_options=ready_crop,
)
