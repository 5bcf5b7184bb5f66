"""sha256 of weight files, cached per (path, size, mtime) so repeated loads cost nothing."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from agebench.errors import IntegrityError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> str:
    """Raise IntegrityError unless ``path`` hashes to ``expected``; return the digest."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise IntegrityError(
            f"{path}: sha256 {actual} does not match the manifest's {expected.lower()}; "
            "the file is corrupt or not the model the manifest describes"
        )
    return actual
