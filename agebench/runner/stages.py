"""The batched runner shared by predict and eval: prepare -> infer -> finish, overlapped.

Three stages, each bounded so memory stays flat however many images come:

* **prepare** (``workers`` threads): a chunk of images is read, decoded, its faces found (one
  batched detection per chunk) and cut, and the crops turned into the model's input tensor.
  Normalising here, not in the inference thread, keeps that thread doing nothing but the
  graph.
* **infer** (``predictor.lanes`` threads): the graph runs on one chunk per lane; on a CPU
  several single-threaded lanes overlap with each other and with decoding (see
  ``agebench.models.ort_engine``), on a GPU one lane feeds the device.
* **finish** (the caller's thread): results come back in input order and are handed to
  ``on_done``, which writes them.

Chunks are ``batch_size`` images (fewer when detecting: photos are large) and at most
``2 x workers`` chunks are prepared ahead, ``lanes + 1`` inferred ahead. Images are also counted
in pixels, read from each file's header before decoding: a chunk closes at ``CHUNK_PIXELS``, and
a chunk's decode waits until its pixels fit in ``PIXELS_IN_FLIGHT`` across all workers (an image
larger than that runs alone), so the memory decoding holds does not grow with image size.
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from agebench.core.fileread import read_image_bytes
from agebench.models.engine import DeviceEngine
from agebench.models.predictor import Predictor
from agebench.runner.faces import FacePreparer, Job, PreparedImage
from agebench.runner.imageio import ImageDecodeError, header_pixels
from agebench.runner.pool import ordered_map

#: photos decoded at once per worker while detecting: a chunk of 12-megapixel photos is
#: about 36 MB each, so detection chunks are kept small
DETECT_CHUNK = 8
#: header pixels after which a chunk closes (a 12-megapixel photo chunk of 8 is under it)
CHUNK_PIXELS = 100_000_000
#: header pixels all prepare workers may be decoding at once (one larger image runs alone)
PIXELS_IN_FLIGHT = 200_000_000


@dataclass
class PreparedChunk:
    items: list[PreparedImage]
    #: the items whose crops went into ``inputs``, in face order
    with_faces: list[PreparedImage] = field(default_factory=list)
    #: the model input of each slice of at most ``batch_size`` faces, in face order
    inputs: list[Any] = field(default_factory=list)
    #: JPEG files read but not decoded: the inference lane decodes them on the device
    encoded: list[tuple[PreparedImage, bytes]] = field(default_factory=list)


def chunk_images(batch_size: int, *, detecting: bool) -> int:
    """Images per chunk: a batch of them, fewer when faces are found in whole photos. Both
    executors cut chunks by it, so an image is detected and scored in the same company."""
    return min(batch_size, DETECT_CHUNK) if detecting else batch_size


def chunked(items: Iterable[Job], size: int) -> Iterator[list[Job]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def chunked_by_pixels(
    items: Iterable[Job], size: int, max_pixels: int
) -> Iterator[tuple[list[Job], int]]:
    """Chunks of at most ``size`` jobs and ``max_pixels`` header pixels (a larger image alone),
    each with its pixel count."""
    chunk: list[Job] = []
    pixels = 0
    for job in items:
        cost = _job_pixels(job)
        if chunk and (len(chunk) >= size or pixels + cost > max_pixels):
            yield chunk, pixels
            chunk, pixels = [], 0
        chunk.append(job)
        pixels += cost
    if chunk:
        yield chunk, pixels


class PixelBudget:
    """A counting semaphore in pixels: decodes wait until their pixels fit.

    A request larger than the whole budget takes all of it (so it runs alone, never forever
    blocked); nothing is acquired twice by one thread, so it cannot deadlock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._free = self.capacity
        self._changed = threading.Condition()

    def acquire(self, pixels: int) -> int:
        """Wait for ``pixels`` (capped at the capacity); returns what to release."""
        want = min(max(0, pixels), self.capacity)
        with self._changed:
            self._changed.wait_for(lambda: self._free >= want)
            self._free -= want
        return want

    def release(self, pixels: int) -> None:
        with self._changed:
            self._free += pixels
            self._changed.notify_all()


def _job_pixels(job: Job) -> int:
    """The pixels a job will decode to, from the file's header (0 when unknown): an image
    given in memory is counted by its own header or array, never by a file of its name."""
    if job.pixels is not None:
        return job.pixels.width * job.pixels.height
    if job.data is not None:
        return header_pixels(io.BytesIO(job.data))
    return header_pixels(job.path)


