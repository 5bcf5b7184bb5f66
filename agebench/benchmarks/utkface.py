"""UTKFace: 23,708 faces aged 0 to 116, labelled by file name.

``[age]_[gender]_[race]_[datetime].jpg`` is an in-the-wild photo; the same name followed by
``.chip.jpg`` is its aligned and cropped face (200x200). The name is the label: gender 0 male,
1 female; race 0-4 White, Black, Asian, Indian, Others (attributes ``male``/``female`` and
``white``/``black``/``asian``/``indian``/``others``). A few published names lack a field (for
example ``39_1_20170116174525125.jpg.chip.jpg`` has no race): they are reported as malformed
and make no record. Nothing is guessed.

Which images count (``--option subset``): ``chips`` (default) scores the aligned crops, which
is what ``SPEC.crops`` describes and what ``--faces none`` suits. ``photos`` scores the
in-the-wild photos and ``all`` both; for these ``SPEC.ready_crop(options)`` says ``photo``, so
the runner's default ``--faces`` (``SPEC.faces_for``) becomes ``detect`` (chips are then
detected too: one framing for the whole run). The default is fixed rather than guessed from the
tree, and a tree with photos but no chips is refused with the option to pass, so photos are
never scored as if they were chips.

Images are found anywhere under the root. A file name seen twice (``UTKFace/`` and a copy of
part of it such as ``crop_part1/``) is counted once, at its first path in sorted order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agebench.benchmarks.common import iter_image_files, option_choice, rel
from agebench.benchmarks.spec import (
    BenchmarkData,
    BenchmarkError,
    BenchmarkSpec,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
)

CHIP_SUFFIX = ".chip.jpg"
SUBSETS = ("chips", "photos", "all")
GENDERS = {"0": "male", "1": "female"}
RACES = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "others"}
PATTERN = "[age]_[gender]_[race]_[datetime].jpg"
_FIELD = re.compile(r"\d+")


CHIPS = ReadyCrop(
    kind="tight",
    aligned=True,
    description="*.jpg.chip.jpg: 200x200 aligned faces with little margin",
)
PHOTO = ReadyCrop(
    kind="photo",
    description="in-the-wild photos (--option subset=photos or all): faces are detected",
)


def ready_crop(options: Mapping[str, Any]) -> ReadyCrop:
    """The chips by default; photos (faces to detect) once the in-the-wild images count."""
    subset = str(options.get("subset", SUBSETS[0])).strip().lower()
    return PHOTO if subset in ("photos", "all") else CHIPS


class _Malformed(ValueError):
    pass


def parse_name(name: str) -> dict[str, str]:
    """age, gender, race and datetime from a UTKFace name (chip or photo); _Malformed if not."""
    base = name.removesuffix(CHIP_SUFFIX)
    if not base.endswith(".jpg"):
        raise _Malformed(f"name does not match {PATTERN}[{CHIP_SUFFIX}]")
    fields = base.removesuffix(".jpg").split("_")
    if len(fields) != 4:
        raise _Malformed(
            f"malformed label: {len(fields)} underscore-separated fields, expected 4 "
            f"({PATTERN}); not guessed"
        )
    if not all(_FIELD.fullmatch(field) for field in fields):
        raise _Malformed(f"malformed label: fields must be whole numbers ({PATTERN})")
    age, gender, race, taken = fields
    if gender not in GENDERS:
        raise _Malformed(f"malformed label: gender {gender} is not 0 (male) or 1 (female)")
    if race not in RACES:
        raise _Malformed(f"malformed label: race {race} is not 0-4")
    return {"age": age, "gender": GENDERS[gender], "race": RACES[race], "datetime": taken}


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    subset = option_choice(options, "subset", SUBSETS)
    files = list(iter_image_files(root))
    chips = [path for path in files if path.name.endswith(CHIP_SUFFIX)]
    photos = [path for path in files if not path.name.endswith(CHIP_SUFFIX)]
    chosen = {"chips": chips, "photos": photos, "all": files}[subset]
    if subset == "chips" and not chips:
        found = f"; found {len(photos)} other images" if photos else ""
        raise BenchmarkError(
            f"{root}: no UTKFace aligned chips (*{CHIP_SUFFIX}){found}. For the in-the-wild "
            "photos pass --option subset=photos"
        )
    if not chosen:
        raise BenchmarkError(f"{root}: no UTKFace images found ({PATTERN})")

    records: list[Record] = []
    problems: list[LabelProblem] = []
    first: dict[str, str] = {}
    for path in chosen:
        image = rel(path, root)
        try:
            label = parse_name(path.name)
        except _Malformed as error:
            problems.append(LabelProblem(image, None, str(error)))
            continue
        if path.name in first:
            problems.append(LabelProblem(image, None, f"copy of {first[path.name]}; counted once"))
            continue
        first[path.name] = image
        records.append(
            Record(
                image=image,
                age=float(label["age"]),
                source=image,
                attributes={"gender": label["gender"], "race": label["race"]},
            )
        )
    return BenchmarkData(records, problems, [])


SPEC = BenchmarkSpec(
    name="utkface",
    version="1",
    title="UTKFace",
    citation=(
        "Z. Zhang, Y. Song, H. Qi. Age progression/regression by conditional adversarial "
        "autoencoder. IEEE CVPR 2017."
    ),
    url="https://susanqq.github.io/UTKFace/",
    layout="""\
--root is any folder holding the unpacked archives; images are found at any depth:

utkface/
  UTKFace/                                  aligned & cropped faces (23,708), the default set
    1_0_0_20161219140623097.jpg.chip.jpg
    39_1_20170116174525125.jpg.chip.jpg     (published without race: reported, not scored)
    ...
  crop_part1/                               optional: a part of the same chips (names seen
    ...                                     twice are counted once)
  part1/ part2/ part3/                      optional: in-the-wild photos
    1_0_0_20161219140623097.jpg             (scored with --option subset=photos|all)
  landmark_list_part1.txt ...               landmarks (not read)
""",
    labels="""\
No label file. Each name is [age]_[gender]_[race]_[datetime].jpg, plus .chip.jpg for chips:
  age       whole years, 0-116 -> age
  gender    0 male, 1 female -> attributes["gender"] = male | female
  race      0 White, 1 Black, 2 Asian, 3 Indian, 4 Others (Hispanic, Latino, Middle
            Eastern, ...) -> attributes["race"] = white | black | asian | indian | others
  datetime  yyyymmddHHMMSSFFF, when the image was collected (not used)
A name with a missing or out-of-range field is a problem, never a guessed record.
""",
    protocols={"all": "score every labelled image (UTKFace has no official split)"},
    splits=(),
    targets=("age",),
    crops=CHIPS,
    default_faces="none",
    loader=load,
    options={
        "subset": (
            "chips: the aligned *.jpg.chip.jpg crops; photos: the in-the-wild *.jpg photos; "
            "all: both; with photos or all, faces are detected (default chips)"
        ),
    },
    notes="Records are sorted by image path.",
    crops_for_options=ready_crop,
)
