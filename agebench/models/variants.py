"""The gates a quantized variant (``NAME-fp16``, ``NAME-int8``) must pass against its float32
parent, as data: ``agebench.build.quantize`` applies them when it builds a variant, and the
runtime reads them (the torch engine runs fp16 only where the variant passed the default
bound), so they live with the runtime, which never imports the build toolchain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class VariantGate:
    """How close a variant must stay to its float32 parent (the bounds and why: the table in
    ``agebench.build.quantize``)."""

    tolerance: float | None
    age_tolerance: float
    age_statistic: Literal["max", "mean"]
    gate_random: bool
    tolerance_relative: bool = False


GATES: dict[str, VariantGate] = {
    "fp16": VariantGate(1e-2, 0.1, "max", gate_random=True, tolerance_relative=True),
    "int8": VariantGate(None, 1.5, "mean", gate_random=False),
}
