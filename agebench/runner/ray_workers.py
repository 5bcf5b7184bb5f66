"""What runs inside the Ray executor's workers: the two stages of the local runner, as Ray
Data callable classes.

* :class:`PrepareWorker` (decode/detect workers, CPUs): read, decode, find faces and cut them,
  with the run's own :class:`~agebench.runner.faces.FacePreparer`;
* :class:`InferenceActor` (one per GPU, or CPU actors): the run's model through the very
  :class:`~agebench.runner.stages.ModelStage` the local runner calls, so both executors write
  the same numbers;
* :class:`PredictWorker`: both in one actor, for clusters without GPUs.

A row is one chunk, cut by the driver with the local runner's own ``chunked_by_pixels``: jobs
and prepared images travel as pickles of whole chunks in a binary column (Ray Data keeps them in
the object store and never converts them), so every image is detected and scored in the same
company as locally, and the numbers cannot differ by how Ray batched the rows. The model's
files travel as a :class:`ModelBundle` in the object store, so a node needs agebench installed
but not the driver's model registry.
This module imports Ray only inside functions: it is loaded on the workers, where Ray is.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from agebench.core.atomic import write_file_atomic
from agebench.models.manifest import ModelSpec
from agebench.runner.faces import Job, PreparedImage
from agebench.runner.stack import StackRecipe, build_predictor
from agebench.runner.stages import ModelStage

#: the column each stage reads and writes
JOB = "job"
ITEM = "item"
#: beside each result: what ran the graph in its actor (provider, settings), as JSON
ENGINE = "engine"

#: test hook: a folder where a file ``<stage>.arm`` holding n makes the first ``prepare`` or
#: ``infer`` worker to reach its n-th batch exit hard (the file becomes ``<stage>.fired``), so
#: the fault tests kill a worker mid-run; unset, nothing is looked at
FAULT_ENV = "AGEBENCH_RAY_FAULT"


def pickles(values: list[Any]) -> np.ndarray:
    """A 1-D object array of pickles: one Ray Data column that Arrow stores as binary."""
    column = np.empty(len(values), dtype=object)
    column[:] = [pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL) for value in values]
    return column


def unpickle(column: Any) -> list[Any]:
    return [pickle.loads(value) for value in column]


@dataclass(frozen=True)
class ModelBundle:
    """The files a model needs, by name relative to its folder: the ONNX graph and what its
    decoders read beside it (a prototype table)."""

    name: str
    sha256: str
    files: dict[str, bytes]

    @classmethod
    def of(cls, spec: ModelSpec) -> ModelBundle:
        names = [spec.file.name]
        for head in spec.heads:
            table = head.params.get("prototypes")
            if isinstance(table, str):
                names.append(table)
        files = {name: (spec.base_dir / name).read_bytes() for name in names}
        return cls(spec.name, spec.sha256, files)

    def materialise(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` pointing at a node-local copy of the files (written once per node, keyed by
        the model's sha256; the predictor verifies the graph's sha256 as it loads it)."""
        folder = Path(tempfile.gettempdir()) / "agebench-ray-models" / self.sha256[:16]
        for name, data in self.files.items():
            path = folder / name
            if path.is_file() and path.stat().st_size == len(data):
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(path, partial(Path.write_bytes, data=data))
        return replace(spec, file=folder / spec.file.name, manifest_path=None)


class PrepareWorker:
    """Decode, detect and cut a batch of jobs (one Ray Data actor: the detector loads once)."""

    def __init__(self, recipe: StackRecipe, cpus: float) -> None:
        threads = max(1, round(cpus))
        self.preparer, _ = recipe.preparer(workers=1, cores=threads)
        self.batches = 0

    def prepare(self, shipped: list[tuple[Job, Path]]) -> list[PreparedImage]:
        """One chunk, as the driver cut it: the local runner's chunk, image for image."""
        self.batches += 1
        _maybe_fail("prepare", self.batches)
        items = self.preparer.prepare_many([job for job, _ in shipped])
        for item, (_, given) in zip(items, shipped, strict=True):
            item.path = given  # records name the input as the user gave it
        return items

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {ITEM: pickles([self.prepare(chunk) for chunk in unpickle(batch[JOB])])}


class InferenceActor:
    """The model over prepared chunks (one Ray Data actor per GPU, or CPU actors with the
    tuned onnxruntime settings for ``threads`` cores, None: the node's). Each chunk runs
    whole, as the local runner runs it, so every face is in the same batch of the graph as
    locally; a batch of several chunks spreads them over the engine's lanes."""

    def __init__(
        self,
        recipe: StackRecipe,
        bundle: list[Any],
        batch_size: int,
        save_raw: bool,
        threads: int | None = None,
    ) -> None:
        import ray

        spec = ray.get(bundle[0]).materialise(recipe.spec)
        predictor = build_predictor(spec, recipe.execution, threads=threads)
        self.stage = ModelStage(predictor, batch_size=batch_size, save_raw=save_raw)
        self.lanes = max(1, predictor.lanes)
        self.pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="agebench-infer")
        self.batches = 0
        self.engine = json.dumps(predictor.execution, sort_keys=True)

    def results(self, chunks: list[list[PreparedImage]]) -> dict[str, Any]:
        """The output rows, a chunk each, and the engine that scored them (the driver's own
        model may run elsewhere: a CPU driver of a GPU cluster)."""
        engine = np.empty(len(chunks), dtype=object)
        engine[:] = self.engine
        return {ITEM: pickles(chunks), ENGINE: engine}

    def infer(self, items: list[PreparedImage]) -> list[PreparedImage]:
        self.batches += 1
        _maybe_fail("infer", self.batches)
        return self.stage.infer(self.stage.pack(items)).items

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        chunks: list[list[PreparedImage]] = unpickle(batch[ITEM])
        return self.results(list(self.pool.map(self.infer, chunks)))


class PredictWorker:
    """Both stages in one actor, on clusters without GPUs: each worker decodes its chunk and
    runs the model on it single-threaded, as each of the local runner's threads would, and no
    crop crosses the object store. One actor pool instead of two also halves the start-up
    (on 2 CPUs the actors' start-up was most of Ray's cost on a few thousand images)."""

    def __init__(
        self, recipe: StackRecipe, bundle: list[Any], batch_size: int, save_raw: bool, cpus: float
    ) -> None:
        self.preparing = PrepareWorker(recipe, cpus)
        self.inferring = InferenceActor(
            recipe, bundle, batch_size, save_raw, threads=max(1, round(cpus))
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        chunks = [self.preparing.prepare(chunk) for chunk in unpickle(batch[JOB])]
        return self.inferring.results([self.inferring.infer(chunk) for chunk in chunks])


def _maybe_fail(stage: str, batch: int) -> None:
    """The fault tests' hook (see ``FAULT_ENV``): exit without cleanup, as a killed process
    would, the first time any ``stage`` worker reaches the batch its arm file names."""
    folder = os.environ.get(FAULT_ENV)
    if not folder:
        return
    arm = Path(folder) / f"{stage}.arm"
    try:
        if batch < int(arm.read_text(encoding="utf-8")):
            return
        os.rename(arm, arm.with_suffix(".fired"))  # exactly one worker wins the rename
    except (OSError, ValueError):
        return
    os._exit(1)
