"""IMDB-WIKI (Rothe, Timofte & Van Gool, DEX): celebrity photos labelled from dates.

Each database ships one Matlab file, ``imdb.mat`` or ``wiki.mat``, holding a struct of that name
whose fields are 1xN arrays: ``full_path`` (cell of paths such as
``01/nm0000001_rm124825600_1899-5-10_1968.jpg``), ``dob`` (Matlab serial date number),
``photo_taken`` (year), ``gender`` (0 female, 1 male, NaN unknown), ``name``,
``face_location`` (x1 y1 x2 y2, 1-based), ``face_score`` (-Inf: no face found, the location is
then the whole image) and ``second_face_score`` (NaN: no second face), plus ``celeb_names`` and
``celeb_id`` for IMDB. The authors' age rule, assuming every photo was taken on 1 July::

    [age,~] = datevec(datenum(photo_taken, 7, 1) - dob);

i.e. the day difference is read as a Matlab date number and its *year* is the age. This module
computes exactly that (Matlab's proleptic calendar has a year 0; datenum 1 is 0000-01-01).

No official split exists: every entry passing the usual filters is a record. The filters
(``--option``): ``min_face_score`` (1.0; ``-inf`` scores always fail), ``allow_second_face``
(false: ``second_face_score`` must be NaN), ``require_gender`` (true) and ``min_age``/
``max_age`` (0..100). A filtered entry is not an error: each filter adds one problem with
``line`` None whose reason starts with ``filtered:`` and counts the entries it removed (an entry
counts under the first filter it fails, in the order above). Malformed entries (a date of
birth that is no date, a year that is not a number, an empty path) are reported one by one as
``<mat>#<0-based index>``.

Images: the ``*_crop`` downloads (``imdb_crop/``, ``wiki_crop/``, the default variant) are the
faces cut out with a 40% margin (DEX), used as they are (``--faces none``). The authors document
``face_location`` as the face in the original photo; that the copy shipped inside the crop
downloads is in crop coordinates could not be confirmed, so crop records get no box.
``--option variant=full`` reads the original photos (``imdb/`` from the imdb_0..9 and imdb_meta
downloads, ``wiki/`` from wiki.tar.gz) and gives each record its face box (``face_location`` made
0-based: x1-1, y1-1, x2, y2; none when face_score is -Inf); run it with ``--faces box``.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from agebench.benchmarks.common import (
    RowError,
    option_choice,
    read_label_bytes,
    resolve_images,
)
from agebench.benchmarks.csv_generic import label_name, resolve_labels
from agebench.benchmarks.spec import (
    BenchmarkData,
    BenchmarkError,
    BenchmarkSpec,
    LabelProblem,
    LoadOptions,
    ReadyCrop,
    Record,
)

DATABASES = ("imdb", "wiki")
VARIANTS = ("crop", "full")
FIELDS = ("dob", "photo_taken", "full_path", "gender", "face_score", "second_face_score")
#: Matlab datenum of 0001-01-01; Python's ordinal 1 is the same day
MATLAB_ORDINAL_OFFSET = 366
#: days in 400 Gregorian years: the calendar repeats, which reaches Matlab's years 0 and below
DAYS_PER_400_YEARS = 146097
FILTERS = ("face_score", "second_face", "gender", "age")


def matlab_year(serial: float) -> int:
    """The year of a Matlab serial date number, as ``datevec`` gives it (year 0 exists)."""
    day = math.floor(serial)
    cycles = 0
    if day <= MATLAB_ORDINAL_OFFSET:
        cycles = (MATLAB_ORDINAL_OFFSET - day) // DAYS_PER_400_YEARS + 1
    return date.fromordinal(day + cycles * DAYS_PER_400_YEARS - MATLAB_ORDINAL_OFFSET).year - (
        400 * cycles
    )


def matlab_date(serial: float) -> date:
    """A Matlab date number as a date (year 1 or later; else ValueError)."""
    return date.fromordinal(math.floor(serial) - MATLAB_ORDINAL_OFFSET)


def datenum(year: int, month: int, day: int) -> int:
    """Matlab's ``datenum(year, month, day)`` for years 1 and later."""
    return date(year, month, day).toordinal() + MATLAB_ORDINAL_OFFSET


