"""One owner per output folder, and one identity per run.

Two runs writing into one folder interleave their records: with different models the folder
ends up holding ages from both while its summary names one, and a later resume accepts the
mixture. So a run holds an OS-level lock on its output folder from before it reads the folder
until its last write (``filelock``: ``flock`` on POSIX, released by the kernel when the holder
dies, so a killed run never leaves a stale lock behind). A second run into a locked folder is
refused with one line naming the holder, or waits for it when asked.

Under the lock, the run's identity (what produced the records: model and manifest hashes,
settings, data) is compared with the one the folder already holds and then written before the
first result. Every record carries the identity's digest, and a resume takes only records whose
digest matches, so a folder of mixed records is impossible rather than merely unlikely.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from agebench.core.errors import AgebenchError
from agebench.runner import sink

LOCK_FILE = ".agebench.lock"
#: who holds the lock, written by the holder once it has it: the lock file itself cannot carry
#: this (the lock library truncates it on every attempt to take it)
OWNER_FILE = ".agebench.owner.json"
IDENTITY_SCHEMA = "agebench.run/2"
#: how often a waiting run tries the lock again, in seconds
_POLL = 0.2


class FolderBusyError(AgebenchError):
    """Another live run holds the output folder."""


class IdentityMismatchError(AgebenchError):
    """The folder holds the results of a different run (another model, settings or data)."""


def identity_digest(identity: Mapping[str, Any]) -> str:
    """A short, stable digest of a run's identity; every record carries it."""
    canonical = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunIdentity:
    """What produced a folder's records. ``fields`` are compared key by key on a resume so that
    a refusal can name only what differs; ``digest`` goes into every record."""

    kind: str
    fields: Mapping[str, Any]

    @property
    def digest(self) -> str:
        return identity_digest({"kind": self.kind, **self.fields})

    def as_json(self) -> dict[str, Any]:
        return {"schema": IDENTITY_SCHEMA, "kind": self.kind, "digest": self.digest, **self.fields}

    def differences(self, previous: Mapping[str, Any]) -> list[str]:
        """The keys whose values differ from a folder's recorded identity (top level, then
        one level down, so that 'settings.faces' is named rather than all the settings)."""
        if previous.get("schema") != IDENTITY_SCHEMA:
            recorded = previous.get("schema", "agebench.run/1")
            return [f"identity: {recorded!r} there (an earlier agebench), {IDENTITY_SCHEMA!r} here"]
        if previous.get("kind") != self.kind:
            return [f"kind: {previous.get('kind')!r} there, {self.kind!r} here"]
        found: list[str] = []
        for key, value in self.fields.items():
            old = previous.get(key)
            if old == value:
                continue
            if isinstance(old, Mapping) and isinstance(value, Mapping):
                inner = sorted(k for k in {*old, *value} if old.get(k) != value.get(k))
                found.extend(
                    f"{key}.{k}: {_short(old.get(k))} there, {_short(value.get(k))} here"
                    for k in inner
                )
            else:
                found.append(f"{key}: {_short(old)} there, {_short(value)} here")
        return found


def _short(value: Any, limit: int = 60) -> str:
    """A differing value for the refusal: a string (an input folder, a model) whole, as two
    paths cut at the same length read alike; a structure cut to ``limit``."""
    if isinstance(value, str):
        return repr(value)
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _owner_text(out: Path) -> str:
    owner = sink.read_json(out / OWNER_FILE)
    if not isinstance(owner, Mapping):
        return "another agebench run"
    command = " ".join(str(a) for a in owner.get("argv") or [])[:120]
    return (
        f"agebench run pid {owner.get('pid')} on {owner.get('host')} "
        f"since {owner.get('started')}" + (f" ({command})" if command else "")
    )


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise sink.OutputError(f"{out}: is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise sink.output_error(out, error) from None


@contextlib.contextmanager
def owned_folder(
    out: Path, *, wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold ``out`` for the whole ``with`` block, or refuse with :class:`FolderBusyError`.

    ``wait``: block until the holder finishes instead (``on_wait`` is told who it waits for,
    once). The lock is per open file, so two runs in one process exclude each other too.
    """
    _check_folder(out)
    lock = FileLock(out / LOCK_FILE, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _owner_text(out)
        if not wait:
            raise FolderBusyError(
                f"{out}: in use by {holder}; wait for it (--wait) or choose another --out"
            ) from None
        if on_wait is not None:
            on_wait(holder)
        while True:
            try:
                lock.acquire(timeout=_POLL)
                break
            except Timeout:
                time.sleep(_POLL)
    except OSError as error:
        raise sink.output_error(out / LOCK_FILE, error) from None
    try:
        sink.write_json_atomic(
            out / OWNER_FILE,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "argv": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],
            },
        )
        yield
    finally:
        lock.release()


def claim(out: Path, identity: RunIdentity, *, resume: bool, hint: str) -> bool:
    """Check the folder's recorded identity against this run's and write ours before any
    result. Call with the folder held. Returns whether the folder held a run (of this identity)
    to resume; a different identity is refused, naming what differs, unless ``resume`` is
    False (the caller then clears the folder first)."""
    path = out / sink.RUN_FILE
    held = False
    if path.exists():
        previous = sink.read_json(path)
        if resume:
            if not isinstance(previous, Mapping):
                raise IdentityMismatchError(f"{path}: unreadable; {hint}")
            differences = identity.differences(previous)
            if differences:
                raise IdentityMismatchError(
                    f"{out}: holds another run ({'; '.join(differences)}); {hint}"
                )
            held = True
    sink.write_json_atomic(path, identity.as_json(), durable=True)
    return held
