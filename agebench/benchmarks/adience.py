"""Adience: unfiltered Flickr faces labelled with one of 8 age groups, in 5 published folds.

``fold_{0..4}_data.txt`` (tab-separated) give each face's album owner (``user_id``), photo and
face id, age label and gender. The age label is a group, so records have ``age=None`` and
``age_group`` set; scoring is by group.

Age labels, mapped to the 8 groups (0-2, 4-6, 8-12, 15-20, 25-32, 38-43, 48-53, 60-100):

* the 8 published groups map to themselves;
* ``None`` (or empty) is a problem, not a record;
* an irregular range or single age maps to the group that contains it (``(38, 42)`` -> 38-43,
  ``(27, 32)`` -> 25-32, ``2`` -> 0-2, ``29``/``32`` -> 25-32, ``42`` -> 38-43), or to the one
  group it overlaps;
* a range over two groups is a problem (``(8, 23)``, ``(38, 48)``): not guessed;
* a single age between two groups maps to the nearer one (``13`` -> 8-12, ``22`` -> 15-20,
  ``23``/``34`` -> 25-32, ``36``/``45`` -> 38-43, ``46``/``55``/``56`` -> 48-53,
  ``57``/``58`` -> 60-100); equally near both (``3``, ``35``) is a problem.

``--option irregular=drop`` keeps only the 8 published labels (every other value a problem).
The label as published stays in ``attributes["age_label"]`` so results can be split by it.

Images: ``aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>`` (landmark
aligned) or ``faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>`` (roll
corrected). ``--option images=auto`` (default) takes ``aligned/`` when it exists, else
``faces/``; the image path in every record says which. Both are loose crops whose framing the
authors do not state, so faces are detected by default; the given x, y, dx, dy are in the
original Flickr photo, not in these crops, and are not used.
"""

from __future__ import annotations

import re
from pathlib import Path

from agebench.benchmarks.common import (
    iter_image_files,
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
    BenchmarkError,
    BenchmarkSpec,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
)

FOLDS = 5
GROUPS: tuple[tuple[float, float], ...] = (
    (0.0, 2.0),
    (4.0, 6.0),
    (8.0, 12.0),
    (15.0, 20.0),
    (25.0, 32.0),
    (38.0, 43.0),
    (48.0, 53.0),
    (60.0, 100.0),
)
COLUMNS = ("user_id", "original_image", "face_id", "age", "gender")
#: --option images value -> (folder under the root, file-name prefix)
IMAGE_SETS = {
    "aligned": ("aligned", "landmark_aligned_face"),
    "faces": ("faces", "coarse_tilt_aligned_face"),
}
GENDERS = {"m": "male", "f": "female", "u": "unknown"}
_RANGE = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_AGE = re.compile(r"\d+")


class AgeLabelError(ValueError):
    """An age label that maps to no single group."""


def _name(group: tuple[float, float]) -> str:
    return f"{group[0]:g}-{group[1]:g}"


def age_group(label: str, *, irregular: str = "nearest") -> tuple[float, float]:
    """The group of a published age label (see the module docstring for the rule)."""
    text = label.strip()
    if text in ("", "None"):
        raise AgeLabelError("age is None (no age label)")
    if (match := _RANGE.fullmatch(text)) is not None:
        low, high = float(match[1]), float(match[2])
    elif _AGE.fullmatch(text):
        low = high = float(text)
    else:
        raise AgeLabelError(f"age {text!r} is neither '(low, high)' nor a number")
    if low > high:
        raise AgeLabelError(f"age {text!r}: low above high")
    if (low, high) in GROUPS:
        return GROUPS[GROUPS.index((low, high))]
    if irregular == "drop":
        raise AgeLabelError(f"age {text!r} is not one of the 8 groups (--option irregular=drop)")
    overlapping = [g for g in GROUPS if low <= g[1] and g[0] <= high]
    if len(overlapping) == 1:
        return overlapping[0]
    if overlapping:
        spans = " and ".join(_name(g) for g in overlapping)
        raise AgeLabelError(f"age {text!r} spans groups {spans}; not guessed")
    distance = {g: max(g[0] - high, low - g[1]) for g in GROUPS}
    nearest = min(distance.values())
    closest = [g for g in GROUPS if distance[g] == nearest]
    if len(closest) > 1:
        tied = " and ".join(_name(g) for g in closest)
        raise AgeLabelError(f"age {text!r} is equally near groups {tied}; not guessed")
    return closest[0]


