"""Models: manifests, the catalog, engines and the predictor.

``agebench.models.list()`` returns the installed models as data; this package's import stays
cheap (the catalog is imported when listed), so ``import agebench.models`` costs nothing.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from agebench.models.catalog import ModelInfo


def list() -> builtins.list[ModelInfo]:
    """Every model this installation knows, as :class:`~agebench.models.catalog.ModelInfo`
    (what ``agebench models list`` prints), registered ones first, then pullable ones."""
    from agebench.models.catalog import model_infos

    return model_infos()
