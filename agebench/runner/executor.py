"""Which executor runs a run's images: the local threads, or a Ray cluster.

Both have one interface, ``run(jobs, on_done)`` and ``describe()``; predict and eval build
theirs here and never look at which one they got.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from agebench.core.config import ClusterConfig
from agebench.runner.faces import Job, PreparedImage
from agebench.runner.stack import PredictStack
from agebench.runner.stages import BatchRunner


class Runner(Protocol):
    def run(self, jobs: Iterable[Job], on_done: Callable[[PreparedImage], None]) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def make_runner(
    stack: PredictStack,
    cluster: ClusterConfig,
    *,
    batch_size: int | None,
    save_raw: bool = False,
) -> Runner:
    """The runner ``cluster.executor`` names, over ``stack``'s model and face preparer."""
    if cluster.is_local:
        return BatchRunner(
            stack.preparer,
            stack.predictor,
            batch_size=batch_size,
            workers=stack.workers,
            save_raw=save_raw,
        )
    from agebench.runner.ray_executor import RayRunner

    return RayRunner(stack, cluster, batch_size=batch_size, save_raw=save_raw)