def _jpeg_bytes(path: Path) -> bytes | None:
    """The file's bytes when it starts like a JPEG; None sends it down the host path (which
    names the reason when it cannot be read: bounded reader, regular files only)."""
    try:
        data = read_image_bytes(path)
    except ImageDecodeError:
        return None
    return data if data[:3] == b"\xff\xd8\xff" else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (
            [_jsonable(v) for v in value.tolist()]
            if value.dtype == object
            else _clean(value.tolist())
        )
    if isinstance(value, np.generic):
        return _clean(value.item())
    return _clean(value)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class BatchRunner:
    """One model over a stream of jobs; ``run`` calls ``on_done`` once per job, in order."""

    def __init__(
        self,
        preparer: FacePreparer,
        predictor: Predictor,
        *,
        batch_size: int | None,
        workers: int,
        save_raw: bool = False,
        device_decode: bool | None = None,
        chunk_pixels: int = CHUNK_PIXELS,
        pixels_in_flight: int = PIXELS_IN_FLIGHT,
    ) -> None:
        self.preparer = preparer
        self.predictor = predictor
        self.batch_size = batch_size or predictor.preferred_batch_size
        self.workers = workers
        self.lanes = max(1, predictor.lanes)
        self.model_stage = ModelStage(predictor, batch_size=self.batch_size, save_raw=save_raw)
        self.chunk_size = chunk_images(self.batch_size, detecting=preparer.detector is not None)
        self.chunk_pixels = chunk_pixels
        self.budget = PixelBudget(pixels_in_flight)
        engine = predictor.engine
        # ready crops on a GPU: the host only reads files, nvJPEG decodes, the device cuts
        # (None: whenever the engine runs on CUDA; tests force it on the CPU)
        self.device_decode = (
            preparer.mode == "none"
            and preparer.ready is not None
            and isinstance(engine, DeviceEngine)
            and (engine.on_gpu if device_decode is None else device_decode)
        )

    def describe(self) -> dict[str, Any]:
        return {
            "executor": "local",
            "batch_size": self.batch_size,
            "chunk_images": self.chunk_size,
            "prepare_workers": self.workers,
            "inference_lanes": self.lanes,
            "decode": "device (torchvision nvJPEG)" if self.device_decode else "host",
        }

    def run(self, jobs: Iterable[Job], on_done: Callable[[PreparedImage], None]) -> None:
        prepare_pool = ThreadPoolExecutor(self.workers, thread_name_prefix="agebench-prepare")
        infer_pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="agebench-infer")
        try:
            prepared = ordered_map(
                prepare_pool,
                self._prepare_counted,
                chunked_by_pixels(jobs, self.chunk_size, self.chunk_pixels),
                window=2 * self.workers,
            )
            for chunk in ordered_map(
                infer_pool, self.infer, ((c,) for c in prepared), window=self.lanes + 1
            ):
                for item in chunk.items:
                    on_done(item)
        finally:
            # an interrupt drops queued work; finished images were handed over already
            prepare_pool.shutdown(wait=True, cancel_futures=True)
            infer_pool.shutdown(wait=True, cancel_futures=True)

    def _prepare_counted(self, jobs: list[Job], pixels: int) -> PreparedChunk:
        """``prepare`` once the chunk's pixels fit in the budget shared by all workers."""
        held = self.budget.acquire(pixels)
        try:
            return self.prepare(jobs)
        finally:
            self.budget.release(held)

    def prepare(self, jobs: list[Job]) -> PreparedChunk:
        if not self.device_decode:
            return self._prepare_on_host(jobs)
        slots: list[PreparedImage | None] = [None] * len(jobs)
        host: list[tuple[int, Job]] = []
        encoded: list[tuple[PreparedImage, bytes]] = []
        for index, job in enumerate(jobs):
            if job.pixels is not None:
                data = None  # decoded already: cut on the host
            elif job.data is not None:
                data = job.data if job.data[:3] == b"\xff\xd8\xff" else None
            else:
                data = _jpeg_bytes(job.path)
            if data is None:  # not a JPEG, or unreadable: the host path names the reason
                host.append((index, job))
                continue
            item = PreparedImage(path=job.path, relative=job.relative, key=job.key)
            item.notes = ["decoded on the device"]
            if job.hash_content:
                item.sha256 = hashlib.sha256(data).hexdigest()
            slots[index] = item
            encoded.append((item, data))
        chunk = self._prepare_on_host([job for _, job in host])
        for (index, _), item in zip(host, chunk.items, strict=True):
            slots[index] = item
        chunk.items = [item for item in slots if item is not None]
        chunk.encoded = encoded
        return chunk

    def _prepare_on_host(self, jobs: list[Job]) -> PreparedChunk:
        return self.model_stage.pack(self.preparer.prepare_many(jobs))

    def _decode_on_device(self, chunk: PreparedChunk) -> None:
        """Decode, cut and normalise the chunk's JPEGs on the engine's device; a file the
        decoders refuse fails alone (the batch is redone one file at a time)."""
        from agebench.runner.device_decode import decode_jpegs, warp_batch

        engine, ready, size = self.predictor.engine, self.preparer.ready, self.preparer.size
        # chunks carry encoded JPEGs only when __init__ chose device decoding: ready crops
        # and a DeviceEngine
        assert isinstance(engine, DeviceEngine) and ready is not None
        encoded, chunk.encoded = chunk.encoded, []
        try:
            images = decode_jpegs(
                [data for _, data in encoded], engine.device, names=[i.path for i, _ in encoded]
            )
            pairs = [(item, image) for (item, _), image in zip(encoded, images, strict=True)]
        except ImageDecodeError:
            pairs = []
            for item, data in encoded:
                try:
                    (image,) = decode_jpegs([data], engine.device, names=[item.path])
                except ImageDecodeError as error:
                    item.status, item.error, item.notes = "failed", error.reason, []
                    continue
                pairs.append((item, image))
        if not pairs:
            return
        matrices = []
        for item, image in pairs:
            height, width = int(image.shape[0]), int(image.shape[1])
            item.width, item.height = width, height
            item.faces = [self.preparer.ready_face(width, height, width)]
            matrices.append(ready.matrix(width, height, size))
        crops = warp_batch([image for _, image in pairs], matrices, size)
        chunk.with_faces.extend(item for item, _ in pairs)
        chunk.inputs.extend(
            engine.prepare_input(crops[start : start + self.batch_size])
            for start in range(0, len(crops), self.batch_size)
        )

    def infer(self, chunk: PreparedChunk) -> PreparedChunk:
        if chunk.encoded:
            self._decode_on_device(chunk)
        return self.model_stage.infer(chunk)


