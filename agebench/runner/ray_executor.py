"""The Ray executor: the local runner's stages as Ray Data operators on a cluster.

::

    jobs (driver, a window at a time) -> PrepareWorker actors (CPUs: read, decode, detect, cut)
        -> InferenceActor actors (a GPU each, or CPU actors) -> results (driver: on_done)

or, on a cluster without GPUs, ``PredictWorker`` actors that do both (see ``plan_resources``).

It has the local :class:`~agebench.runner.stages.BatchRunner`'s interface, ``run(jobs,
on_done)``, and everything around it (run identity, resume, per-image records, the rebuilt
``predictions.jsonl``, summary, reports) is the same code for both executors; that is why their
outputs match record for record and a run started by one is resumed by the other.

Memory: the driver hands Ray ``window`` jobs at a time and writes each result as it arrives,
so it holds at most one window of jobs, however many images there are. Faults: Ray Data
restarts a dead actor and retries its batch (``max_restarts=-1``, ``max_task_retries=-1`` are
its defaults for actor pools); a result reaches the driver once, so no image is lost or
written twice, and an interrupted driver resumes from the records written.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from agebench.core.config import ClusterConfig
from agebench.core.errors import AgebenchError
from agebench.runner.faces import Job, PreparedImage
from agebench.runner.ray_workers import (
    ENGINE,
    ITEM,
    JOB,
    InferenceActor,
    ModelBundle,
    PredictWorker,
    PrepareWorker,
    pickles,
    unpickle,
)
from agebench.runner.stack import PredictStack
from agebench.runner.stages import CHUNK_PIXELS, chunk_images, chunked, chunked_by_pixels

#: chunks an inference actor takes at once, spread over its engine's lanes
INFERENCE_CHUNKS = 2

RAY_MISSING = (
    "--executor ray needs Ray: pip install 'agebench[ray]' "
    "(in a checkout, scripts/setup.sh installs it)"
)


def import_ray() -> Any:
    """Ray, or a one-line error saying how to install it (it is an extra)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise AgebenchError(RAY_MISSING) from None
    return ray


def connect(cluster: ClusterConfig) -> float:
    """Join the cluster ``cluster.ray_address`` names, or start a Ray instance on this machine
    when it names none; returns the seconds it took (0 when this process is connected
    already: the API's later calls and the tests reuse one instance). A Ray that this call
    starts lives until the process exits."""
    ray = import_ray()
    if ray.is_initialized():
        return 0.0
    started = time.perf_counter()
    try:
        ray.init(
            address=cluster.ray_address,
            include_dashboard=False,
            log_to_driver=False,
            # what goes wrong reaches the user as the run's error; Ray's start-up chatter
            # (instance started, token created) would bury the progress bar
            logging_level=logging.ERROR,
        )
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as error:
        where = cluster.ray_address or "a local Ray instance"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AgebenchError(f"--executor ray: cannot start or join {where}: {first}") from None
    return time.perf_counter() - started


@dataclass(frozen=True)
class ResourcePlan:
    """What each stage takes of the cluster, decided from its resources and the options."""

    nodes: int
    cpus: float
    gpus: float
    prepare_workers: int
    cpus_per_worker: float
    inference_actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    #: both stages in each worker (no GPU actors and no --inference-actors): no inference
    #: actors of their own, ``prepare_workers`` workers each decode and run the model
    fused: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "stages": "fused" if self.fused else "split",
            "nodes": self.nodes,
            "cluster_cpus": self.cpus,
            "cluster_gpus": self.gpus,
            "prepare_workers": self.prepare_workers,
            "cpus_per_worker": self.cpus_per_worker,
            "inference_actors": self.inference_actors,
            "gpus_per_actor": self.gpus_per_actor,
            "cpus_per_actor": self.cpus_per_actor,
        }