def dex_age(photo_taken: float, dob: float) -> int:
    """``[age,~] = datevec(datenum(photo_taken, 7, 1) - dob)``, the IMDB-WIKI authors' rule."""
    return matlab_year(datenum(int(photo_taken), 7, 1) - dob)


def load(options: LoadOptions) -> BenchmarkData:
    root = options.root
    variant = option_choice(options, "variant", VARIANTS)
    filters = _filters(options)
    path, db = _mat_path(options, variant)
    name = label_name(path, root)
    meta = _read_mat(path, db)
    folder = path.parent
    try:
        base = folder.relative_to(root).as_posix()
    except ValueError:
        base = ""
    base = "" if base == "." else base
    full = variant == "full"

    records: list[Record] = []
    problems: list[LabelProblem] = []
    filtered: Counter[str] = Counter()
    for index in range(len(meta["full_path"])):
        where = f"{name}#{index}"
        try:
            entry = _entry(meta, index)
        except RowError as error:
            problems.append(LabelProblem(where, None, str(error)))
            continue
        reason = _filter(entry, filters)
        if reason:
            filtered[reason] += 1
            continue
        image = f"{base}/{entry['path']}" if base else entry["path"]
        attributes = {
            "dob": entry["dob"].isoformat(),
            "photo_taken": str(entry["photo_taken"]),
            "face_score": f"{entry['face_score']:g}",
        }
        if not math.isnan(entry["gender"]):
            attributes["gender"] = "male" if entry["gender"] == 1 else "female"
        if entry["name"]:
            attributes["name"] = entry["name"]
        records.append(
            Record(
                image=image,
                age=float(entry["age"]),
                source=where,
                subject=entry["path"].rsplit("/", 1)[-1].split("_", 1)[0] or None,
                box=entry["box"] if full else None,
                attributes=attributes,
            )
        )
    messages = {
        "face_score": f"face_score below {filters['min_face_score']:g} (min_face_score)",
        "second_face": "a second face detected (allow_second_face=false)",
        "gender": "no gender (require_gender=true)",
        "age": f"age outside {filters['min_age']:g}..{filters['max_age']:g} (min_age, max_age)",
    }
    total = len(meta["full_path"])
    problems += [
        LabelProblem(name, None, f"filtered: {filtered[key]} of {total} entries: {messages[key]}")
        for key in FILTERS
        if filtered[key]
    ]
    records, missing = resolve_images(records, root)
    problems += missing
    return BenchmarkData(records, problems, [path])


def _filters(options: LoadOptions) -> dict[str, Any]:
    def number_option(key: str, default: float) -> float:
        value = options.options.get(key, default)
        try:
            result = float(value)
        except (TypeError, ValueError):
            raise BenchmarkError(f"--option {key}={value}: expected a number") from None
        if math.isnan(result):
            raise BenchmarkError(f"--option {key}={value}: expected a number")
        return result

    def flag_option(key: str, default: bool) -> bool:
        value = str(options.options.get(key, default)).strip().lower()
        if value in ("true", "1", "yes", "on"):
            return True
        if value in ("false", "0", "no", "off"):
            return False
        raise BenchmarkError(f"--option {key}={value}: expected true or false")

    return {
        "min_face_score": number_option("min_face_score", 1.0),
        "allow_second_face": flag_option("allow_second_face", False),
        "require_gender": flag_option("require_gender", True),
        "min_age": number_option("min_age", 0.0),
        "max_age": number_option("max_age", 100.0),
    }


