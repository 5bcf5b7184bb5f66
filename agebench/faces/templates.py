"""Named 5-point face templates, in the order MTCNN gives its landmarks.

Order: left eye centre, right eye centre (as seen in the image), nose tip, left mouth corner,
right mouth corner. Coordinates are fractions of the template's square (padding 0); a crop
with padding p maps a point t to (t + p) / (1 + 2p) of the output size, as dlib does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agebench.core.registry import Registry


@dataclass(frozen=True)
class Template:
    name: str
    points: tuple[tuple[float, float], ...]
    description: str

    def array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64)

    def destination(self, width: int, height: int, padding: float) -> np.ndarray:
        """Pixel coordinates of the template in a ``width`` x ``height`` crop."""
        unit = (self.array() + padding) / (1.0 + 2.0 * padding)
        return unit * np.array([width, height], dtype=np.float64)


TEMPLATES: Registry[Template] = Registry("face template")


def _register(template: Template) -> None:
    TEMPLATES.register(template.name, template)


_register(
    Template(
        name="dlib-chip-mtcnn",
        # Fitted by tools/fit_dlib_template.py: MTCNN landmarks of real faces mapped into the
        # frame of dlib's get_face_chip_details 5-point template (whose points are eye
        # corners and the base of the nose, which MTCNN does not give).
        # 98 images (the 48 shared UTKFace chips, the astronaut, and their mirrors), robust
        # mean, symmetrised; per-point spread 0.017 (eyes) to 0.05 (mouth) of the frame.
        points=(
            (0.2270, 0.2037),
            (0.7718, 0.2037),
            (0.4994, 0.5308),
            (0.2477, 0.7603),
            (0.7510, 0.7603),
        ),
        description="dlib face chip frame for MTCNN's 5 points (dlib-models age/gender nets)",
    )
)

_register(
    Template(
        name="arcface-112",
        # insightface's 112x112 reference points, divided by 112
        points=tuple(
            (x / 112.0, y / 112.0)
            for x, y in (
                (38.2946, 51.6963),
                (73.5318, 51.5014),
                (56.0252, 71.7366),
                (41.5493, 92.3655),
                (70.7299, 92.2041),
            )
        ),
        description="insightface/ArcFace 112x112 alignment",
    )
)
