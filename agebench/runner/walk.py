"""Find image files under a folder in a fixed order, without listing the whole tree first.

Folders can hold millions of photos, so paths are streamed: only one directory is read at a time
(its entries sorted by name, then the handle closed) plus the pending, already-sorted siblings of
each ancestor. Entries are visited in name order and sub-folders are entered where they sort, so
the output equals sorting all paths by their components (``a/1.jpg``, ``a/b/2.jpg``, ``a/c.jpg``);
the same folder always yields the same sequence, which keeps runs and resumes reproducible.

Rules: extensions match :data:`IMAGE_EXTENSIONS` case-insensitively; names starting with ``.``
are skipped (``.git``, ``.DS_Store``, macOS ``._x.jpg`` shadows); symlinked *folders* are not
entered, which rules out loops; a sub-folder that cannot be read is skipped with a logged warning
so one bad folder does not stop a long run. Every other entry with an image name is yielded
*without looking at what it is*: regular files, but also FIFOs, devices, sockets, dangling
links, symlink loops and links to folders. The walk never opens or follows them (no stat, so
no blocking and no warnings); the bounded reader (``agebench.core.fileread``) then fails each
with its reason, so every entry that looks like an image gets a record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from agebench.runner.imageio import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)


def iter_images(root: Path, *, recursive: bool = True) -> Iterator[Path]:
    """Yield image paths under ``root`` (or ``root`` itself if it is a file), lazily.

    A file named explicitly is yielded whatever its extension: the user asked for it, and decoding
    will report clearly if it is not an image. Raises ``FileNotFoundError`` for a missing root.
    """
    return (Path(path) for path in _walk(os.fspath(root), recursive))


def count_images(root: Path, recursive: bool = True) -> int:
    """Count what :func:`iter_images` would yield, without building ``Path`` objects."""
    return sum(1 for _ in _walk(os.fspath(root), recursive))


def _walk(root: str, recursive: bool) -> Iterator[str]:
    """Check the root eagerly, then stream; a generator alone would defer the error to next()."""
    if not os.path.lexists(root):
        raise FileNotFoundError(f"image folder or file not found: {root}")
    if not os.path.isdir(root):  # a file, FIFO, dangling link...: its record says what it is
        return iter((root,))
    return _walk_tree(root, recursive)


def _walk_tree(root: str, recursive: bool) -> Iterator[str]:
    """Depth-first over sorted entries with an explicit stack, so deep trees cannot overflow."""
    stack: list[Iterator[tuple[str, bool]]] = [iter(_read_dir(root, is_root=True))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path, is_dir = entry
        if not is_dir:
            yield path
        elif recursive:
            stack.append(iter(_read_dir(path, is_root=False)))


def _read_dir(directory: str, *, is_root: bool) -> list[tuple[str, bool]]:
    """List one directory's wanted entries as ``(path, is_dir)``, sorted, with its handle closed."""
    try:
        with os.scandir(directory) as entries:
            wanted = [item for entry in entries if (item := _classify(entry)) is not None]
    except OSError as exc:
        if is_root:
            raise
        logger.warning("skipping unreadable folder %s: %s", directory, exc.strerror or exc)
        return []
    wanted.sort()
    return wanted


def _classify(entry: os.DirEntry[str]) -> tuple[str, bool] | None:
    """Keep real sub-folders and every other entry with an image name; drop hidden names.

    Only the entry itself is looked at (``follow_symlinks=False``: the directory listing's
    type, no extra system call), so a link's target is never touched here.
    """
    if entry.name.startswith("."):
        return None
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        is_dir = False  # cannot even lstat it: decoding names the reason
    if is_dir:
        return entry.path, True
    if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
        return entry.path, False
    return None
