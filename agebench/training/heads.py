"""The trainable heads that replace a backbone's own, and the manifest decoder each exports to.

A head maps a feature vector (N, D) to what its loss trains. What the exported ONNX graph
outputs must be exactly what an existing decoder (``agebench.models.decoders``) reads, so each
head says which ``[decoder]`` section it exports with: a trained model is then evaluated by
the same code as every other model, never by training-only decoding. For most heads the
training output is the exported output (logits, read with the decoder's activation); the
prototype head trains on distances to its prototypes but exports the embedding, with the
learned prototypes as the decoder's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agebench.core.atomic import write_file_atomic

PROTOTYPE_TABLE = "prototypes.npz"


@dataclass(frozen=True)
class DecoderSection:
    """A manifest head's ``decoder`` and ``params``, plus tables (``.npz``) it references."""

    decoder: str
    params: Mapping[str, Any]
    #: file name (beside the model) -> arrays of an ``.npz`` the decoder loads
    tables: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)

    def write(self, directory: Path) -> dict[str, Any]:
        """Write the tables into ``directory`` (atomically) and return the manifest's
        ``[[heads]]`` fields ``decoder`` and ``params``, with each table's sha256 pinned."""
        from agebench.models.hashing import sha256_file

        params = dict(self.params)
        for name, arrays in self.tables.items():
            path = directory / name
            write_file_atomic(path, partial(_save_npz, arrays=arrays))
            if params.get("prototypes") == name:
                params["sha256"] = sha256_file(path)
        return {"decoder": self.decoder, "params": params}


def _save_npz(path: Path, *, arrays: Mapping[str, np.ndarray]) -> None:
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    with open(path, "wb") as out:  # a file object: np.savez would append ".npz" to a name
        np.savez(out, **named)


class Head(nn.Module):
    """Base: ``forward`` gives the training output; ``export_module`` the graph's output."""

    def export_module(self) -> nn.Module:
        """The module whose output the exported graph ends with (the head itself by default)."""
        return self

    def decoder_section(self) -> DecoderSection:
        raise NotImplementedError


class BinsHead(Head):
    """DEX and Mean-Variance: one logit per age bin; the decoder takes the softmax's mean."""

    def __init__(self, dim: int, ages: np.ndarray) -> None:
        super().__init__()
        self.ages = [float(a) for a in ages]
        self.linear = nn.Linear(dim, len(self.ages))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(features)
        return out

    def decoder_section(self) -> DecoderSection:
        return DecoderSection("expectation", {"bins": self.ages, "activation": "softmax"})


class CoralHead(Head):
    """CORAL (Cao et al. 2020): one weight vector shared by the K-1 rank tasks, one bias each,
    so the rank logits cannot cross (rank-monotonic by construction)."""

    def __init__(self, dim: int, num_ranks: int, start: float) -> None:
        super().__init__()
        self.start = float(start)
        self.num_ranks = int(num_ranks)
        self.weight = nn.Linear(dim, 1, bias=False)
        # Cao et al. initialise the biases descending, so the first fit is already ordered
        self.biases = nn.Parameter(torch.arange(num_ranks - 1, 0, -1).float() / (num_ranks - 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.weight(features) + self.biases

    def decoder_section(self) -> DecoderSection:
        params = {"mode": "coral", "start": self.start, "num_ranks": self.num_ranks}
        return DecoderSection("ordinal", {**params, "activation": "sigmoid"})


class CornHead(Head):
    """CORN (Shi et al. 2021): K-1 unconstrained logits of P(y > k | y > k-1)."""

    def __init__(self, dim: int, num_ranks: int, start: float) -> None:
        super().__init__()
        self.start = float(start)
        self.num_ranks = int(num_ranks)
        self.linear = nn.Linear(dim, num_ranks - 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(features)
        return out

    def decoder_section(self) -> DecoderSection:
        params = {"mode": "corn", "start": self.start, "num_ranks": self.num_ranks}
        return DecoderSection("ordinal", {**params, "activation": "sigmoid"})


class RegressionHead(Head):
    """One value, the age divided by ``scale`` (UTKFace models: age / 116)."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.linear = nn.Linear(dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(features)
        return out

    def decoder_section(self) -> DecoderSection:
        return DecoderSection("regression", {"scale": self.scale, "offset": 0.0})


class Embedding(nn.Module):
    """The prototype head's exported part: features -> embedding."""

    def __init__(self, dim: int, embed_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(features)
        return out


class PrototypeHead(Head):
    """Learned per-age prototypes: logits ``-mean|e - p_a| / T`` for a softmax over ages.

    The decoder reads the embedding and the prototype table; the nearest prototype by mean L1
    distance is the largest logit, so decoding and training agree.
    """

    def __init__(self, dim: int, ages: np.ndarray, embed_dim: int, temperature: float) -> None:
        super().__init__()
        self.ages = np.asarray(ages, dtype=np.float64)
        self.temperature = float(temperature)
        self.embed = Embedding(dim, embed_dim)
        self.prototypes = nn.Parameter(0.1 * torch.randn(len(self.ages), embed_dim))

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        distance = (embedding[:, None, :] - self.prototypes[None, :, :]).abs().mean(dim=2)
        return -distance / self.temperature

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(self.embed(features))

    def export_module(self) -> nn.Module:
        return self.embed

    def decoder_section(self) -> DecoderSection:
        table = {
            "ages": self.ages,
            "prototypes": self.prototypes.detach().cpu().double().numpy(),
        }
        params = {"prototypes": PROTOTYPE_TABLE, "temperature": self.temperature}
        return DecoderSection("prototype", params, {PROTOTYPE_TABLE: table})
