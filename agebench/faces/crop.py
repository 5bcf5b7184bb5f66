"""A model's crop policy: how a face is cut from a photo before the model sees it.

It is part of a model's manifest, but it is a face-geometry fact that alignment carries out,
so it lives here, below the model runtime: the manifest reads it, alignment executes it, and
neither faces nor alignment need to import the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CropPolicy = Literal["align", "box", "none"]
CROP_POLICIES = ("align", "box", "none")


@dataclass(frozen=True)
class CropSpec:
    """How a face is cut from a photo for this model.

    ``align``: similarity transform of the 5 detector landmarks onto ``template`` with
    dlib-style ``padding`` (a fraction of the template's extent added on each side).
    ``box``: the detector box grown by ``margin`` (a fraction of its size, each side),
    made square first when ``square``. ``none``: the whole image is the face.
    """

    policy: CropPolicy
    template: str | None = None
    padding: float = 0.0
    margin: float = 0.0
    square: bool = True
    #: "center": crop pixel c samples the photo at T^-1(c) (OpenCV's convention).
    #: "dlib": dlib's chip_details keeps only a rect and an angle, so pixel spacing is
    #: (size * s - 1) / (size - 1) about T^-1(size / 2); models trained on dlib chips want it.
    pixel_grid: Literal["center", "dlib"] = "center"
    notes: str = ""
