"""MORPH Album 2 with the split CSVs the CORAL/CORN repositories ship (``morph2_<split>.csv``).

Raschka et al.'s coral-cnn publishes ``morph2_train.csv``, ``morph2_valid.csv`` and
``morph2_test.csv`` (header ``,id_num,picture_num,race,Male,facial_hair,age,glasses,quality``):
the unnamed first column is the image name in ``morph2-aligned/`` and **``age`` is the class
label, the real age minus 16** (MORPH's youngest age), so ``273546_01M22.jpg`` (22 years old,
as its name says) has ``age`` 6. Other repositories write the real age. MORPH image names carry
the age themselves (``<id>_<picture><M|F><age>.jpg``), so ``--option age_offset=auto`` (the
default) compares the two and adds 16 when the file names say the column is shifted by 16,
nothing otherwise; a row whose name disagrees with its corrected age is reported and keeps the
column's age. The CORAL "start label 16" is a property of CORAL models, not of the benchmark:
records always carry the real age.

Columns are found by name, ignoring case, among known aliases (path: the unnamed first column,
file, path, img_name, image, filename; age: age; subject: id, id_num, subject), or named with
``--option path_column=``/``age_column=``/``id_column=`` (or ``--column path=``...). The path
column is relative to the folder given by ``--option images=DIR`` or, by default, to whichever
of the root, ``morph2-aligned/``, ``Images_Aligned/`` or ``morph2-aligned-nose/jpg/`` holds the
first rows' images.

Paplham et al.'s subject-exclusive MORPH folds (the unified benchmark's ``MORPH.json``) are read
by the ``facebase`` benchmark, not here.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agebench.benchmarks.common import RowError, number, read_table, resolve_images
from agebench.benchmarks.csv_generic import (
    find_column,
    image_path,
    images_base,
    label_name,
    read_header,
    resolve_labels,
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

#: MORPH image names: subject id, picture number, sex, age (e.g. 273546_01M22.jpg)
MORPH_NAME = re.compile(r"^(?P<id>\d+)_(?P<picture>\d+)(?P<sex>[MF])(?P<age>\d+)\.", re.I)
PATH_ALIASES = ("file", "path", "img_name", "image", "filename", "photo")
AGE_ALIASES = ("age",)
ID_ALIASES = ("id", "id_num", "subject")
GENDER_ALIASES = ("gender", "sex")
#: where the images usually lie, relative to the root; the first rows decide
IMAGE_FOLDERS = ("", "morph2-aligned", "Images_Aligned", "morph2-aligned-nose/jpg")
CORAL_OFFSET = 16
_SAMPLE = 50


@dataclass
class _Row:
    line: int
    image: str
    column_age: float
    name_age: int | None
    row: Mapping[str, str]


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    split = options.split or SPEC.splits[0]
    path = resolve_labels(options, f"morph2_{split}.csv", f"MORPH {split} split CSV")
    name = label_name(path, root)
    header = read_header(path)
    path_column = _column(options, header, "path", PATH_ALIASES, path)
    age_column = _column(options, header, "age", AGE_ALIASES, path)
    assert path_column is not None and age_column is not None  # required: raised otherwise
    id_column = _column(options, header, "subject", ID_ALIASES, path, required=False)
    offset_option = _offset_option(options)
    required = [c for c in (path_column, age_column, id_column) if c is not None]
    rows, problems = read_table(path, required=required, root=root)

    parsed: list[_Row] = []
    for line, row in rows:
        try:
            value = row[path_column].strip().replace("\\", "/")
            image_path(value, "", root)  # empty or escaping paths fail here, base aside
            column_age = number(row[age_column], age_column)
        except RowError as error:
            problems.append(LabelProblem(name, line, str(error)))
            continue
        match = MORPH_NAME.match(value.rsplit("/", 1)[-1])
        parsed.append(_Row(line, value, column_age, int(match["age"]) if match else None, row))

    offset = _offset(parsed) if offset_option is None else offset_option
    base = images_base(options) if "images" in options.options else _guess_base(parsed, options)
    gender_column = find_column(header, GENDER_ALIASES)
    male_column = find_column(header, ("male",))
    race_column = find_column(header, ("race",))

    records: list[Record] = []
    first_line: dict[str, int] = {}
    for item in parsed:
        age = item.column_age + offset
        if age < 0:
            problems.append(
                LabelProblem(name, item.line, f"{age_column} {item.column_age:g} + {offset:g} < 0")
            )
            continue
        image = image_path(item.image, base, root)
        if image in first_line:
            problems.append(
                LabelProblem(name, item.line, f"{image} repeats line {first_line[image]}; ignored")
            )
            continue
        first_line[image] = item.line
        if item.name_age is not None and item.name_age != age:
            problems.append(
                LabelProblem(
                    name,
                    item.line,
                    f"{age_column} {item.column_age:g} + offset {offset:g} = {age:g}, but the "
                    f"file name says {item.name_age}; kept {age:g}",
                )
            )
        match = MORPH_NAME.match(item.image.rsplit("/", 1)[-1])
        attributes: dict[str, str] = {}
        gender = _gender(item.row, gender_column, male_column, match)
        if gender:
            attributes["gender"] = gender
        if race_column and item.row[race_column]:
            attributes["race"] = item.row[race_column]
        records.append(
            Record(
                image=image,
                age=age,
                source=f"{name}:{item.line}",
                subject=_subject(item.row, id_column, match),
                split=split,
                attributes=attributes,
            )
        )
    problems.sort(key=lambda problem: problem.line or 0)  # file order
    records, missing = resolve_images(records, root)
    problems += missing
    return BenchmarkData(records, problems, [path])


def _column(
    options: LoadOptions,
    header: Sequence[str],
    role: str,
    aliases: Sequence[str],
    path: Path,
    *,
    required: bool = True,
) -> str | None:
    option = {"path": "path_column", "age": "age_column", "subject": "id_column"}[role]
    named = options.options.get(option, options.columns.get(role))
    if named is not None:
        found = find_column(header, [str(named).strip()])
        if found is None:
            raise BenchmarkError(
                f"{path}: missing column {named} (--option {option}); found {', '.join(header)}"
            )
        return found
    found = find_column(header, aliases)
    if found is None and role == "path" and header and header[0] == "":
        return ""  # the unnamed index column of a pandas-written CSV (coral-cnn)
    if found is None and required:
        raise BenchmarkError(
            f"{path}: no {role} column (looked for {', '.join(aliases)}; name it with "
            f"--option {option}); found {', '.join(h or '(unnamed)' for h in header)}"
        )
    return found


def _offset_option(options: LoadOptions) -> float | None:
    value = str(options.options.get("age_offset", "auto")).strip().lower()
    if value == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise BenchmarkError(
            f"--option age_offset={value}: expected auto or a number such as 16"
        ) from None


def _offset(rows: Sequence[_Row]) -> float:
    """16 when the file names say the age column is the CORAL label (age - 16), else 0."""
    differences = Counter(row.name_age - row.column_age for row in rows if row.name_age is not None)
    if differences and differences.most_common(1)[0][0] == CORAL_OFFSET:
        return float(CORAL_OFFSET)
    return 0.0


def _guess_base(rows: Sequence[_Row], options: LoadOptions) -> str:
    sample = rows[:_SAMPLE]
    best, best_hits = "", 0
    for folder in IMAGE_FOLDERS:
        hits = sum((options.root / folder / row.image).is_file() for row in sample)
        if hits > best_hits:
            best, best_hits = folder, hits
    return best


def _gender(
    row: Mapping[str, str],
    gender_column: str | None,
    male_column: str | None,
    match: re.Match[str] | None,
) -> str | None:
    if gender_column:
        value = row[gender_column].strip().lower()
        if value in ("m", "male"):
            return "male"
        if value in ("f", "female"):
            return "female"
    if male_column:  # coral-cnn: Male is 1 for men, -1 for women
        value = row[male_column].strip()
        if value in ("1", "1.0"):
            return "male"
        if value in ("-1", "-1.0", "0"):
            return "female"
    if match:
        return "male" if match["sex"].upper() == "M" else "female"
    return None


def _subject(
    row: Mapping[str, str], id_column: str | None, match: re.Match[str] | None
) -> str | None:
    value = row[id_column].strip() if id_column else ""
    if not value and match:
        value = match["id"]
    if not value:
        return None
    return str(int(value)) if value.isdigit() else value


SPEC = BenchmarkSpec(
    name="morph",
    version="1",
    title="MORPH Album 2 (academic), with the coral-cnn split CSVs",
    citation=(
        "K. Ricanek Jr., T. Tesafaye. MORPH: a longitudinal image database of normal adult "
        "age-progression. IEEE FGR 2006. Splits: W. Cao, V. Mirjalili, S. Raschka. Rank "
        "consistent ordinal regression for neural networks with application to age estimation. "
        "Pattern Recognition Letters 140, 2020 (CORAL); X. Shi, W. Cao, S. Raschka. Deep neural "
        "networks for rank-consistent ordinal regression based on conditional probabilities. "
        "Pattern Analysis and Applications 26, 2023 (CORN)."
    ),
    url="https://github.com/Raschka-research-group/coral-cnn",
    layout="""\