def plan_resources(
    cluster: ClusterConfig,
    device: str,
    *,
    nodes: int,
    cpus: float,
    gpus: float,
    workers: int | None = None,
) -> ResourcePlan:
    """Defaults from the cluster's resources: one inference actor per GPU (``num_gpus=1``)
    when the device allows GPUs and the cluster has them, the decode/detect workers taking the
    CPUs left (at least one) unless ``workers`` (the run's ``--workers``) says how many.
    Without GPUs, every worker runs both stages (``fused``), one per ``cpus_per_worker``
    CPUs, unless ``--inference-actors`` asks for model actors of their own."""
    if device == "cuda" and gpus < 1 and not cluster.gpus_per_worker:
        raise AgebenchError("--device cuda: the Ray cluster has no GPU")
    use_gpus = device != "cpu" and gpus > 0
    gpus_per_actor = (
        cluster.gpus_per_worker if cluster.gpus_per_worker is not None else 1.0 if use_gpus else 0.0
    )
    if device == "cpu":
        gpus_per_actor = 0.0
    cpus_per_actor = 1.0 if gpus_per_actor > 0 else cluster.cpus_per_worker
    if gpus_per_actor == 0 and cluster.inference_actors is None:
        fused = workers or max(1, math.floor(cpus / cluster.cpus_per_worker + 1e-9))
        if fused * cluster.cpus_per_worker > cpus + 1e-9:
            raise AgebenchError(
                f"--executor ray: {fused} worker(s) x {cluster.cpus_per_worker:g} CPU need more "
                f"than the cluster has ({cpus:g} CPUs); lower --workers or --cpus-per-worker"
            )
        return ResourcePlan(nodes, cpus, gpus, fused, cluster.cpus_per_worker, 0, 0.0, 0.0, True)
    if cluster.inference_actors is not None:
        actors = cluster.inference_actors
    else:
        actors = max(1, math.floor(gpus / gpus_per_actor + 1e-9))
    left = cpus - actors * cpus_per_actor
    prepare = workers or max(1, math.floor(left / cluster.cpus_per_worker + 1e-9))
    wanted = actors * cpus_per_actor + prepare * cluster.cpus_per_worker
    if wanted > cpus + 1e-9 or actors * gpus_per_actor > gpus + 1e-9:
        # Ray Data would wait for resources that never come: say so instead of hanging
        raise AgebenchError(
            f"--executor ray: {actors} inference actor(s) x {cpus_per_actor:g} CPU "
            f"{'+ ' + format(gpus_per_actor, 'g') + ' GPU ' if gpus_per_actor else ''}"
            f"and {prepare} worker(s) x {cluster.cpus_per_worker:g} CPU need more than the "
            f"cluster has ({cpus:g} CPUs, {gpus:g} GPUs); lower --inference-actors, "
            "--workers or --cpus-per-worker"
        )
    return ResourcePlan(
        nodes, cpus, gpus, prepare, cluster.cpus_per_worker, actors, gpus_per_actor, cpus_per_actor
    )


