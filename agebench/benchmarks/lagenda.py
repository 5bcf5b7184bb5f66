"""LAGENDA and any annotation CSV in MiVOLO's format (Kuprashevich & Tolstykh 2023).

MiVOLO's annotation files have one row per annotated person::

    img_name,age,gender,face_x0,face_y0,face_x1,face_y1,person_x0,person_y0,person_x1,person_y1

with ``-1`` for anything unknown (the person columns may be absent). ``age`` is a number or,
for the classification sets (Adience, FairFace), an inclusive range written ``low;high``;
``gender`` is ``M``/``F``. Boxes are pixel coordinates (x0, y0) - (x1, y1) in the photo.

Rows are read as MiVOLO's own reader does, except that nothing is dropped silently:

* a row with neither age nor gender (``-1, -1``) annotates a person for detection only; such
  rows are skipped and counted in one summary problem (LAGENDA has hundreds of thousands);
* a row with a gender but age ``-1`` is reported (``no age``) and skipped;
* the face box becomes ``Record.box``; a row with an age but no face box (all ``-1``) stays a
  record with ``box`` None, so the runner detects the face in the photo (MiVOLO itself would
  fall back to the person box);
* the person box is kept as ``attributes['person_box']`` (``x0,y0,x1,y1``).

One photo holds several labelled persons, so ``Record.image`` repeats: a record is identified by
its ``source`` (file and line) together with its box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agebench.benchmarks.common import RowError, number, read_table, resolve_images
from agebench.benchmarks.csv_generic import (
    AGE_RANGE,
    image_path,
    images_base,
    label_name,
    parse_box,
    read_header,
    resolve_labels,
)
from agebench.benchmarks.spec import (
    BenchmarkData,
    BenchmarkSpec,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
)

COLUMNS = ("img_name", "age", "gender", "face_x0", "face_y0", "face_x1", "face_y1")
FACE = ("face_x0", "face_y0", "face_x1", "face_y1")
PERSON = ("person_x0", "person_y0", "person_x1", "person_y1")
GENDERS = {"m": "male", "f": "female", "male": "male", "female": "female"}
UNKNOWN = ("-1", "-1.0", "")


def load_lagenda(options: LoadOptions) -> BenchmarkData:
    return _load(options, "lagenda_annotation.csv", "LAGENDA labels (lagenda_annotation.csv)")


def load_mivolo_csv(options: LoadOptions) -> BenchmarkData:
    return _load(options, None, "a MiVOLO-format annotation CSV")


def _load(options: LoadOptions, default: str | None, what: str) -> BenchmarkData:
    root = options.root
    path = resolve_labels(options, default, what)
    name = label_name(path, root)
    base = images_base(options)
    header = read_header(path)
    with_persons = all(column in header for column in PERSON)
    rows, problems = read_table(path, required=COLUMNS, root=root)

    records: list[Record] = []
    unlabelled = 0
    for line, row in rows:
        age_text, gender_text = row["age"].strip(), row["gender"].strip()
        if age_text in UNKNOWN and gender_text in UNKNOWN:
            unlabelled += 1
            continue
        try:
            image = image_path(row["img_name"], base, root)
            if age_text in UNKNOWN:
                raise RowError(f"no age (age is {age_text or 'empty'}, gender {gender_text})")
            age, group = _age(age_text)
        except RowError as error:
            problems.append(LabelProblem(name, line, str(error)))
            continue
        attributes: dict[str, str] = {}
        if gender_text not in UNKNOWN:
            if gender_text.lower() in GENDERS:
                attributes["gender"] = GENDERS[gender_text.lower()]
            else:
                problems.append(
                    LabelProblem(name, line, f"gender {gender_text!r} is not M, F or -1; ignored")
                )
        try:
            box = _box(row, FACE, "face")
        except RowError as error:
            problems.append(LabelProblem(name, line, f"{error}; record kept without a box"))
            box = None
        if with_persons:
            try:
                person = _box(row, PERSON, "person")
            except RowError as error:
                problems.append(LabelProblem(name, line, f"{error}; person box ignored"))
                person = None
            if person is not None:
                attributes["person_box"] = ",".join(f"{value:g}" for value in person)
        records.append(
            Record(
                image=image,
                age=age,
                source=f"{name}:{line}",
                age_group=group,
                box=box,
                attributes=attributes,
            )
        )
    problems.sort(key=lambda problem: problem.line or 0)  # file order
    if unlabelled:
        problems.append(
            LabelProblem(
                name,
                None,
                f"skipped {unlabelled} row(s) with neither age nor gender (-1, -1): persons "
                "annotated for detection only",
            )
        )
    records, missing = resolve_images(records, root)
    problems += missing
    return BenchmarkData(records, problems, [path])


def _age(text: str) -> tuple[float | None, tuple[float, float] | None]:
    """A number, or an inclusive range ``low;high`` (MiVOLO's Adience/FairFace classes)."""
    low, high = AGE_RANGE
    if ";" in text:
        first, _, second = text.partition(";")
        group = (number(first, "age", low=low, high=high), number(second, "age", low=low))
        if group[1] < group[0]:
            raise RowError(f"age range {text!r} ends before it starts")
        return None, group
    return number(text, "age", low=low, high=high), None


def _box(
    row: Mapping[str, str], columns: Sequence[str], what: str
) -> tuple[float, float, float, float] | None:
    values = [row[column].strip() for column in columns]
    if all(value in UNKNOWN for value in values):
        return None
    if any(value in UNKNOWN for value in values):
        raise RowError(f"{what} box ({', '.join(values)}) is partly unknown")
    return parse_box(values, columns)


_LAYOUT_COMMON = """\
img_name is relative to the root, or to --option images=DIR (a folder under the root).
"""

_LABELS = """\
{file} (comma-separated, header row), one row per annotated person:
  img_name        image path (see layout)
  age             age in years, a range low;high (e.g. 0;2), or -1 (unknown)
  gender          M, F or -1 -> attributes['gender'] male/female
  face_x0 face_y0 face_x1 face_y1
                  face box in photo pixels, all -1 if none -> box
  person_x0 person_y0 person_x1 person_y1
                  person box (optional columns), all -1 if none -> attributes['person_box']
Rows with neither age nor gender are skipped and counted once; rows with a gender but no age are
reported one by one.
"""

_CITATION = (
    "M. Kuprashevich, I. Tolstykh. MiVOLO: Multi-input Transformer for Age and Gender "
    "Estimation. AIST 2023 (arXiv:2307.04616)."
)

_NOTES = (
    "Several labelled persons share one photo, so Record.image repeats; source (file:line) and "
    "box tell them apart. A record with an age but no face box has box None: with --faces box "
    "the runner must detect that face. A missing image stays a record (a failure) and is "
    "reported."
)

SPEC = BenchmarkSpec(
    name="lagenda",
    version="1",
    title="LAGENDA: in-the-wild age and gender benchmark (MiVOLO)",
    citation=_CITATION,
    url="https://wildchlamydia.github.io/lagenda/",
    layout="""\
--root is the folder MiVOLO's tools/download_lagenda.py fills (LAGENDA/):

LAGENDA/
  lagenda_annotation.csv     the labels (or another file: --labels FILE)
  lag_benchmark/             lagenda_benchmark_images.zip, unpacked here
    b5c8ef090f134ad5.jpg     img_name in the CSV is lag_benchmark/<name>
    ...
"""
    + _LAYOUT_COMMON,
    labels=_LABELS.format(file="lagenda_annotation.csv"),
    protocols={"all": "every labelled face in the annotation file (a test-only benchmark)"},
    splits=(),
    targets=("age",),
    crops=ReadyCrop("photo", description="in-the-wild photos, several people each"),
    default_faces="box",
    loader=load_lagenda,
    options={"images": "folder under the root img_name is relative to (default the root)"},
    notes=_NOTES,
)

MIVOLO_CSV_SPEC = BenchmarkSpec(
    name="mivolo-csv",
    version="1",
    title="Any annotation CSV in MiVOLO's format (IMDB-clean, UTKFace, AgeDB, CACD, ...)",
    citation=_CITATION,
    url="https://github.com/WildChlamydia/MiVOLO",
    layout="""\
--root is the images folder MiVOLO's eval_pretrained.py gets as --dataset_images; --labels
names the CSV (required), e.g. one of the files its tools/prepare_*.py write:

data/utk/
  images/                    --root data/utk/images
    ...
  annotation/
    utk_test.csv             --labels ../annotation/utk_test.csv (relative to the root,
                             or absolute); prepare_agedb.py/prepare_cacd.py write
                             annotations/<db>_<split>_annotations.csv
"""
    + _LAYOUT_COMMON,
    labels=_LABELS.format(file="--labels FILE"),
    protocols={"all": "every labelled face in the annotation file"},
    splits=(),
    targets=("age",),
    crops=ReadyCrop("photo", description="photos with given face boxes"),
    default_faces="box",
    loader=load_mivolo_csv,
    options={"images": "folder under the root img_name is relative to (default the root)"},
    notes=_NOTES,
)
