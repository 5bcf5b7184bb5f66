"""Each record's face crop, prepared once per dataset and model input, as eval prepares it.

Training reads every image once per epoch; decoding photos and detecting faces each time would
cost far more than the model. So the crops are cut once, by eval's own ``PredictStack`` (the
same faces mode, detector settings ``max_faces=1``, ready-crop plan and crop policy), and kept
as one memory-mapped uint8 array ``(N, H, W, 3)`` beside an index of the records (key, image,
age, subject, fold, status, content sha256), under
``AGEBENCH_HOME/cache/train-crops/<key>/``. The key digests the data fingerprint (labels,
images, folds: ``runner.fingerprint``), the faces mode, the detector settings, the crop policy
and the input size; anything else (normalisation, colour order) is applied on the tensors.

A cache is built in a temporary folder and renamed into place, so an interrupted build leaves
nothing that looks finished. Records without a crop (no face found, unreadable) keep their row,
zero pixels, and their status: listed, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agebench.benchmarks.spec import BenchmarkData, BenchmarkSpec, Record
from agebench.core.atomic import read_json, write_json_atomic
from agebench.core.config import ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.core.types import FacesMode
from agebench.models.catalog import agebench_home
from agebench.models.manifest import ModelSpec
from agebench.runner.config import DetectConfig
from agebench.runner.faces import Job, PreparedImage
from agebench.runner.fingerprint import data_fingerprint
from agebench.runner.partial import record_key
from agebench.runner.stack import PredictStack

SCHEMA = "agebench.train-crops/1"
CROPS_FILE = "crops.npy"
INDEX_FILE = "index.json"
#: images per call of the face preparer (its detector batches within a call)
_CHUNK = 16


@dataclass(frozen=True)
class CropSource:
    """What the crops are cut from and for: a benchmark's records and a model's input."""

    bench: BenchmarkSpec
    data: BenchmarkData
    root: Path
    spec: ModelSpec
    faces: FacesMode | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    min_face_size: int = 20

    @property
    def faces_mode(self) -> FacesMode:
        """eval's default when not given: the benchmark's, by its options."""
        return self.faces or self.bench.faces_for(self.options)

    def fingerprint(self) -> str:
        """The data's fingerprint (labels, images, folds), as runs record it."""
        return data_fingerprint(
            self.bench,
            self.data,
            self.root,
            {"faces": self.faces_mode, "options": dict(self.options)},
        )

    def key(self) -> str:
        """The cache folder's name: a digest of everything that decides the pixels."""
        decided = {
            "schema": SCHEMA,
            "data": self.fingerprint(),
            "faces": self.faces_mode,
            "detect": asdict(self._detect()),
            "crop": asdict(self.spec.crop),
            "size": [self.spec.input.height, self.spec.input.width],
        }
        return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:24]

    def _detect(self) -> DetectConfig:
        # eval's settings: one face per record, the largest or the one on the given box
        return DetectConfig(min_face_size=self.min_face_size, max_faces=1)


@dataclass
class CropCache:
    """A finished cache: ``crops[i]`` is record ``records[i]``'s face (zeros unless ``ok``)."""

    path: Path
    crops: np.ndarray
    records: list[dict[str, Any]]
    built: bool
    build_seconds: float

    @property
    def usable(self) -> np.ndarray:
        """Indices of the records that have a crop."""
        return np.array([i for i, r in enumerate(self.records) if r["status"] == "ok"], dtype=int)

    @property
    def missing(self) -> list[dict[str, Any]]:
        """The records without a crop, with their status and reason."""
        return [r for r in self.records if r["status"] != "ok"]

    @property
    def ages(self) -> np.ndarray:
        return np.array([np.nan if r["age"] is None else r["age"] for r in self.records])


def cache_root() -> Path:
    return agebench_home() / "cache" / "train-crops"


def crop_cache(
    source: CropSource, *, execution: ExecutionConfig | None = None, root: Path | None = None
) -> CropCache:
    """The crops of ``source``, from the cache when it holds them, else built once."""
    key = source.key()
    folder = (root or cache_root()) / key
    found = _open(folder, key)
    if found is not None:
        return found
    started = time.perf_counter()
    temporary = folder.parent / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir(parents=True)
        _build(source, temporary, key, execution or ExecutionConfig(device="cpu"), started)
        try:
            temporary.rename(folder)
        except OSError:  # another process finished the same cache first: theirs is as good
            if _open(folder, key) is None:
                raise
    except OSError as error:
        raise AgebenchError(f"{folder}: cannot write the crop cache: {error}") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    cache = _open(folder, key)
    assert cache is not None
    cache.built = True
    return cache


def _open(folder: Path, key: str) -> CropCache | None:
    index = read_json(folder / INDEX_FILE)
    if not isinstance(index, dict) or index.get("schema") != SCHEMA or index.get("key") != key:
        return None
    crops = np.load(folder / CROPS_FILE, mmap_mode="r")
    return CropCache(folder, crops, index["records"], False, float(index["build_seconds"]))


def _jobs(source: CropSource) -> Iterator[list[Job]]:
    records = source.data.records
    for start in range(0, len(records), _CHUNK):
        yield [
            # eval's jobs: the record's image and box; the content hashed as it is read
            Job(source.root / r.image, Path(r.image), box=r.box, key=i, hash_content=True)
            for i, r in enumerate(records[start : start + _CHUNK], start)
        ]


def _row(record: Record, item: PreparedImage) -> dict[str, Any]:
    status = item.status
    if status == "ok" and (item.crops is None or len(item.crops) == 0):
        status = "no_face"
    # as eval: lexists, so a dangling link or a loop is "failed" with the reason that says why
    if status == "failed" and not os.path.lexists(item.path):
        status = "missing"
    return {
        "key": record_key(record),
        "image": record.image,
        "age": record.age,
        "subject": record.subject,
        "fold": record.fold,
        "status": status,
        "error": item.error,
        "sha256": item.sha256,
    }


def _build(
    source: CropSource, folder: Path, key: str, execution: ExecutionConfig, started: float
) -> None:
    spec = source.spec
    stack = PredictStack.build(
        spec,
        source.faces_mode,
        execution,
        detect=source._detect(),
        ready_crop=source.bench.ready_crop(source.options),
        source=source.bench.name,
    )
    records = source.data.records
    shape = (len(records), spec.input.height, spec.input.width, 3)
    crops = np.lib.format.open_memmap(folder / CROPS_FILE, mode="w+", dtype=np.uint8, shape=shape)
    rows: list[dict[str, Any]] = [{}] * len(records)
    with ThreadPoolExecutor(max_workers=stack.workers) as pool:
        for items in pool.map(stack.preparer.prepare_many, _jobs(source)):
            for item in items:
                rows[item.key] = _row(records[item.key], item)
                if rows[item.key]["status"] == "ok":
                    assert item.crops is not None
                    crops[item.key] = item.crops[0]
    crops.flush()
    del crops
    index = {
        "schema": SCHEMA,
        "key": key,
        "benchmark": {"name": source.bench.name, "version": source.bench.version},
        "root": str(source.root.resolve()),
        "faces": source.faces_mode,
        "model": spec.name,
        "crop": asdict(spec.crop),
        "size": [spec.input.height, spec.input.width],
        "crop_plan": stack.crop_plan,
        "build_seconds": round(time.perf_counter() - started, 3),
        "records": rows,
    }
    write_json_atomic(folder / INDEX_FILE, index, durable=True)
