"""Read an image file's bytes safely: only regular files, never a blocking open, never unbounded.

Every path that reads image bytes (decoding, eval's content hash, the device path's JPEG bytes)
goes through :func:`read_image_bytes`, because a folder or a label file can name anything: a
FIFO (``open()`` blocks until a writer appears, i.e. forever), a symlink to ``/dev/zero``
(``read()`` never ends and eats memory until ``MemoryError``), a symlink loop or a dangling
link. The rule is *stat before open*: ``os.stat`` must say "regular file" before the file is
opened at all, the open itself is ``O_NONBLOCK`` (a FIFO swapped in between the two calls
cannot block us), the open handle is ``fstat``-ed again, and no more than ``max_bytes`` (plus one
byte, to notice growth) is ever read. Each refusal is one short reason for the image's record.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from agebench.core.errors import AgebenchError

#: what counts as an image file in a folder (any case): what folders are walked for and what
#: label files are checked against
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
#: the largest image file read by default: far above any real photo (a 200-megapixel JPEG is
#: 20-60 MB, an uncompressed 100-megapixel PNG about 300 MB is not a photo), far below RAM
DEFAULT_MAX_FILE_BYTES = 256 * 2**20
#: the largest label file read: IMDB-WIKI's imdb.mat (460,723 faces) is about 70 MB
MAX_LABEL_FILE_BYTES = 1 << 30


class ImageDecodeError(AgebenchError):
    """An image that cannot be used, with the file and the cause on one printable line.

    ``args`` is ``(path, reason)`` so that the error pickles across worker processes.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        reason = " ".join(str(reason).split())
        super().__init__(path, reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


def read_image_bytes(path: Path | str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The whole content of the regular file ``path``, at most ``max_bytes`` long.

    Raises :class:`ImageDecodeError` with a one-line reason for anything else: missing, a
    dangling symlink, a symlink loop, a directory, a FIFO/device/socket, unreadable, empty or
    larger than ``max_bytes``.
    """
    path = Path(path)
    _check_regular(path, _stat(path), max_bytes)
    fd = _open(path)
    try:
        _check_regular(path, os.fstat(fd), max_bytes)  # what was opened, not what was stat-ed
        data = _read_bounded(fd, path, max_bytes)
    finally:
        os.close(fd)
    if not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    return data


def open_regular_file(path: Path | str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> BinaryIO:
    """A binary file object on the regular file ``path``, checked as :func:`read_image_bytes`
    checks it (for readers that need only the header); the caller closes it."""
    path = Path(path)
    _check_regular(path, _stat(path), max_bytes)
    fd = _open(path)
    try:
        _check_regular(path, os.fstat(fd), max_bytes)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise ImageDecodeError(path, _os_reason(path, exc)) from exc
    except ValueError as exc:  # an embedded NUL byte in a label row
        raise ImageDecodeError(path, f"invalid file name ({exc})") from exc


def _open(path: Path) -> int:
    try:
        return os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise ImageDecodeError(path, _os_reason(path, exc)) from exc


#: why a file cannot be opened, by errno (ENOENT is told apart from a dangling symlink)
_OS_REASONS = {
    errno.ELOOP: "symlink loop",
    errno.EACCES: "permission denied (cannot read file)",
    errno.EPERM: "permission denied (cannot read file)",
    errno.ENXIO: "not a regular file (device or socket)",
    errno.ENOTDIR: "file not found (a parent is not a folder)",
}


def _os_reason(path: Path, exc: OSError) -> str:
    """Name what the path is, not only the errno: 'dangling symlink' beats 'file not found'."""
    if exc.errno == errno.ENOENT:
        return "dangling symlink" if os.path.islink(path) else "file not found"
    return _OS_REASONS.get(exc.errno or 0, f"cannot read file ({exc.strerror or exc})")


def _check_regular(path: Path, info: os.stat_result, max_bytes: int) -> None:
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise ImageDecodeError(path, "is a directory, not an image file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "special file")
        raise ImageDecodeError(path, f"not a regular file ({kind})")
    if info.st_size > max_bytes:
        raise ImageDecodeError(path, too_large_reason(info.st_size, max_bytes))


def too_large_reason(size: int, max_bytes: int) -> str:
    return f"file too large: {size:,} bytes exceeds the limit of {max_bytes:,} bytes"


def _read_bounded(fd: int, path: Path, max_bytes: int) -> bytes:
    """Read to EOF but never past ``max_bytes + 1``: a file still growing is refused, not read."""
    parts: list[bytes] = []
    total = 0
    try:
        while total <= max_bytes:
            part = os.read(fd, min(max_bytes + 1 - total, 1 << 24))
            if not part:
                break
            parts.append(part)
            total += len(part)
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if total > max_bytes:
        raise ImageDecodeError(path, too_large_reason(total, max_bytes) + " (it grew while read)")
    return parts[0] if len(parts) == 1 else b"".join(parts)
