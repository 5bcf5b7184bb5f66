"""What decides whether two eval runs saw the same data, computed before any image is read,
so that a rerun is recognised before any work starts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agebench.benchmarks.spec import BenchmarkData, BenchmarkSpec
from agebench.core.fileread import MAX_LABEL_FILE_BYTES, ImageDecodeError, read_image_bytes
from agebench.runner.partial import record_key


def label_file_sha256(path: Path) -> str | None:
    """A label file's sha256 (read within the label-file size bound); None when unreadable."""
    try:
        return hashlib.sha256(read_image_bytes(path, max_bytes=MAX_LABEL_FILE_BYTES)).hexdigest()
    except ImageDecodeError:
        return None


def data_fingerprint(
    spec: BenchmarkSpec, data: BenchmarkData, root: Path, key: Mapping[str, Any]
) -> str:
    """What decides whether two runs saw the same data: label file contents, each record's
    image, labels and fold, and each image's size. Cheap (no image is read) so that a rerun
    can be recognised before any work starts; content hashes are recorded during the run."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps({"bench": spec.name, "version": spec.version, **key}, sort_keys=True).encode()
    )
    for label in sorted(data.label_files):
        digest.update(
            str(label.relative_to(root) if label.is_relative_to(root) else label).encode()
        )
        digest.update((label_file_sha256(label) or "missing").encode())
    for record in data.records:
        path = root / record.image
        size = path.stat().st_size if path.is_file() else -1
        digest.update(
            json.dumps(
                [
                    record_key(record),
                    record.age,
                    dict(record.targets),
                    record.age_std,
                    record.age_group,
                    record.fold,
                    record.box,
                    size,
                ]
            ).encode()
        )
    return digest.hexdigest()