def _mat_path(options: LoadOptions, variant: str) -> tuple[Path, str]:
    root = options.root
    db = options.options.get("db")
    if db is not None and str(db).strip().lower() not in DATABASES:
        raise BenchmarkError(f"--option db={db}: expected imdb or wiki")
    if options.labels is not None:
        path = resolve_labels(options, None, "IMDB-WIKI .mat file")
        return path, str(db).strip().lower() if db else ""
    folder = "{db}_crop" if variant == "crop" else "{db}"
    candidates = [str(db).strip().lower()] if db else list(DATABASES)
    found = [
        (root / folder.format(db=name) / f"{name}.mat", name)
        for name in candidates
        if (root / folder.format(db=name) / f"{name}.mat").is_file()
    ]
    if not found:
        expected = " or ".join(f"{folder.format(db=name)}/{name}.mat" for name in candidates)
        hint = ""
        originals = [name for name in candidates if (root / name / f"{name}.mat").is_file()]
        if variant == "crop" and originals:
            hint = "; the original photos are here: use --option variant=full"
        raise BenchmarkError(f"{root}: IMDB-WIKI metadata not found (expected {expected}){hint}")
    databases = sorted({name for _, name in found})
    if len(databases) > 1:
        raise BenchmarkError(
            f"{root}: both IMDB and WIKI are here; choose one with --option db=imdb or db=wiki"
        )
    return found[0]


def _read_mat(path: Path, db: str) -> dict[str, np.ndarray]:
    from scipy.io import loadmat  # scipy is slow to import; only this loader needs it

    data = read_label_bytes(path, "Matlab metadata file")
    try:
        mat = loadmat(io.BytesIO(data))
    except Exception as error:  # scipy raises ValueError, TypeError, OSError... for bad files
        raise BenchmarkError(f"{path}: not a readable Matlab file: {error}") from None
    keys = [db] if db else [key for key in DATABASES if key in mat]
    if not keys or keys[0] not in mat:
        raise BenchmarkError(
            f"{path}: no '{db or ' or '.join(DATABASES)}' struct in the file; found "
            f"{', '.join(key for key in mat if not key.startswith('__'))}"
        )
    struct = mat[keys[0]]
    try:
        record = struct[0, 0]
        names = record.dtype.names or ()
    except (IndexError, TypeError, AttributeError):
        raise BenchmarkError(f"{path}: '{keys[0]}' is not a Matlab struct") from None
    missing = [field for field in FIELDS if field not in names]
    if missing:
        raise BenchmarkError(
            f"{path}: missing field(s) {', '.join(missing)}; found {', '.join(names)}"
        )
    meta = {field: np.asarray(record[field]).ravel() for field in names}
    lengths = {field: len(meta[field]) for field in FIELDS}
    if len(set(lengths.values())) != 1:
        sizes = ", ".join(f"{field} {size}" for field, size in lengths.items())
        raise BenchmarkError(f"{path}: fields differ in length ({sizes})")
    return meta


def _cell_text(value: Any) -> str:
    array = np.asarray(value).ravel()
    if array.size == 0:
        return ""
    return str(array[0]).strip()


def _entry(meta: dict[str, np.ndarray], index: int) -> dict[str, Any]:
    path = _cell_text(meta["full_path"][index]).replace("\\", "/")
    if not path:
        raise RowError("full_path is empty")
    dob = float(meta["dob"][index])
    photo_taken = float(meta["photo_taken"][index])
    if not math.isfinite(dob) or dob < 1:
        raise RowError(f"dob {dob:g} is not a Matlab date number")
    if not math.isfinite(photo_taken) or photo_taken < 1 or photo_taken != int(photo_taken):
        raise RowError(f"photo_taken {photo_taken:g} is not a year")
    try:
        born = matlab_date(dob)
    except ValueError:
        born = None
    if born is None:
        raise RowError(f"dob {dob:g} is before year 1")
    box = None
    if "face_location" in meta:
        location = np.asarray(meta["face_location"][index], dtype=float).ravel()
        face_score = float(meta["face_score"][index])
        if location.size == 4 and np.isfinite(location).all() and math.isfinite(face_score):
            x1, y1, x2, y2 = (float(v) for v in location)
            if x2 > x1 and y2 > y1:
                box = (x1 - 1, y1 - 1, x2, y2)
    names = meta.get("name")
    return {
        "path": path,
        "dob": born,
        "photo_taken": int(photo_taken),
        "age": dex_age(photo_taken, dob),
        "gender": float(meta["gender"][index]),
        "face_score": float(meta["face_score"][index]),
        "second_face_score": float(meta["second_face_score"][index]),
        "name": _cell_text(names[index]) if names is not None and index < len(names) else "",
        "box": box,
    }


