"""Thread-pool helpers that keep memory flat: bounded in-flight work, results in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

R = TypeVar("R")


def ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[..., R], items: Iterable[tuple[Any, ...]], window: int
) -> Iterator[R]:
    """``pool.map`` that keeps at most ``window`` tasks in flight, so memory stays flat."""
    pending: deque[Future[R]] = deque()
    try:
        for args in items:
            pending.append(pool.submit(fn, *args))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # on an interrupt, drop the queued work instead of finishing it
        for future in pending:
            future.cancel()
