"""One small generic registry for models, decoders and (later) benchmarks.

Targets may be lazy ``"module:attr"`` strings so that listing never imports heavy plugins;
duplicates are refused rather than silently overwritten, and a miss suggests close names.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from agebench.core.errors import AgebenchError

T = TypeVar("T")


class RegistryError(AgebenchError):
    """A lookup missed, or two entries claimed the same name."""


def resolve_target(target: str) -> object:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"target {target!r} is not of the form 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RegistryError(f"cannot import {module_name!r} for {target!r}: {error}") from error
    try:
        obj: object = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as error:
        raise RegistryError(f"{module_name!r} has no attribute {attr!r}") from error
    return obj


class Registry(Generic[T]):
    """Name -> entry, where an entry is a value or a lazy ``module:attr`` target."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._origins: dict[str, str] = {}

    def register(self, name: str, entry: T | str, *, origin: str = "built-in") -> None:
        if name in self._entries:
            raise RegistryError(
                f"{self.kind} {name!r} from {origin} is already registered by "
                f"{self._origins[name]}; rename one of them"
            )
        self._entries[name] = entry
        self._origins[name] = origin

    def decorator(self, name: str) -> Callable[[T], T]:
        """Register the decorated object under ``name``."""

        def wrap(obj: T) -> T:
            self.register(name, obj)
            return obj

        return wrap

    def get(self, name: str) -> T:
        try:
            entry = self._entries[name]
        except KeyError:
            raise RegistryError(self._miss_message(name)) from None
        if isinstance(entry, str):
            loaded = resolve_target(entry)
            self._entries[name] = loaded  # type: ignore[assignment]
            return loaded  # type: ignore[return-value]
        return entry

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def _miss_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(self.names()) or "none"
        return f"unknown {self.kind} {name!r}{hint} (known: {known})"

    def load_entry_points(self, group: str) -> list[str]:
        """Register every entry point of ``group`` lazily; return the names added."""
        added = []
        for ep in entry_points(group=group):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            self.register(ep.name, ep.value, origin=f"entry point {group}:{ep.name} ({dist})")
            added.append(ep.name)
        return added
