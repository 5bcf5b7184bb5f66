"""Where MTCNN's P-, R- and O-Net weights come from: three files shipped inside agebench
(``agebench/weights/mtcnn``, copied from facenet-pytorch 2.6.0, MIT, see the NOTICE there),
so detection works from a plain ``pip install`` with no download and no facenet-pytorch.

Found without importing torch: the detector (``faces.detect``) and the nets
(``faces.mtcnn_nets``) both ask here, so neither imports the other to report a bad file.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from agebench.core.errors import AgebenchError

#: the shipped weight files, beside this package's code in a checkout and in a wheel alike
MTCNN_DIR = Path(__file__).resolve().parents[1] / "weights" / "mtcnn"

#: each net's file and its sha256 (those of facenet-pytorch 2.6.0's ``data/``), in cascade order
WEIGHT_SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}


@cache
def weight_files() -> list[Path]:
    """``pnet.pt``, ``rnet.pt`` and ``onet.pt``, in that order, each checked against its sha256.

    ``torch.load`` reads them, so a damaged or replaced file must fail before that, as one
    clear error; checked once per process (about 2 MB, a few milliseconds).
    """
    files = []
    for net, expected in WEIGHT_SHA256.items():
        path = MTCNN_DIR / f"{net}.pt"
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as error:
            raise AgebenchError(
                f"{path}: MTCNN weights unreadable ({error.strerror}); agebench's installation "
                "is incomplete, reinstall it"
            ) from None
        if actual != expected:
            raise AgebenchError(
                f"{path}: sha256 {actual}, not the shipped {expected}; agebench's installation "
                "is damaged, reinstall it"
            )
        files.append(path)
    return files
