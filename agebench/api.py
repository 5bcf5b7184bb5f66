"""The public Python API: ``agebench.load`` for ages in memory, and the three commands as calls.

Every function here builds the same configuration objects as the command line and calls the
same runners, so a result is what the matching command would have written:

* :func:`load` builds the predict run's model, detector and face preparer
  (:class:`~agebench.runner.pipeline.PredictStack`, the builder ``agebench predict`` uses) and
  :meth:`AgeEstimator.predict` runs images through the same batched runner, decode, detection,
  crop and inference included, writing nothing. Ages are the records' (3 decimals).
* :func:`predict`, :func:`evaluate` and :func:`compare` run ``PredictRun``, ``EvalRun`` and
  ``run_compare`` and return the finished folder as a result object (``agebench.api_results``).

Options are keyword arguments with the commands' defaults; an unknown one is a ``TypeError``
naming it (Python's own), a value outside what the command accepts a ``ValueError``, and
anything the run refuses (missing model, busy folder, unreadable image) an
:class:`~agebench.core.errors.AgebenchError` with the command's one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

import numpy as np

from agebench.api_results import CompareResult, EvalResult, ModelRef, PredictResult
from agebench.benchmarks.spec import ReadyCrop
from agebench.core.config import ClusterConfig, ExecutionConfig, check_choice, check_range
from agebench.core.errors import AgebenchError
from agebench.core.types import (
    FACES_MODES,
    PREDICT_FACES_MODES,
    QUANTIZE_TARGETS,
    Backend,
    Device,
    Executor,
    FacesMode,
    Precision,
    PredictFacesMode,
    QuantizeTarget,
    Tuning,
)
from agebench.models.catalog import DEFAULT_MODEL
from agebench.runner.config import DetectConfig, PredictConfig
from agebench.runner.faces import FacePreparer, Job, PreparedImage
from agebench.runner.imageio import IMAGE_EXTENSIONS, decode_pillow, decoded_array
from agebench.runner.pipeline import PredictRun
from agebench.runner.stack import PredictStack
from agebench.runner.stages import BatchRunner
from agebench.runner.uri import is_uri

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from agebench.models.manifest import ModelSpec
    from agebench.training.run import TrainResult

#: one image for :meth:`AgeEstimator.predict`: a file path, encoded bytes, a Pillow image or an
#: RGB uint8 array of shape (H, W, 3)
ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | Image.Image | np.ndarray"
Progress = Callable[[str, int], None]
Notify = Callable[[str], None]

#: what a face record holds besides the model's own heads (those go to ``Face.extra``)
_FACE_FIELDS = frozenset(
    {"index", "box", "landmarks", "score", "age", "age_std", "model", "model_sha256", "raw"}
)


@dataclass(frozen=True)
class Face:
    """One face found (or given) in an image, with the model's estimate.

    ``box`` is (x1, y1, x2, y2) in the image's upright pixels; ``landmarks`` five (x, y)
    points (eyes, nose, mouth corners) when detected, else None; ``score`` the detector's
    confidence (None for a ready crop). ``age`` and ``age_std`` (None when the model gives
    no spread) are in years; ``extra`` holds the model's other heads (``age_group``,
    ``gender``...) and notes (``note``: detected on a padded image).
    """

    index: int
    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...] | None
    score: float | None
    age: float
    age_std: float | None
    extra: Mapping[str, Any]

    @classmethod
    def from_record(cls, face: Mapping[str, Any]) -> Face:
        landmarks = face.get("landmarks")
        return cls(
            index=int(face["index"]),
            box=tuple(float(v) for v in face["box"]),  # type: ignore[arg-type]
            landmarks=None
            if landmarks is None
            else tuple((float(x), float(y)) for x, y in landmarks),
            score=face.get("score"),
            age=face["age"],
            age_std=face.get("age_std"),
            extra=MappingProxyType({k: v for k, v in face.items() if k not in _FACE_FIELDS}),
        )


def _ready_crop(crop_margin: float) -> ReadyCrop:
    """``--crop-margin``: the margin ready crops carry (0: tight chips), as the CLI reads it."""
    return ReadyCrop(kind="margin", margin=crop_margin) if crop_margin else ReadyCrop("tight")


def _predict_config(input: Path | str, out: Path, options: Mapping[str, Any]) -> PredictConfig:
    """The ``PredictConfig`` ``agebench predict`` builds from the same options (a call's
    keywords, by name), checked as its click options check them."""
    check_choice("faces", options["faces"], PREDICT_FACES_MODES)
    check_range("min_face_size", options["min_face_size"], 12)
    check_range("max_faces", options["max_faces"], 1)
    check_range("crop_margin", options["crop_margin"], 0.0, 2.0)
    manifest = options["manifest"]
    return PredictConfig(
        input=input,
        out=out,
        model=str(options["model"]),
        manifest=Path(manifest) if manifest is not None else None,
        faces=options["faces"],
        execution=ExecutionConfig.from_options(options),
        cluster=ClusterConfig.from_options(options),
        detect=DetectConfig(min_face_size=options["min_face_size"], max_faces=options["max_faces"]),
        recursive=options.get("recursive", True),
        resume=options.get("resume", True),
        wait=options.get("wait", False),
        strict=options["strict"],
        save_raw=options.get("save_raw", False),
        ready_crop=_ready_crop(options["crop_margin"]),
    )


class AgeEstimator:
    """A loaded model with its face detector and crop policy; made by :func:`load`.

    Reusable and cheap per call: the model is loaded (and its weights verified) once.
    """

    def __init__(self, stack: PredictStack, config: PredictConfig) -> None:
        self._stack = stack
        self._config = config
        self._crops: FacePreparer | None = None

    @property
    def model(self) -> ModelRef:
        """The model's name and the sha256 of its weights (as every record names them)."""
        return ModelRef(self._stack.spec.name, self._stack.predictor.sha256)

    @property
    def spec(self) -> ModelSpec:
        """The model's resolved manifest."""
        return self._stack.spec

    @property
    def faces(self) -> str:
        return self._config.faces

    @property
    def execution(self) -> dict[str, Any]:
        """What runs the graph (provider, settings), as summaries record it."""
        return self._stack.predictor.execution

    def __repr__(self) -> str:
        return (
            f"AgeEstimator(model={self._stack.spec.name!r}, faces={self._config.faces!r}, "
            f"provider={self._stack.predictor.provider!r})"
        )

    def predict(self, images: ImageInput | Sequence[ImageInput]) -> list[Face] | list[list[Face]]:
        """The faces of one image (a list of :class:`Face`, empty when none is found), or of
        each image of a list (a list of such lists, in order).

        An image is a path, the bytes of an encoded file, a ``PIL.Image`` or an RGB uint8
        array (H, W, 3). Paths and bytes are decoded exactly as ``agebench predict`` decodes
        files (EXIF orientation, any colour mode to RGB, reduced JPEG decoding of large
        photos); a Pillow image gets the same orientation and colour conversion, at full
        size; an array is taken as upright RGB pixels. With ``faces="none"`` each image is
        one ready face crop. An image that cannot be decoded raises ``AgebenchError``.
        """
        single = not isinstance(images, list | tuple)
        # object: _job checks each input's type when it is run, naming a wrong one
        batch: list[object] = list(images) if isinstance(images, list | tuple) else [images]
        jobs = [_job(image, index, self._config.strict) for index, image in enumerate(batch)]
        prepared = self._run(self._stack.preparer, jobs)
        faces = [
            [Face.from_record(f) for f in item.faces] if item.status == "ok" else []
            for item in prepared
        ]
        return faces[0] if single else faces

    def predict_crops(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Ages of ready face crops: an RGB uint8 array (N, H, W, 3), or one crop (H, W, 3).

        The model's crop policy is applied to each crop as ``--faces none`` applies it to a
        file (its face box recovered from the load's ``crop_margin``, then the model's own
        margin and size), so a crop never needs resizing by hand. Returns the ages, shape (N,).
        """
        array = crops if isinstance(crops, np.ndarray) else np.stack([np.asarray(c) for c in crops])
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise ValueError(f"expected crops (N, H, W, 3) or one (H, W, 3), got {array.shape}")
        names = [f"<crop {i}>" for i in range(len(array))]
        jobs = [
            Job(Path(name), Path(name), pixels=decoded_array(crop, name))
            for name, crop in zip(names, array, strict=True)
        ]
        prepared = self._run(self._crop_preparer(), jobs)
        return np.array([item.faces[0]["age"] for item in prepared], dtype=np.float64)

    def _crop_preparer(self) -> FacePreparer:
        """The ``--faces none`` preparer for this model (the load's own when it is one)."""
        if self._stack.preparer.mode == "none":
            return self._stack.preparer
        if self._crops is None:
            config = self._config
            self._crops = PredictStack.around(
                self._stack.predictor,
                "none",
                config.execution,
                detect=config.detect,
                ready_crop=config.ready_crop,
                strict=config.strict,
            ).preparer
        return self._crops

    def _run(self, preparer: FacePreparer, jobs: list[Job]) -> list[PreparedImage]:
        """The jobs through the predict run's batched runner, in order; a failed image raises."""
        runner = BatchRunner(
            preparer,
            self._stack.predictor,
            batch_size=self._config.execution.batch_size,
            workers=min(self._stack.workers, max(1, len(jobs))),
        )
        done: list[PreparedImage] = []
        runner.run(jobs, done.append)
        failed = [item for item in done if item.status == "failed"]
        if failed:
            first = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise AgebenchError(f"{first.path}: {first.error}{more}")
        return done


def _job(image: object, index: int, strict: bool) -> Job:
    """One API input as the runner's job: a path is read as a file; bytes are decoded as the
    file's bytes; a Pillow image or an array is taken as decoded pixels."""
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return Job(path, Path(path.name))
    if isinstance(image, bytes | bytearray | memoryview):
        name = Path(f"<bytes {index}>")
        return Job(name, name, data=bytes(image))
    if isinstance(image, np.ndarray):
        name = Path(f"<array {index}>")
        return Job(name, name, pixels=decoded_array(image, name))
    from PIL import Image

    if isinstance(image, Image.Image):
        name = Path(f"<PIL.Image {index}>")
        return Job(name, name, pixels=decode_pillow(image, name, strict=strict))
    raise TypeError(
        f"image {index}: expected a path, bytes, a PIL.Image or an RGB uint8 array, "
        f"got {type(image).__name__}"
    )


def load(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: Device = "auto",
    faces: PredictFacesMode = "detect",
    min_face_size: int = 20,
    max_faces: int | None = None,
    backend: Backend = "auto",
    precision: Precision = "auto",
    tuning: Tuning = "auto",
    crop_margin: float = 0.0,
    strict: bool = False,
    manifest: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
) -> AgeEstimator:
    """Load a model for ages in memory: ``agebench.load().predict("photo.jpg")``.

    ``model`` is a registered name, a manifest ``.toml``, or an ``.onnx`` with ``manifest``.
    ``faces``: "detect" finds faces (MTCNN, ``min_face_size`` pixels and up, the
    ``max_faces`` largest); "none" takes every image as one ready face crop with
    ``crop_margin`` around the face (0: tight, like UTKFace chips). The other options are
    ``agebench predict``'s, with its defaults.
    """
    # the keywords by name (the signature is the documented API; the config is made once)
    config = _predict_config(Path(), Path(), locals())
    return AgeEstimator(PredictStack.for_predict(config), config)


def default_predict_out(source: str | os.PathLike[str]) -> Path:
    """``reports/predict-<NAME>``, NAME the input folder's name (a file's, less its suffix).

    Named after the input so that predicting on another folder from the same place starts a
    folder of its own instead of being refused by the first one's (a folder holds one run).
    A URI (``s3://bucket/photos/``) is named after its last path segment (or its bucket).
    """
    if is_uri(source):
        parts = urlsplit(str(source))
        name = parts.path.rstrip("/").rpartition("/")[2] or parts.netloc
        if PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS:  # one object named
            name = PurePosixPath(name).stem
        return Path("reports") / f"predict-{name or 'root'}"
    path = Path(source).resolve()
    name = path.stem if path.is_file() else path.name
    return Path("reports") / f"predict-{name or 'root'}"


def predict(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    manifest: str | os.PathLike[str] | None = None,
    faces: PredictFacesMode = "detect",
    min_face_size: int = 20,
    max_faces: int | None = None,
    crop_margin: float = 0.0,
    recursive: bool = True,
    resume: bool = True,
    save_raw: bool = False,
    wait: bool = False,
    strict: bool = False,
    batch_size: int | None = None,
    device: Device = "auto",
    workers: int | None = None,
    backend: Backend = "auto",
    precision: Precision = "auto",
    tuning: Tuning = "auto",
    executor: Executor = "local",
    ray_address: str | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float | None = None,
    inference_actors: int | None = None,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> PredictResult:
    """``agebench predict SOURCE --out OUT``: every image under ``source`` (a folder or one
    file, or a filesystem URI such as ``s3://bucket/prefix/``: README "URI inputs"), written
    to ``out`` (default :func:`default_predict_out`, the command's) and returned as a
    :class:`~agebench.api_results.PredictResult`.

    ``resume=False`` is ``--overwrite``. ``progress(event, amount)`` hears "total" and
    "advance"; ``notify(text)`` who a ``wait=True`` run waits for. ``executor="ray"`` runs
    the images on a Ray cluster (``ray_address``; None starts one on this machine) with the
    same outputs as the local executor (README "On a Ray cluster").
    """
    folder = Path(out) if out is not None else default_predict_out(source)
    # a URI stays the string given: Path() would turn s3://bucket into s3:/bucket
    given = source if isinstance(source, str) and is_uri(source) else Path(source)
    config = _predict_config(given, folder, locals())
    outcome = PredictRun(config).run(progress=progress, notify=notify)
    return PredictResult.read(Path(outcome.summary["out"]), outcome.summary)


def _eval_fields(call: Mapping[str, Any]) -> dict[str, Any]:
    """The ``EvalConfig`` fields among a call's keyword options (by name), checked as the
    commands check them, with the execution options made into one ``ExecutionConfig``."""
    from agebench.runner.evaluate import EvalConfig

    check_choice("faces", call["faces"], (None, *FACES_MODES))
    check_range("folds", call["folds"], 2)
    check_range("n_boot", call["n_boot"], 100)
    settings = {f.name: call[f.name] for f in fields(EvalConfig) if f.name in call}
    settings["execution"] = ExecutionConfig.from_options(call)
    settings["cluster"] = ClusterConfig.from_options(call)
    for key in ("root", "labels", "out_root", "out", "manifest"):
        if settings.get(key) is not None:
            settings[key] = Path(settings[key])
    settings["columns"] = dict(settings["columns"] or {})
    settings["options"] = dict(settings["options"] or {})
    return settings


def evaluate(
    bench: str,
    root: str | os.PathLike[str],
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    manifest: str | os.PathLike[str] | None = None,
    split: str | None = None,
    protocol: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    columns: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    folds: int = 5,
    seed: int = 0,
    faces: FacesMode | None = None,
    batch_size: int | None = None,
    device: Device = "auto",
    workers: int | None = None,
    out_root: str | os.PathLike[str] = "reports",
    out: str | os.PathLike[str] | None = None,
    under_age: float = 18.0,
    n_boot: int = 2000,
    reuse: bool = True,
    wait: bool = False,
    strict: bool = False,
    backend: Backend = "auto",
    precision: Precision = "auto",
    tuning: Tuning = "auto",
    executor: Executor = "local",
    ray_address: str | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float | None = None,
    inference_actors: int | None = None,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> EvalResult:
    """``agebench eval --bench BENCH --root ROOT --model MODEL``: score a model on a
    benchmark laid out as its authors publish it; returns an
    :class:`~agebench.api_results.EvalResult` (metrics per target, counts, report path).

    ``columns`` and ``options`` are the ``--column`` and ``--option`` pairs as a mapping;
    ``n_boot`` is ``--bootstrap``; a finished run of the same model on the same data is
    reused (``reuse=False`` is ``--no-reuse``).
    """
    from agebench.runner.evaluate import EvalConfig, EvalRun

    settings = _eval_fields(locals())
    config = EvalConfig(**{**settings, "model": str(model)})
    outcome = EvalRun(config).run(progress=progress, notify=notify)
    return EvalResult.read(outcome.out.resolve(), outcome.summary, reused=outcome.reused)


def compare(
    models_or_runs: Sequence[str | os.PathLike[str]],
    *,
    bench: str | None = None,
    root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    protocol: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    columns: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    faces: FacesMode | None = None,
    folds: int = 5,
    seed: int = 0,
    batch_size: int | None = None,
    device: Device = "auto",
    workers: int | None = None,
    backend: Backend = "auto",
    precision: Precision = "auto",
    tuning: Tuning = "auto",
    executor: Executor = "local",
    ray_address: str | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float | None = None,
    inference_actors: int | None = None,
    out_root: str | os.PathLike[str] = "reports",
    n_boot: int = 2000,
    alpha: float = 0.05,
    target: str | None = None,
    progress: Callable[[str, str, int], None] | None = None,
) -> CompareResult:
    """``agebench compare MODELS_OR_RUNS...``: models (run on ``bench`` at ``root``, reusing
    finished evals) and finished eval folders, in any mix, paired record by record; returns
    a :class:`~agebench.api_results.CompareResult` for ``OUT_ROOT/compare-<id>/``.

    ``progress(item, event, amount)`` relays each model's eval progress.
    """
    from agebench.runner.compare import run_compare

    if isinstance(models_or_runs, str | os.PathLike):
        raise TypeError("models_or_runs: expected a list of models or run folders, got one")
    check_range("alpha", alpha, 0.0, 1.0)
    # every model's eval: these options' EvalConfig fields, each model added by run_compare
    eval_kwargs = _eval_fields(locals())
    outcome = run_compare(
        [os.fspath(item) for item in models_or_runs],
        eval_kwargs if bench or root else None,
        Path(out_root),
        progress,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        target=target,
    )
    return CompareResult.read(outcome.out.resolve(), outcome.comparison, outcome.reused)


def train(
    bench: str,
    root: str | os.PathLike[str],
    *,
    backbone: str,
    loss: str,
    name: str,
    protocol: str | None = None,
    split: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    columns: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    faces: FacesMode | None = None,
    folds: int = 5,
    only_folds: Sequence[str] = (),
    seed: int = 0,
    like: str | None = None,
    loss_options: Mapping[str, Any] | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 5,
    device: str = "auto",
    threads: int | None = None,
    resume: bool = False,
    freeze_backbone: bool = False,
    quantize: Sequence[QuantizeTarget] = (),
    out_root: str | os.PathLike[str] = "reports",
    progress: Progress | None = None,
    on_epoch: Callable[[str, Any], None] | None = None,
) -> TrainResult:
    """``agebench train --bench BENCH --root ROOT --backbone MODEL --loss LOSS --name NAME``:
    one model per fold of ``protocol`` (``kfold``/``lopo``; None: one model on ``split``),
    each exported through the conversion gate and registered as ``NAME-fold{k}`` (``NAME``);
    returns the run folder ``OUT_ROOT/train/NAME``, the model names and each fold's best
    validation MAE. ``progress(event, amount)`` hears "total" and "advance" (batches);
    ``on_epoch(fold, metrics)`` each finished epoch.
    """
    from agebench.training.run import TrainConfig, run_training

    check_choice("faces", faces, (None, *FACES_MODES))
    check_choice("device", device, ("auto", "cpu", "cuda"))
    check_range("folds", folds, 2)
    check_range("epochs", epochs, 1)
    check_range("batch_size", batch_size, 1)
    check_range("patience", patience, 1)
    for variant in quantize:
        check_choice("quantize", variant, QUANTIZE_TARGETS)
    config = TrainConfig(
        bench=bench,
        root=Path(root),
        backbone=backbone,
        loss=loss,
        name=name,
        protocol=protocol,
        split=split,
        labels=Path(labels) if labels is not None else None,
        columns=dict(columns or {}),
        options=dict(options or {}),
        faces=faces,
        folds=folds,
        only_folds=tuple(only_folds),
        like=like,
        loss_options=dict(loss_options or {}),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        device=device,
        threads=threads,
        resume=resume,
        freeze_backbone=freeze_backbone,
        quantize=tuple(quantize),
        out_root=Path(out_root),
    )
    return run_training(config, progress=progress, on_epoch=on_epoch)


__all__ = [
    "AgeEstimator",
    "Face",
    "ImageInput",
    "compare",
    "default_predict_out",
    "evaluate",
    "load",
    "predict",
    "train",
]
