"""Speed of one training step (dlib-age-v1 backbone + a dex head, a batch of 16 real chips,
augmentation, forward, backward and an AdamW step, CPU, one thread) as a ratio to the forward
pass alone, measured in the same run: what training costs over inference, whatever the machine.

CI runs this once as a plain test (``--benchmark-disable``); to measure:
``.venv/bin/python -m pytest tests/benchmarks/test_train_step.py --benchmark-enable``.
No time is asserted: these machines are too noisy for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from agebench.training.backbone import Backbone, load_backbone
from agebench.training.batches import Batches, torch_threads
from agebench.training.losses import build_loss

BATCH = 16


@pytest.fixture(scope="module")
def backbone() -> Iterator[Backbone]:
    with torch_threads(1):
        yield load_backbone("dlib-age-v1")


def _crops(face_chips: list[Path], size: tuple[int, int]) -> np.ndarray:
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in face_chips[:BATCH]]
    return np.stack([cv2.resize(im, size[::-1], interpolation=cv2.INTER_AREA) for im in images])


def _best(call: Callable[[], object], rounds: int = 3) -> float:
    """The fastest of a few calls: the least noisy estimate of a call's cost."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.benchmark(group="train: one step, 16 crops")
def test_one_training_step(benchmark, backbone: Backbone, face_chips: list[Path]):
    crops = _crops(face_chips, tuple(backbone.input_size))
    assert crops.shape[0] == BATCH
    loss = build_loss("dex")
    torch.manual_seed(0)
    head = loss.head(backbone.dim)
    batches = Batches(backbone, crops, None, torch.device("cpu"), channels_last=True)
    backbone.to(memory_format=torch.channels_last)
    params = [*backbone.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    index = np.arange(BATCH)
    ages = torch.linspace(5, 70, BATCH)

    def step() -> float:
        backbone.train()
        head.train()
        value = loss(batches.forward(head, batches.input(index, generator)), ages)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        return float(value.detach())

    def forward() -> torch.Tensor:
        backbone.eval()
        head.eval()
        with torch.no_grad():
            return batches.forward(head, batches.input(index, None))

    with torch_threads(1):
        step()  # warm-up: first-call allocations
        forward_s, step_s = _best(forward), _best(step)
        value = benchmark(step)
    assert np.isfinite(value)
    benchmark.extra_info["forward_seconds"] = round(forward_s, 5)
    benchmark.extra_info["step_seconds"] = round(step_s, 5)
    benchmark.extra_info["step_over_forward"] = round(step_s / forward_s, 2)
    benchmark.extra_info["images_per_second"] = round(BATCH / step_s, 1)
