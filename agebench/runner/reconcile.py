"""Reconcile what a ready face crop is with the crop a model was trained on.

A benchmark of ready crops (``--faces none``) frames faces its own way: UTKFace chips are
tight, APPA-REAL's ``_face.jpg`` carries a 40% margin. Feeding either as is to a model trained
on another framing is unfair to it (WRN-16-8, trained with a 0.4 margin, scores MAE about
19.8 on tight UTKFace chips and 8.7 with its margin restored). So the face box is recovered
from the declared framing, then the model's own crop policy is applied to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agebench.benchmarks.spec import ReadyCrop
from agebench.core.errors import AgebenchError
from agebench.faces.align import box_matrix, resize_matrix
from agebench.faces.crop import CropSpec

TIGHT = ReadyCrop(kind="tight", description="the image is the face")


@dataclass(frozen=True)
class ReadyCropPlan:
    """How ready crops become model input: the photo -> crop transform and a sentence saying
    why, recorded in every summary."""

    ready: ReadyCrop
    crop: CropSpec

    def face_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        if self.ready.kind == "margin":
            scale = 1.0 + 2.0 * self.ready.margin
            bw, bh = width / scale, height / scale
            x1, y1 = (width - bw) / 2.0, (height - bh) / 2.0
            return (x1, y1, x1 + bw, y1 + bh)
        return (0.0, 0.0, float(width), float(height))

    def matrix(self, width: int, height: int, size: tuple[int, int]) -> np.ndarray:
        if self.crop.policy == "none":
            return resize_matrix((height, width), size)
        box = self.face_box(width, height)
        margin = self.crop.margin if self.crop.policy == "box" else 0.0
        return box_matrix(box, margin, self.crop.square, size)

    def decode_scale(self) -> float:
        """How much larger than the model input the whole image must decode, at least."""
        if self.ready.kind == "margin" and self.crop.policy != "none":
            return 1.0 + 2.0 * self.ready.margin
        return 1.0

    def describe(self) -> str:
        framing = (
            "tight face crops"
            if self.ready.kind == "tight"
            else f"face crops with a {self.ready.margin:g} margin"
        )
        if self.crop.policy == "none":
            return f"{framing}, resized whole (the model takes whole images)"
        if self.crop.policy == "box":
            return (
                f"{framing}: face box recovered, grown by the model's {self.crop.margin:g} margin "
                "(black outside the image)"
            )
        return (
            f"{framing}: face box recovered and used without margin; the model aligns to "
            f"template {self.crop.template!r}, which --faces detect reproduces exactly"
        )


def plan_ready_crops(
    ready: ReadyCrop, crop: CropSpec, *, bench: str = "input", crop_option: bool = False
) -> ReadyCropPlan:
    """How ``--faces none`` frames ready crops for the model; whole photos are refused.

    ``crop_option``: the benchmark takes ``--option crop=`` (the csv one), so the refusal
    names it: the images may well be crops the options have not said so yet.
    """
    if ready.kind == "photo" and crop_option:
        raise AgebenchError(
            f"{bench}: --faces none needs face crops, and the images count as whole photos "
            "unless --option crop= says otherwise: add --option crop=tight (or aligned, "
            "margin:<m>) if they are crops, else use --faces detect (or --faces box)"
        )
    if ready.kind == "photo":
        raise AgebenchError(
            f"{bench}: these images are whole photos, not face crops; use --faces detect "
            "(or --faces box where the benchmark gives face boxes)"
        )
    return ReadyCropPlan(ready, crop)
