"""All-Age-Faces (AAF): 13,322 faces, mostly Asian, aged 2 to 80, with a train/val split.

Each image shows a different person and is named ``%05dA%02d.jpg``: serial number, ``A``, age.
The split lists ``image sets/train.txt`` and ``image sets/val.txt`` hold one line per image,
``00000A02.jpg 0``: the name and the gender (0 female, 1 male, as the authors' README says;
serials 00000-07380 are female, 07381-13321 male). The age comes from the name.

The published archive spells the aligned folder ``aglined faces``; the authors' README calls it
``aligned faces``. Either is read (the published spelling first). The aligned faces are the
default crop; ``--option crop=original`` scores ``original images/`` instead, which are not
aligned: ``SPEC.ready_crop(options)`` says ``photo`` for them, so the runner's default
``--faces`` (``SPEC.faces_for``) becomes ``detect``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agebench.benchmarks.common import (
    iter_image_files,
    option_choice,
    read_label_text,
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

LIST_FOLDER = "image sets"
ALIGNED_FOLDERS = ("aglined faces", "aligned faces")
ORIGINAL_FOLDER = "original images"
CROPS = ("aligned", "original")
SPLITS = ("val", "train")
GENDERS = {"0": "female", "1": "male"}
NAME = re.compile(r"(?P<serial>\d{5})[Aa](?P<age>\d{2})(?P<ext>\.jpg)?", re.IGNORECASE)


#: How loosely the authors' aligned crops frame the face, as ``ReadyCrop`` margin: the face box
#: grown by this fraction of its size on each side. Not a tight crop: declared tight, the whole
#: frame was taken for the face and dlib-age-v1 scored MAE 15.1 with --faces none against 7.8
#: with --faces detect. On the published aligned faces the face covers about 57% of the
#: frame's width (reported in issue 11; no AAF image is at hand here to measure it again), and
#: a face box spanning a fraction f of the frame has m = (1 / f - 1) / 2 = 0.377 for f = 0.57.
#: The published ``key points/NNNNNAyy.txt`` (49 "x y" lines: the iBUG-68 points without the
#: 17 jaw points) cannot give this number: they are in the original images' pixels (their eyes
#: are not level, e.g. 00030A02's eye centres differ by 10 px in y, which an aligned crop's
#: would not), and without the jaw they bound brows to lips, not a face box.
ALIGNED_MARGIN = 0.38

ALIGNED = ReadyCrop(
    kind="margin",
    margin=ALIGNED_MARGIN,
    aligned=True,
    description=(
        f"aglined faces/: faces aligned and cropped by the authors, with about a "
        f"{ALIGNED_MARGIN:g} margin around the face box"
    ),
)
PHOTO = ReadyCrop(
    kind="photo",
    description="original images/: the face photos before alignment (--option crop=original)",
)


def ready_crop(options: Mapping[str, Any]) -> ReadyCrop:
    """The aligned faces by default; the unaligned originals with crop=original."""
    return PHOTO if str(options.get("crop", "")).strip().lower() == "original" else ALIGNED


def image_folder(root: Path, crop: str) -> Path:
    if crop == "original":
        return require_dir(root / ORIGINAL_FOLDER, "AAF original images folder")
    for name in ALIGNED_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise BenchmarkError(
        f"{root / ALIGNED_FOLDERS[0]}: AAF aligned faces folder not found "
        f"(nor {ALIGNED_FOLDERS[1]!r})"
    )


@dataclass
class SplitList:
    records: list[Record] = field(default_factory=list)
    problems: list[LabelProblem] = field(default_factory=list)
    #: every image a line names, also those whose line became a problem
    referenced: set[str] = field(default_factory=set)


def read_list(path: Path, root: Path, folder: str, split: str) -> SplitList:
    """One split list: ``<name> <gender>`` per line (1-based line numbers, no header)."""
    name = rel(path, root)
    text = read_label_text(path, "AAF split list")
    found = SplitList()
    problems = found.problems
    first: dict[str, int] = {}
    for line, content in enumerate(text.splitlines(), start=1):
        fields = content.split()
        if not fields:
            continue
        if len(fields) != 2:
            problems.append(
                LabelProblem(name, line, f"{len(fields)} fields, expected '<image> <gender>'")
            )
            continue
        match = NAME.fullmatch(fields[0])
        if match is None:
            problems.append(LabelProblem(name, line, f"{fields[0]!r} does not match NNNNNAyy.jpg"))
            continue
        file_name = fields[0] if match["ext"] else f"{fields[0]}.jpg"
        found.referenced.add(f"{folder}/{file_name}")
        if fields[1] not in GENDERS:
            problems.append(
                LabelProblem(name, line, f"gender {fields[1]!r} is not 0 (female) or 1 (male)")
            )
            continue
        if file_name in first:
            problems.append(
                LabelProblem(name, line, f"{file_name} repeats line {first[file_name]}; ignored")
            )
            continue
        first[file_name] = line
        found.records.append(
            Record(
                image=f"{folder}/{file_name}",
                age=float(match["age"]),
                source=f"{name}:{line}",
                subject=match["serial"],
                split=split,
                attributes={"gender": GENDERS[fields[1]]},
            )
        )
    return found


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    split = options.split or SPEC.splits[0]
    crop = option_choice(options, "crop", CROPS)
    lists = require_dir(root / LIST_FOLDER, "AAF split lists folder")
    folder = image_folder(root, crop)
    path = require_file(lists / f"{split}.txt", f"AAF {split} list")
    chosen = read_list(path, root, folder.name, split)
    records, problems = chosen.records, chosen.problems
    records, missing = resolve_images(records, root)
    problems += missing

    # Images of the other split are labelled too: only with both lists can an image be
    # called unlabelled. Without the other list, that check is skipped rather than wrong.
    label_files = [path]
    others = [lists / f"{other}.txt" for other in SPLITS if other != split]
    if all(other.is_file() for other in others):
        labelled = set(chosen.referenced)
        for other in others:
            labelled |= read_list(other, root, folder.name, split).referenced
            label_files.append(other)
        on_disk = [rel(image, root) for image in iter_image_files(folder)]
        problems += unlabelled_image_problems(on_disk, labelled)
    return BenchmarkData(records, problems, label_files)


SPEC = BenchmarkSpec(
    name="aaf",
    version="1",
    title="All-Age-Faces (AAF)",
    citation=(
        "J. Cheng, Y. Li, J. Wang, L. Yu, S. Wang. Exploiting effective facial patches for "
        "robust gender recognition. Tsinghua Science and Technology 24(3):333-345, 2019."
    ),
    url="https://github.com/JingchunCheng/All-Age-Faces-Dataset",
    layout="""\