class ModelStage:
    """The model's half of a chunk's work: crops -> input tensors (``pack``) and tensors ->
    per-face fields (``infer``). The local runner calls it from its threads; the Ray
    executor's inference actors call the very same code, so both executors write the same
    numbers."""

    def __init__(self, predictor: Predictor, *, batch_size: int, save_raw: bool = False) -> None:
        self.predictor = predictor
        self.batch_size = batch_size
        self.save_raw = save_raw
        self.model = {"name": predictor.spec.name, "sha256": predictor.sha256}

    def pack(self, items: list[PreparedImage]) -> PreparedChunk:
        """The chunk of ``items``: their crops (taken off them) as the model's input, in
        slices of at most ``batch_size`` faces."""
        cut = [(item, item.crops) for item in items if item.crops is not None]
        chunk = PreparedChunk(items, [item for item, _ in cut])
        if cut:
            crops = [crops for _, crops in cut]
            faces = np.concatenate(crops) if len(crops) > 1 else crops[0]
            for item in chunk.with_faces:
                item.crops = None  # the tensor holds them now; free the copies
            chunk.inputs = [
                self.predictor.prepare_input(faces[start : start + self.batch_size])
                for start in range(0, len(faces), self.batch_size)
            ]
        return chunk

    def infer(self, chunk: PreparedChunk) -> PreparedChunk:
        """Run the graph on the chunk's inputs and write each face's fields."""
        if not chunk.inputs:
            return chunk
        fields: dict[str, list[Any]] = {}
        raws: list[dict[str, Any]] = []
        for tensor in chunk.inputs:
            result = self.predictor.infer(tensor)
            for key, array in result.fields.items():
                fields.setdefault(key, []).extend(_jsonable(array))
            if self.save_raw:
                n = len(next(iter(result.fields.values())))
                raws.extend(
                    {
                        head: {k: _jsonable(v[i]) for k, v in arrays.items()}
                        for head, arrays in result.raw.items()
                    }
                    for i in range(n)
                )
        chunk.inputs = []
        cursor = 0
        name, sha = self.model["name"], self.model["sha256"]
        for item in chunk.with_faces:
            for face in item.faces:
                face["model"] = name
                face["model_sha256"] = sha
                for key, values in fields.items():
                    value = values[cursor]
                    face[key] = (
                        round(value, 3 if key.startswith("age") else 4)
                        if isinstance(value, float)
                        else value
                    )
                if self.save_raw:
                    face["raw"] = raws[cursor]
                cursor += 1
        return chunk
