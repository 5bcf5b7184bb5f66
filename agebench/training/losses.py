"""The training losses of the methods agebench's users bring, by name, each with its head.

A loss is built from its options (``build_loss("coral", min_age=16)``), makes the head for a
feature width (``loss.head(D)``) and scores a batch: ``loss(head_output, ages) -> scalar``.
Ages may be integers or floats; the class-based losses (DEX, Mean-Variance, CORAL, CORN,
prototype) train towards the nearest whole age within ``[min_age, max_age]`` (ages outside are
clipped: a 90-year-old in a 0..80 model is its oldest class), the regression towards the age
itself. Every formula here is checked against hand arithmetic in tests/unit/test_train_losses.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from agebench.core.errors import AgebenchError
from agebench.core.registry import Registry
from agebench.training.heads import (
    BinsHead,
    CoralHead,
    CornHead,
    Head,
    PrototypeHead,
    RegressionHead,
)


class TrainLoss:
    """Base: a loss over one head's output. ``head`` makes that head for D-wide features."""

    name: str = ""

    def head(self, dim: int) -> Head:
        raise NotImplementedError

    def __call__(self, output: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


LOSSES: Registry[Callable[..., TrainLoss]] = Registry("loss")


def build_loss(name: str, **options: object) -> TrainLoss:
    """The loss ``name`` with its options; a bad option is one line naming it."""
    factory = LOSSES.get(name)
    try:
        return factory(**options)
    except TypeError as error:
        raise AgebenchError(f"loss {name!r}: bad options: {error}") from None
    except ValueError as error:
        raise AgebenchError(f"loss {name!r}: {error}") from None


def loss_names() -> list[str]:
    return LOSSES.names()


class _AgeClasses(TrainLoss):
    """Losses over whole-year classes ``min_age..max_age``."""

    def __init__(self, min_age: int = 0, max_age: int = 100) -> None:
        if int(max_age) <= int(min_age):
            raise ValueError(f"max_age {max_age} must exceed min_age {min_age}")
        self.min_age, self.max_age = int(min_age), int(max_age)

    @property
    def ages(self) -> np.ndarray:
        return np.arange(self.min_age, self.max_age + 1, dtype=np.float64)

    @property
    def num_classes(self) -> int:
        return self.max_age - self.min_age + 1

    def classes(self, ages: torch.Tensor) -> torch.Tensor:
        """Each age's class index (nearest whole age, clipped into the range)."""
        index = torch.round(ages.double()).long() - self.min_age
        return index.clamp(0, self.num_classes - 1)


@LOSSES.decorator("dex")
class DexLoss(_AgeClasses):
    """DEX (Rothe et al.): cross entropy over age bins; the age is the softmax's mean."""

    name = "dex"

    def head(self, dim: int) -> Head:
        return BinsHead(dim, self.ages)

    def __call__(self, output: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, self.classes(ages))


@LOSSES.decorator("mean-variance")
class MeanVarianceLoss(_AgeClasses):
    """Pan et al., CVPR 2018: softmax cross entropy + ``lambda1`` * mean loss + ``lambda2`` *
    variance loss, with the paper's weights 0.2 and 0.05 by default.

    Mean loss: ``(m - y)^2 / 2`` with m the distribution's mean; variance loss: its variance
    ``sum_j p_j (j - m)^2``; both averaged over the batch. y is the label itself (a float age
    stays a float here), while the cross entropy uses its class.
    """

    name = "mean-variance"

    def __init__(
        self, min_age: int = 0, max_age: int = 100, lambda1: float = 0.2, lambda2: float = 0.05
    ) -> None:
        super().__init__(min_age, max_age)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)

    def head(self, dim: int) -> Head:
        return BinsHead(dim, self.ages)

    def __call__(self, output: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(output, dim=1)
        values = torch.as_tensor(self.ages, dtype=probs.dtype, device=probs.device)
        mean = probs @ values
        target = ages.to(probs.dtype).clamp(self.min_age, self.max_age)
        mean_loss = ((mean - target) ** 2 / 2).mean()
        variance_loss = (probs * (values[None, :] - mean[:, None]) ** 2).sum(dim=1).mean()
        softmax_loss = F.cross_entropy(output, self.classes(ages))
        return softmax_loss + self.lambda1 * mean_loss + self.lambda2 * variance_loss


def _rank_levels(classes: torch.Tensor, tasks: int) -> torch.Tensor:
    """CORAL's binary targets: level k is 1 when the rank exceeds k (k = 0..tasks-1)."""
    return (classes[:, None] > torch.arange(tasks, device=classes.device)[None, :]).float()


@LOSSES.decorator("coral")
class CoralLoss(_AgeClasses):
    """CORAL (Cao, Mirjalili & Raschka 2020): binary cross entropy over the K-1 rank tasks
    ``y > k``, summed over tasks (each weighted by ``importance`` when given) and averaged over
    the batch. The start label is ``min_age`` (MORPH papers use 16)."""

    name = "coral"

    def __init__(
        self, min_age: int = 0, max_age: int = 100, importance: Sequence[float] | None = None
    ) -> None:
        super().__init__(min_age, max_age)
        if importance is not None and len(importance) != self.num_classes - 1:
            raise ValueError(
                f"importance has {len(importance)} weights for {self.num_classes - 1} rank tasks"
            )
        self.importance = None if importance is None else [float(w) for w in importance]

    def head(self, dim: int) -> Head:
        return CoralHead(dim, self.num_classes, self.min_age)

    def __call__(self, output: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        levels = _rank_levels(self.classes(ages).to(output.device), output.shape[1])
        terms = F.binary_cross_entropy_with_logits(output, levels, reduction="none")
        if self.importance is not None:
            terms = terms * torch.as_tensor(self.importance, dtype=terms.dtype, device=terms.device)
        return terms.sum(dim=1).mean()


@LOSSES.decorator("corn")
class CornLoss(_AgeClasses):
    """CORN (Shi, Cao & Raschka 2021): task k is trained only on the conditional training set
    of examples with rank > k-1, on the target rank > k; the summed binary cross entropies are
    divided by the number of (example, task) pairs used."""

    name = "corn"

    def head(self, dim: int) -> Head:
        return CornHead(dim, self.num_classes, self.min_age)

    def __call__(self, output: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        ranks = self.classes(ages).to(output.device)
        tasks = torch.arange(output.shape[1], device=output.device)
        in_set = ranks[:, None] > tasks[None, :] - 1  # the conditional training sets
        targets = (ranks[:, None] > tasks[None, :]).to(output.dtype)
        terms = F.binary_cross_entropy_with_logits(output, targets, reduction="none")
        return (terms * in_set).sum() / in_set.sum().clamp(min=1)


@LOSSES.decorator("regression")
class RegressionLoss(TrainLoss):
    """Direct regression of ``age / scale`` (L1 or L2), exported with the decoder's scale."""

    name = "regression"

    def __init__(self, norm: str = "l1", scale: float = 116.0) -> None:
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm {norm!r} is not 'l1' or 'l2'")
        if not scale > 0:
            raise ValueError(f"scale {scale} is not positive")
        self.norm, self.scale = norm, float(scale)

    def head(self, dim: int) -> Head:
        return RegressionHead(dim, self.scale)

    def __call__(self, output: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        target = ages.to(output.dtype).reshape(-1) / self.scale
        value = output.reshape(-1)
        if self.norm == "l1":
            return F.l1_loss(value, target)
        return F.mse_loss(value, target)


@LOSSES.decorator("prototype")
class PrototypeLoss(_AgeClasses):
    """Metric learning made stable: prototypes learned jointly with the embedding, trained by
    cross entropy over the logits ``-mean|e - p_a| / T`` (a bounded, well-posed objective,
    unlike margins on raw distances). ``smoothing`` moves that much of the target's mass to
    the neighbouring ages (a year either side, equally), since adjacent ages look alike."""

    name = "prototype"

    def __init__(
        self,
        min_age: int = 0,
        max_age: int = 100,
        embed_dim: int = 128,
        temperature: float = 0.1,
        smoothing: float = 0.0,
    ) -> None:
        super().__init__(min_age, max_age)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing {smoothing} is not in [0, 1)")
        if not temperature > 0:
            raise ValueError(f"temperature {temperature} is not positive")
        self.embed_dim, self.temperature = int(embed_dim), float(temperature)
        self.smoothing = float(smoothing)

    def head(self, dim: int) -> Head:
        return PrototypeHead(dim, self.ages, self.embed_dim, self.temperature)

    def targets(self, classes: torch.Tensor) -> torch.Tensor:
        """One-hot targets with ``smoothing`` spread over the existing neighbours."""
        eye = torch.eye(self.num_classes, device=classes.device)
        hot = eye[classes]
        if self.smoothing == 0.0:
            return hot
        near = torch.zeros_like(eye)
        index = torch.arange(self.num_classes - 1, device=classes.device)
        near[index, index + 1] = near[index + 1, index] = 1.0
        near = near / near.sum(dim=1, keepdim=True)
        return (1 - self.smoothing) * hot + self.smoothing * near[classes]

    def __call__(self, output: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        target = self.targets(self.classes(ages).to(output.device))
        return -(target * F.log_softmax(output, dim=1)).sum(dim=1).mean()
