"""Where MTCNN's P-, R- and O-Net weights come from, found without importing torch or
facenet-pytorch: the detector (``faces.detect``) and the nets (``faces.mtcnn_nets``) both ask
here, so neither imports the other to learn how to report a missing file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agebench.core.errors import AgebenchError

#: what to do when facenet-pytorch (its code, or only its weight files) is missing
FACENET_INSTALL_HINT = (
    "run scripts/setup.sh, or 'pip install --no-deps facenet-pytorch==2.6.0 requests tqdm'"
)

NETS = ("pnet", "rnet", "onet")


def package_folder(name: str) -> Path | None:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(name)
    folders = list(spec.submodule_search_locations or []) if spec else []
    return Path(folders[0]) if folders else None


def weight_files() -> list[Path]:
    """facenet-pytorch's ``pnet.pt``, ``rnet.pt`` and ``onet.pt``, in that order.

    Importing facenet_pytorch imports torchvision's models, and they pull in torch._dynamo:
    about a second of every detecting run's start, for three files of weights.
    """
    folder = package_folder("facenet_pytorch")
    files = [folder / "data" / f"{net}.pt" for net in NETS] if folder else []
    if not files or not all(f.is_file() for f in files):
        raise AgebenchError(
            f"face detection needs facenet-pytorch's MTCNN weights; {FACENET_INSTALL_HINT}"
        )
    return files