--root holds the split CSVs (coral-cnn ships them in datasets/) and the aligned images:

root/
  morph2_train.csv          one CSV per split; only the one you score is needed
  morph2_valid.csv
  morph2_test.csv           (the default split)
  morph2-aligned/           the images the path column names, e.g. 273546_01M22.jpg
    273546_01M22.jpg        (also found directly under the root, in Images_Aligned/ or in
    ...                      morph2-aligned-nose/jpg/; or say where: --option images=DIR)

--labels FILE scores any other CSV of the same kind (relative to the root, or absolute).
""",
    labels="""\
morph2_<split>.csv (comma-separated, header row), columns found by name ignoring case:
  (unnamed) | file | path | img_name | image | filename
                image name, relative to the image folder (required)
  age           age in years, or the CORAL label age-16 (coral-cnn CSVs); see age_offset
  id_num | id | subject
                subject id (optional; else the number before '_' in the file name)
  gender | sex (M/F), or Male (1/-1, coral-cnn)
                -> attributes['gender'] male/female (else the M/F in the file name)
  race          -> attributes['race'] verbatim (B, W, H, A, I, O)
Other columns (picture_num, facial_hair, glasses, quality) are not read.
""",
    protocols={"split": "score every row of one split CSV"},
    splits=("test", "valid", "train"),
    targets=("age",),
    crops=ReadyCrop(
        kind="tight",
        aligned=True,
        description=(
            "coral-cnn morph2-aligned: each MORPH photo warped onto the dataset's mean "
            "landmarks (mlxtend EyepadAlign), 200x240, nose centred; CORAL models then "
            "centre-crop (140x140, or resize 128 and crop 120). For other models use "
            "--faces detect"
        ),
    ),
    default_faces="none",
    loader=load,
    options={
        "age_offset": (
            "added to the age column: auto (16 if the file names show the coral-cnn label "
            "age-16, else 0) or a number (default auto)"
        ),
        "images": "folder under the root the path column is relative to (default: guessed)",
        "path_column": "name of the image-path column (default: found among the aliases)",
        "age_column": "name of the age column (default: age)",
        "id_column": "name of the subject-id column (default: id_num, id or subject if present)",
    },
    notes=(
        "Paplham et al.'s subject-exclusive MORPH folds (MORPH.json of the unified benchmark) "
        "are scored with the facebase benchmark. CORAL's start label 16 belongs to the models: "
        "records always carry the real age. A repeated image is reported and its later rows "
        "ignored; a missing image stays a record (a failure) and is reported."
    ),
)