--root is the unpacked "All-Age-Faces Dataset" folder:

All-Age-Faces Dataset/
  image sets/
    train.txt          training list (read to tell unlabelled images apart)
    val.txt            validation list (the default split)
  aglined faces/       aligned faces (the default); "aligned faces" is accepted too
    00000A02.jpg
    ...
    13321A80.jpg
  original images/     the faces before alignment (--option crop=original; optional otherwise)
    00000A02.jpg
  key points/          49 landmarks per original image (optional, not read: they are in
                       the original images' pixels, not the aligned faces')
  example/             (optional, not read)
""",
    labels="""\
image sets/<split>.txt, one image per line, no header, separated by a space:
  00000A02.jpg   the image name: serial (00000-13321) -> subject, A, age (02-80) -> age;
                 accepted with or without .jpg
  0              gender: 0 female, 1 male -> attributes["gender"] = female | male
""",
    protocols={"split": "score every image of one published split list"},
    splits=SPLITS,
    targets=("age",),
    crops=ALIGNED,
    default_faces="none",
    loader=load,
    options={
        "crop": (
            "aligned: score the aligned faces; original: score original images/, whose faces "
            "are then detected (default aligned)"
        ),
    },
    notes=(
        "Records follow the split list's order. A listed image that is missing stays a record "
        "(a failure) and is reported; images in neither list are reported when both lists exist."
    ),
    crops_for_options=ready_crop,
)