def image_set(root: Path, choice: str) -> str:
    if choice != "auto":
        require_dir(root / IMAGE_SETS[choice][0], f"Adience {choice} image folder")
        return choice
    for name, (folder, _) in IMAGE_SETS.items():
        if (root / folder).is_dir():
            return name
    folders = " or ".join(f"{folder}/" for folder, _ in IMAGE_SETS.values())
    raise BenchmarkError(f"{root}: no Adience image folder ({folders}) found")


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    choice = option_choice(options, "images", ("auto", *IMAGE_SETS))
    irregular = option_choice(options, "irregular", ("nearest", "drop"))
    label_files = [
        require_file(root / f"fold_{fold}_data.txt", f"Adience fold {fold} labels")
        for fold in range(FOLDS)
    ]
    chosen = image_set(root, choice)
    folder, prefix = IMAGE_SETS[chosen]

    records: list[Record] = []
    problems: list[LabelProblem] = []
    first: dict[str, str] = {}
    referenced: set[str] = set()
    for fold, path in enumerate(label_files):
        rows, fold_problems = read_table(path, required=COLUMNS, root=root, delimiter="\t")
        name = rel(path, root)
        for line, row in rows:
            where = f"{name}:{line}"
            user, original, face = row["user_id"], row["original_image"], row["face_id"]
            if not (user and original and face):
                fold_problems.append(
                    LabelProblem(name, line, "user_id, original_image or face_id empty")
                )
                continue
            image = f"{folder}/{user}/{prefix}.{face}.{original}"
            referenced.add(image)  # rows that became problems name their image too
            try:
                group = age_group(row["age"], irregular=irregular)
            except AgeLabelError as error:
                fold_problems.append(LabelProblem(name, line, str(error)))
                continue
            if image in first:
                fold_problems.append(
                    LabelProblem(name, line, f"{image} repeats {first[image]}; ignored")
                )
                continue
            first[image] = where
            attributes = {"age_label": row["age"]}
            gender = row["gender"]
            if gender in GENDERS:
                attributes["gender"] = GENDERS[gender]
            elif gender:
                fold_problems.append(
                    LabelProblem(name, line, f"gender {gender!r} is not m, f or u; left out")
                )
            records.append(
                Record(
                    image=image,
                    age=None,
                    source=where,
                    age_group=group,
                    subject=user,
                    fold=str(fold),
                    attributes=attributes,
                )
            )
        problems += sorted(fold_problems, key=lambda problem: problem.line or 0)

    records, missing = resolve_images(records, root)
    problems += missing
    on_disk = (rel(path, root) for path in iter_image_files(root / folder))
    problems += unlabelled_image_problems(on_disk, referenced)
    return BenchmarkData(records, problems, label_files)


SPEC = BenchmarkSpec(
    name="adience",
    version="1",
    title="Adience: age and gender of unfiltered faces",
    citation=(
        "E. Eidinger, R. Enbar, T. Hassner. Age and gender estimation of unfiltered faces. "
        "IEEE Transactions on Information Forensics and Security 9(12):2170-2179, 2014."
    ),
    url="https://talhassner.github.io/home/projects/Adience/Adience-data.html",
    layout="""\
--root is the folder where the archives and fold files were unpacked:

adience/
  fold_0_data.txt ... fold_4_data.txt    the five folds (all five required)
  fold_frontal_0_data.txt ...            frontal-only folds (optional, not read)
  aligned/                               aligned.tar.gz (used when present)
    30601258@N03/
      landmark_aligned_face.1.10399646885_67c7d20df9_o.jpg
  faces/                                 faces.tar.gz (used when aligned/ is absent, or with
    30601258@N03/                        --option images=faces)
      coarse_tilt_aligned_face.1.10399646885_67c7d20df9_o.jpg

One of aligned/ and faces/ is enough. If unpacking gave aligned/aligned/, move the inner
folder up.
""",
    labels="""\
fold_<k>_data.txt, tab-separated, header row; k is the record's fold:
  user_id               Flickr album owner: the image folder -> subject (folds are split by it)
  original_image        photo name, the end of the image file name
  face_id               face number in that photo, the middle of the image file name
  age                   '(25, 32)' ... or an irregular value -> age_group (see notes), kept
                        verbatim in attributes["age_label"]; 'None' is a problem
  gender                m, f, u -> attributes["gender"] = male | female | unknown
  x, y, dx, dy          face box in the original Flickr photo (not these crops; not used)
  tilt_ang, fiducial_yaw_angle, fiducial_score   pose and landmark score (not used)
""",
    protocols={"5fold": "the five published folds: fold = 0..4"},
    splits=(),
    targets=("age_group",),
    crops=ReadyCrop(
        kind="photo",
        description=(
            "loose face crops (roll-corrected or landmark-aligned) of unstated framing: the "
            "face is detected so that each model frames it its own way"
        ),
    ),
    default_faces="detect",
    loader=load,
    groups=GROUPS,
    options={
        "images": (
            "aligned: aligned/ landmark-aligned crops; faces: faces/ roll-corrected crops; "
            "auto: aligned/ when present, else faces/ (default auto)"
        ),
        "irregular": (
            "nearest: map irregular age labels to the containing or nearest group, ties and "
            "two-group ranges reported; drop: keep only the 8 published groups (default nearest)"
        ),
    },
    notes=(
        "Irregular labels in the published folds and their groups: (38, 42) 38-43, (27, 32) "
        "25-32, (8, 23) and (38, 48) problems (span two groups), 2 0-2, 3 problem (tie), 13 "
        "8-12, 22 15-20, 23 29 32 34 25-32, 35 problem (tie), 36 42 45 38-43, 46 55 56 48-53, "
        "57 58 60-100. Records follow the fold files' order."
    ),
)