class RayRunner:
    """One model over a stream of jobs on a Ray cluster; ``run`` calls ``on_done`` once per
    job, in the order results arrive (the run's outputs are rebuilt in input order after)."""

    def __init__(
        self,
        stack: PredictStack,
        cluster: ClusterConfig,
        *,
        batch_size: int | None,
        save_raw: bool = False,
    ) -> None:
        self.ray = import_ray()
        self.startup_seconds = connect(cluster)
        self.recipe = stack.recipe
        self.cluster = cluster
        self.save_raw = save_raw
        resources = self.ray.cluster_resources()
        alive = [node for node in self.ray.nodes() if node.get("Alive")]
        self.plan = plan_resources(
            cluster,
            stack.recipe.execution.device,
            nodes=len(alive),
            cpus=float(resources.get("CPU", 0.0)),
            gpus=float(resources.get("GPU", 0.0)),
            workers=stack.recipe.execution.workers,
        )
        on_gpu = self.plan.gpus_per_actor > 0
        self.batch_size = batch_size or (256 if on_gpu else stack.predictor.preferred_batch_size)
        self.chunk_size = chunk_images(self.batch_size, detecting=stack.detector_device is not None)
        self.bundle = self.ray.put(ModelBundle.of(stack.spec))
        self.first_result_seconds: float | None = None
        #: what ran the graph in the actors, from their first result (None: no result yet)
        self.engine: dict[str, Any] | None = None
        self._first_images = self._images = 0
        self._last_result_seconds = 0.0
        self._quiet()

    @staticmethod
    def _quiet() -> None:
        """Our progress bar and log lines only: Ray Data's own bars and per-run banners off."""
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.verbose_stats_logs = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)

    def describe(self) -> dict[str, Any]:
        engine = (
            {}
            if self.engine is None
            else {
                "onnx_provider": self.engine.get("provider"),
                "engine": self.engine,
            }
        )
        return {
            **engine,
            "executor": "ray",
            "batch_size": self.batch_size,
            "chunk_images": self.chunk_size,
            "ray": {
                "version": self.ray.__version__,
                "address": self.cluster.ray_address,
                "startup_seconds": round(self.startup_seconds, 3),
                "first_result_seconds": None
                if self.first_result_seconds is None
                else round(self.first_result_seconds, 3),
                "images_per_second_after_first_result": self._steady_rate(),
                **self.plan.describe(),
            },
        }

    def _steady_rate(self) -> float | None:
        """Images/s from the first result to the last: the rate once the actors are up."""
        first = self.first_result_seconds
        seconds = self._last_result_seconds - (first or 0.0)
        images = self._images - self._first_images
        return round(images / seconds, 2) if first is not None and seconds > 0 else None

    def _dataset(self, window: list[Job]) -> Any:
        from ray.data import ActorPoolStrategy

        plan = self.plan
        # the local runner's chunks, cut by its own function; workers may run elsewhere and
        # in another folder: they read absolute paths
        chunks = [
            [(replace(job, path=job.path.absolute()), job.path) for job in chunk]
            for chunk, _ in chunked_by_pixels(window, self.chunk_size, CHUNK_PIXELS)
        ]
        rows = self.ray.data.from_items(
            [{JOB: value} for value in pickles(chunks)], override_num_blocks=len(chunks)
        )
        model = {
            "recipe": self.recipe,
            "bundle": [self.bundle],
            "batch_size": self.batch_size,
            "save_raw": self.save_raw,
        }
        if plan.fused:
            return rows.map_batches(
                PredictWorker,
                fn_constructor_kwargs={**model, "cpus": plan.cpus_per_worker},
                batch_size=1,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=plan.prepare_workers),
                num_cpus=plan.cpus_per_worker,
            )
        prepared = rows.map_batches(
            PrepareWorker,
            fn_constructor_kwargs={"recipe": self.recipe, "cpus": plan.cpus_per_worker},
            batch_size=1,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=plan.prepare_workers),
            num_cpus=plan.cpus_per_worker,
        )
        return prepared.map_batches(
            InferenceActor,
            fn_constructor_kwargs=model,
            batch_size=INFERENCE_CHUNKS,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=plan.inference_actors),
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor,
        )

    def run(self, jobs: Iterable[Job], on_done: Callable[[PreparedImage], None]) -> None:
        started = time.perf_counter()
        for window in chunked(jobs, self.cluster.window):
            for batch in self._dataset(window).iter_batches(batch_size=None, batch_format="numpy"):
                items = [item for chunk in unpickle(batch[ITEM]) for item in chunk]
                if self.engine is None and len(batch[ENGINE]):
                    self.engine = json.loads(batch[ENGINE][0])
                now = time.perf_counter() - started
                if self.first_result_seconds is None:
                    self.first_result_seconds = now
                    self._first_images = len(items)
                self._images += len(items)
                self._last_result_seconds = now
                for item in items:
                    on_done(item)
