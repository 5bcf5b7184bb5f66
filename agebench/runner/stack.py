"""The model, detector and face preparer of a run, built in one place from one recipe.

Predict, eval, the Python API (``agebench.load``), quantize's calibration and the bench all
prepare faces through :class:`PredictStack`, so they cut identical crops. A :class:`StackRecipe`
is what a stack is built from, as a plain picklable value: the Ray executor ships it to its
workers, which build their half of the same stack (the preparer in decode/detect workers, the
predictor in inference actors) from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agebench.benchmarks.spec import ReadyCrop
from agebench.core.config import ExecutionConfig
from agebench.core.errors import AgebenchError
from agebench.core.types import FacesMode
from agebench.faces.detect import FaceDetector
from agebench.models.catalog import resolve_model
from agebench.models.manifest import ModelSpec
from agebench.models.predictor import Predictor, available_cores
from agebench.runner.config import DetectConfig, PredictConfig
from agebench.runner.faces import FacePreparer, needs_detector
from agebench.runner.reconcile import plan_ready_crops

#: ready crops cut tight around the face (UTKFace chips): ``--faces none``'s default
TIGHT_CROPS = ReadyCrop(kind="tight")


def torch_device(device: str) -> str:
    import torch

    if device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise AgebenchError("--device cuda: torch sees no CUDA GPU for face detection")
    return "cpu"


def share_cores_with_workers(workers: int, cores: int | None = None) -> None:
    """One torch thread per detection worker: on 2 cores, 2 workers x 1 thread ran MTCNN
    20% faster than 2 x 2 (oversubscribed) and 60% faster than 1 x 2."""
    import torch

    torch.set_num_threads(max(1, (cores or available_cores()) // workers))


def build_predictor(
    spec: ModelSpec, execution: ExecutionConfig, *, verify: bool = True, threads: int | None = None
) -> Predictor:
    """The model's predictor as ``execution`` says (device, backend, precision, tuning): the one
    place that maps an ``ExecutionConfig`` onto a ``Predictor``. ``verify=False`` skips the
    weights' sha256 check, for a caller that has just checked them itself; ``threads``: the
    cores it may use (None: this machine's)."""
    return Predictor(
        spec,
        threads=threads,
        device=execution.device,
        tuning=execution.tuning,
        backend=execution.backend,
        precision=execution.precision,
        verify=verify,
    )


@dataclass(frozen=True)
class StackRecipe:
    """Everything a :class:`PredictStack` is built from (``spec``: the resolved model;
    ``ready_crop``: what the images are under ``--faces none``; ``source`` names them in the
    error when they are whole photos; ``detect``: the detector's settings)."""

    spec: ModelSpec
    faces: FacesMode
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    ready_crop: ReadyCrop = TIGHT_CROPS
    source: str = "input"
    strict: bool = False

    def preparer(self, workers: int, cores: int | None = None) -> tuple[FacePreparer, str | None]:
        """The face preparer (and where its detector runs, None without one) for ``workers``
        threads sharing ``cores`` (None: this machine's): no model is loaded."""
        spec = self.spec
        detector_device: str | None = None
        detector = None
        if needs_detector(self.faces, spec.crop):
            detector_device = torch_device(self.execution.device)
            share_cores_with_workers(workers, cores)
            detector = FaceDetector(
                device=detector_device,
                min_face_size=self.detect.min_face_size,
                max_side=self.detect.max_side,
                retry_pad=self.detect.retry_pad,
            )
        ready = (
            plan_ready_crops(self.ready_crop, spec.crop, bench=self.source)
            if self.faces == "none"
            else None
        )
        preparer = FacePreparer(
            spec.crop,
            (spec.input.height, spec.input.width),
            self.faces,
            self.detect,
            detector,
            ready,
            strict=self.strict,
        )
        return preparer, detector_device

    def crop_plan(self) -> str | None:
        """The sentence saying how ready crops become model input (None: not ``--faces
        none``)."""
        if self.faces != "none":
            return None
        return plan_ready_crops(self.ready_crop, self.spec.crop, bench=self.source).describe()


@dataclass
class PredictStack:
    """The model, detector and face preparer of a run, built in one place, so that predict,
    eval, the Python API (``agebench.load``), quantize's calibration and the bench prepare
    faces identically."""

    spec: ModelSpec
    predictor: Predictor
    preparer: FacePreparer
    workers: int
    #: where MTCNN runs (None: no detection)
    detector_device: str | None
    #: the sentence saying how ready crops become model input (None: not ``--faces none``)
    crop_plan: str | None
    #: what it was built from (the Ray executor's workers build theirs from it)
    recipe: StackRecipe

    @classmethod
    def build(
        cls,
        spec: ModelSpec,
        faces: FacesMode,
        execution: ExecutionConfig,
        *,
        detect: DetectConfig | None = None,
        ready_crop: ReadyCrop = TIGHT_CROPS,
        source: str = "input",
        strict: bool = False,
    ) -> PredictStack:
        """Load ``spec`` (its weights verified) and set up detection and cropping for
        ``faces``: a detector when the mode needs one (``needs_detector``), the ready-crop
        plan under ``--faces none`` (see :class:`StackRecipe` for the rest)."""
        return cls.around(
            build_predictor(spec, execution),
            faces,
            execution,
            detect=detect,
            ready_crop=ready_crop,
            source=source,
            strict=strict,
        )

    @classmethod
    def around(
        cls,
        predictor: Predictor,
        faces: FacesMode,
        execution: ExecutionConfig,
        *,
        detect: DetectConfig | None = None,
        ready_crop: ReadyCrop = TIGHT_CROPS,
        source: str = "input",
        strict: bool = False,
    ) -> PredictStack:
        """``build`` around a model loaded already: another faces mode over the same model
        (``AgeEstimator.predict_crops`` on a detecting load) costs no second load."""
        recipe = StackRecipe(
            predictor.spec,
            faces,
            execution,
            detect or DetectConfig(),
            ready_crop,
            source,
            strict,
        )
        workers = execution.workers or available_cores()
        preparer, detector_device = recipe.preparer(workers)
        return cls(
            recipe.spec,
            predictor,
            preparer,
            workers,
            detector_device,
            recipe.crop_plan(),
            recipe,
        )

    @classmethod
    def for_predict(cls, config: PredictConfig) -> PredictStack:
        """The stack of a predict run (or ``agebench.load``): the model resolved and verified,
        then set up as ``config`` says (its input and output folders are not looked at)."""
        return cls.build(
            resolve_model(config.model, config.manifest),
            config.faces,
            config.execution,
            detect=config.detect,
            ready_crop=config.ready_crop,
            strict=config.strict,
        )
