"""FG-NET Aging Database: 1,002 photos of 82 people aged 0 to 69, labelled by file name.

``images/078A11.JPG`` is subject 078 at age 11. The letter case of the ``A`` and of the
extension varies between copies (``001a02.jpg``), and a trailing letter marks a second photo at
the same age (``010A07a.JPG``, ``010A07b.JPG``). There is no label file: the names are the
labels, so a name that does not follow the pattern is reported, never guessed at.

FG-NET is scored by leave-one-person-out (``lopo``: the fold is the subject, 82 folds) or by
subject-disjoint k folds (``kfold``: ``--folds``/``--seed``). The images are whole photos,
many scanned, so faces are detected by default.
"""

from __future__ import annotations

import re
from pathlib import Path

from agebench.benchmarks.common import iter_image_files, rel
from agebench.benchmarks.spec import (
    BenchmarkData,
    BenchmarkError,
    BenchmarkSpec,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
    deal_folds,
)

IMAGE_FOLDER = "images"
NAME = re.compile(r"(?P<subject>\d{3})[Aa](?P<age>\d{2})(?P<extra>[A-Za-z])?")
NAME_REASON = "name does not match NNNAyy[a-z] (subject, A, two-digit age, optional letter)"


def image_files(root: Path) -> list[Path]:
    """``images/`` under the root when it exists, else the image files directly in the root."""
    folder = root / IMAGE_FOLDER
    if folder.is_dir():
        return list(iter_image_files(folder))
    return [path for path in iter_image_files(root) if path.parent == root]


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    protocol = options.protocol or SPEC.default_protocol
    files = image_files(root)
    if not files:
        raise BenchmarkError(
            f"{root}: no FG-NET images found in {IMAGE_FOLDER}/ or in the root itself"
        )

    records: list[Record] = []
    problems: list[LabelProblem] = []
    first: dict[str, str] = {}
    for path in files:
        image = rel(path, root)
        match = NAME.fullmatch(path.stem)
        if match is None:
            problems.append(LabelProblem(image, None, NAME_REASON))
            continue
        key = path.stem.lower()
        if key in first:
            problems.append(
                LabelProblem(image, None, f"same name as {first[key]} (letter case or extension)")
            )
            continue
        first[key] = image
        records.append(
            Record(
                image=image,
                age=float(match["age"]),
                source=image,
                subject=match["subject"],
                fold=match["subject"],
            )
        )

    if protocol == "kfold":
        records = deal_folds(records, "kfold", options.folds, options.seed, bench="fgnet")
    return BenchmarkData(records, problems, [])


SPEC = BenchmarkSpec(
    name="fgnet",
    version="1",
    title="FG-NET Aging Database",
    citation=(
        "A. Lanitis, C. J. Taylor, T. F. Cootes. Toward automatic simulation of aging effects "
        "on face images. IEEE Transactions on Pattern Analysis and Machine Intelligence 24(4), "
        "2002 (the FG-NET Aging Database, FG-NET consortium)."
    ),
    url="https://yanweifu.github.io/FG_NET_data/",
    layout="""\
--root is the unpacked FGNET/ folder (the one holding images/):

FGNET/
  images/          1,002 photos; the name is the label
    001A02.JPG     subject 001 at age 02 (A may be lower case, extension .JPG or .jpg)
    001A05.JPG
    010A07a.JPG    a trailing letter: a second photo of subject 010 at age 07
    010A07b.JPG
    ...
    082A...
  points/          68 landmarks per image (optional, not read)

Copies that put the photos directly in the root (no images/ folder) are read too: then only
the image files directly in --root count.
""",
    labels="""\
No label file. Each name is NNNAyy[a-z].<ext>:
  NNN   subject, 001-082 -> subject (and the fold under lopo)
  A     literally A or a
  yy    age in years, 00-69 -> age
  [a-z] optional: a further photo of that subject at that age
Names that do not follow the pattern are reported as problems; two files whose names differ
only in letter case or extension are counted once.
""",
    protocols={
        "lopo": "leave one person out: fold = subject (82 folds)",
        "kfold": "subject-disjoint folds: --folds k (default 5), subjects dealt by --seed",
    },
    splits=(),
    targets=("age",),
    crops=ReadyCrop(
        kind="photo",
        description="whole photos (many scanned prints); the face must be detected",
    ),
    default_faces="detect",
    loader=load,
    notes="Records are sorted by image path.",
)