def _filter(entry: dict[str, Any], filters: dict[str, Any]) -> str:
    """The first filter the entry fails, or ''."""
    score = entry["face_score"]
    if not math.isfinite(score) or score < filters["min_face_score"]:
        return "face_score"
    if not filters["allow_second_face"] and not math.isnan(entry["second_face_score"]):
        return "second_face"
    if filters["require_gender"] and math.isnan(entry["gender"]):
        return "gender"
    if not filters["min_age"] <= entry["age"] <= filters["max_age"]:
        return "age"
    return ""


def ready_crop(options: Mapping[str, Any]) -> ReadyCrop:
    """The crops by default; the original photos with ``variant=full``."""
    if str(options.get("variant", "crop")).strip().lower() == "full":
        return ReadyCrop("photo", description="original photos; face_location gives the box")
    return SPEC.crops


SPEC = BenchmarkSpec(
    name="imdb-wiki",
    version="1",
    title="IMDB-WIKI: 500k+ celebrity faces with age and gender (DEX)",
    citation=(
        "R. Rothe, R. Timofte, L. Van Gool. DEX: Deep EXpectation of apparent age from a single "
        "image. ICCV Workshops 2015; Deep expectation of real and apparent age from a single "
        "image without facial landmarks. IJCV 126, 2018."
    ),
    url="https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/",
    layout="""\
--root holds one or both downloads, unpacked as they come (pick one with --option db= when
both are present):

root/
  wiki_crop/                 wiki_crop.tar (faces only, the default variant)
    wiki.mat
    00/ ... 99/              face crops, e.g. 17/10000217_1981-05-05_2009.jpg
  imdb_crop/                 imdb_crop.tar
    imdb.mat
    00/ ... 99/
  wiki/                      optional: wiki.tar.gz, the original photos (--option variant=full)
    wiki.mat
    00/ ... 99/
  imdb/                      optional: imdb_0..9.tar and imdb_meta.tar (variant=full)
    imdb.mat
    00/ ... 99/

--labels FILE reads another .mat (images relative to its folder).
""",
    labels="""\
<db>.mat (Matlab struct <db> with 1xN fields):
  full_path            image path relative to the .mat's folder -> image
  dob                  date of birth, Matlab date number -> attributes['dob'] (ISO)
  photo_taken          year of the photo -> attributes['photo_taken']
                       age = year of datevec(datenum(photo_taken,7,1) - dob) (authors' rule)
  gender               0 female, 1 male, NaN unknown -> attributes['gender']
  name                 celebrity name -> attributes['name']
  face_location        x1 y1 x2 y2 in the ORIGINAL photo, 1-based -> box (variant=full only)
  face_score           detector score, -Inf for no face -> attributes['face_score']
  second_face_score    NaN when no second face
  celeb_names, celeb_id (IMDB only; not read)
subject: the person id that starts the file name (nm0000001 for IMDB, 10000217 for WIKI).
Source of each record: <mat>#<0-based index>.
""",
    protocols={"filtered": "every entry passing the filters (no official split exists)"},
    splits=(),
    targets=("age",),
    crops=ReadyCrop(
        "margin",
        margin=0.4,
        description="<db>_crop images: the detected face grown by 40% on each side (DEX)",
    ),
    default_faces="none",
    loader=load,
    options={
        "db": "imdb or wiki (default: the one present; both present is an error)",
        "variant": (
            "crop: the <db>_crop face crops; full: the original photos with face boxes, to run "
            "with --faces box (default crop)"
        ),
        "min_face_score": "drop entries whose face_score is below this (default 1.0)",
        "allow_second_face": "keep photos where a second face was detected (default false)",
        "require_gender": "drop entries without a gender (default true)",
        "min_age": "drop ages below this (default 0)",
        "max_age": "drop ages above this (default 100)",
    },
    notes=(
        "Filtered entries are counted, one 'filtered: N entries ...' problem per filter (line "
        "None); they are not errors. Ages come from dates and are noisy (film stills, wrong "
        "dates): IMDB-WIKI is a training set first. A missing image stays a record (a failure) "
        "and is reported."
    ),
    crops_for_options=ready_crop,
)
