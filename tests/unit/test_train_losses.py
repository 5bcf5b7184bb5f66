"""Each training loss against values computed by hand, and each head through the decoder it
exports to: the age a head is trained towards is the age the existing decoder reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agebench.core.errors import AgebenchError
from agebench.models.decoders import build_decoder
from agebench.training.heads import Head
from agebench.training.losses import LOSSES, TrainLoss, build_loss

LN2, LN3 = math.log(2.0), math.log(3.0)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_every_method_is_registered():
    assert LOSSES.names() == sorted(
        ["coral", "corn", "dex", "mean-variance", "prototype", "regression"]
    )


def test_bad_options_are_one_line_errors():
    with pytest.raises(AgebenchError, match="loss 'dex': bad options"):
        build_loss("dex", bins=3)
    with pytest.raises(AgebenchError, match="norm 'l3'"):
        build_loss("regression", norm="l3")
    with pytest.raises(AgebenchError, match="2 weights for 3 rank tasks"):
        build_loss("coral", min_age=0, max_age=3, importance=[1.0, 1.0])
    with pytest.raises(AgebenchError, match="unknown loss 'coarl'; did you mean 'coral'"):
        build_loss("coarl")


# softmax([0, 0, ln 2]) = (1/4, 1/4, 1/2) over ages 0, 1, 2
BINS = [[0.0, 0.0, LN2]]


def test_dex_is_cross_entropy_over_age_bins():
    loss = build_loss("dex", min_age=0, max_age=2)
    assert loss(t(BINS), t([2])).item() == pytest.approx(-math.log(1 / 2))
    assert loss(t(BINS), t([0])).item() == pytest.approx(-math.log(1 / 4))
    # a float age trains towards its nearest whole age; an age beyond the range to the last
    assert loss(t(BINS * 2), t([1.8, 7.0])).item() == pytest.approx(LN2)


def test_mean_variance_adds_the_papers_weighted_terms():
    loss = build_loss("mean-variance", min_age=0, max_age=2)
    # mean m = 0/4 + 1/4 + 2/2 = 1.25; y = 2: mean loss (0.75)^2 / 2 = 0.28125
    # variance = 1/4 * 1.25^2 + 1/4 * 0.25^2 + 1/2 * 0.75^2 = 0.6875; softmax loss ln 2
    expected = LN2 + 0.2 * 0.28125 + 0.05 * 0.6875
    assert loss(t(BINS), t([2])).item() == pytest.approx(expected)
    other = build_loss("mean-variance", min_age=0, max_age=2, lambda1=1.0, lambda2=0.0)
    assert other(t(BINS), t([2])).item() == pytest.approx(LN2 + 0.28125)


def test_coral_sums_rank_task_cross_entropies():
    loss = build_loss("coral", min_age=0, max_age=2)
    # age 1: levels (1, 0); task 0: -ln sigmoid(0) = ln 2; task 1: -ln(1 - sigmoid(ln 3)) = ln 4
    assert loss(t([[0.0, LN3]]), t([1])).item() == pytest.approx(3 * LN2)
    # age 2: levels (1, 1): ln 2 + -ln(3/4); the batch mean of the two
    both = loss(t([[0.0, LN3], [0.0, LN3]]), t([1, 2])).item()
    assert both == pytest.approx((3 * LN2 + LN2 - math.log(3 / 4)) / 2)
    weighted = build_loss("coral", min_age=0, max_age=2, importance=[2.0, 1.0])
    assert weighted(t([[0.0, LN3]]), t([1])).item() == pytest.approx(2 * LN2 + 2 * LN2)


def test_coral_start_label_shifts_the_ranks():
    loss = build_loss("coral", min_age=16, max_age=18)
    assert loss(t([[0.0, LN3]]), t([17])).item() == pytest.approx(3 * LN2)


def test_corn_trains_each_task_on_its_conditional_set():
    loss = build_loss("corn", min_age=0, max_age=2)
    # rank 0 with logits (ln 3, 0), rank 2 with (0, ln 3)
    # task 0 (all ranks > -1): rank 0 target 0: -ln(1 - 3/4) = ln 4; rank 2 target 1: ln 2
    # task 1 (ranks > 0 only): rank 2 target 1: -ln(3/4); rank 0 is not in its set
    expected = (2 * LN2 + LN2 - math.log(3 / 4)) / 3
    assert loss(t([[LN3, 0.0], [0.0, LN3]]), t([0, 2])).item() == pytest.approx(expected)


def test_regression_scales_the_age():
    ages = t([58, 58])
    output = t([[0.5], [0.25]])  # targets 58 / 116 = 0.5: errors 0 and 0.25
    assert build_loss("regression", norm="l1")(output, ages).item() == pytest.approx(0.125)
    assert build_loss("regression", norm="l2")(output, ages).item() == pytest.approx(0.03125)
    assert build_loss("regression", scale=58.0)(t([[1.0]]), t([29])).item() == pytest.approx(0.5)


def _prototype_logits(loss: TrainLoss) -> torch.Tensor:
    head = loss.head(2)
    with torch.no_grad():
        head.prototypes.copy_(t([[0, 0], [1, 1], [2, 0]]))  # type: ignore[operator]
    return head.logits(t([[1.0, 1.0]]))  # type: ignore[operator, no-any-return]


def test_prototype_logits_and_cross_entropy():
    loss = build_loss("prototype", min_age=0, max_age=2, embed_dim=2, temperature=1.0)
    logits = _prototype_logits(loss)
    # mean L1 distances of (1, 1) to the prototypes: 1, 0, 1
    assert logits[0].tolist() == pytest.approx([-1.0, 0.0, -1.0])
    ce = math.log(1 + 2 / math.e)  # -ln(e^0 / (e^-1 + e^0 + e^-1))
    assert loss(logits, t([1])).item() == pytest.approx(ce)
    half = build_loss("prototype", min_age=0, max_age=2, embed_dim=2, temperature=0.5)
    assert _prototype_logits(half)[0].tolist() == pytest.approx([-2.0, 0.0, -2.0])


def test_prototype_label_smoothing_goes_to_the_neighbouring_ages():
    loss = build_loss(
        "prototype", min_age=0, max_age=2, embed_dim=2, temperature=1.0, smoothing=0.2
    )
    logits = _prototype_logits(loss)
    ce = math.log(1 + 2 / math.e)
    # age 1: targets (0.1, 0.8, 0.1); -log p = (1 + ce, ce, 1 + ce)
    assert loss(logits, t([1])).item() == pytest.approx(ce + 0.2)
    # age 0 has one neighbour: targets (0.8, 0.2, 0); -log p = (1 + ce, ce, 1 + ce)
    assert loss(logits, t([0])).item() == pytest.approx(0.8 * (1 + ce) + 0.2 * ce)


def _decode(head: Head, features: torch.Tensor, tmp_path: Path) -> float:
    section = head.decoder_section().write(tmp_path)
    decoder = build_decoder(section["decoder"], section["params"], task="age", base_dir=tmp_path)
    with torch.no_grad():
        output = head.export_module()(features).numpy()
    return float(decoder.decode(output).fields["age"][0])


def _set(head: Head, weight: float = 0.0, **biases: torch.Tensor) -> None:
    with torch.no_grad():
        for name, param in head.named_parameters():
            if name.endswith("weight"):
                param.fill_(weight)
        for name, value in biases.items():
            dict(head.named_parameters())[name].copy_(value)


FEATURES = torch.ones(1, 4)


def test_bins_head_with_all_mass_on_30_decodes_to_30(tmp_path: Path):
    for name in ("dex", "mean-variance"):
        head = build_loss(name, min_age=0, max_age=100).head(4)
        bias = torch.full((101,), -50.0)
        bias[30] = 50.0
        _set(head, **{"linear.bias": bias})
        assert _decode(head, FEATURES, tmp_path) == pytest.approx(30.0, abs=1e-6)


def test_coral_and_corn_heads_decode_their_rank(tmp_path: Path):
    # ranks above 30 - 16 = 14 are certain below it, unlikely from it on: age 30
    certain = torch.where(torch.arange(84) < 14, 20.0, -20.0)
    coral = build_loss("coral", min_age=16, max_age=100).head(4)
    _set(coral, biases=certain)
    assert _decode(coral, FEATURES, tmp_path) == 30.0
    corn = build_loss("corn", min_age=16, max_age=100).head(4)
    _set(corn, **{"linear.bias": certain})
    assert _decode(corn, FEATURES, tmp_path) == 30.0


def test_regression_head_decodes_with_the_scale(tmp_path: Path):
    head = build_loss("regression", scale=116.0).head(4)
    _set(head, **{"linear.bias": torch.tensor([30 / 116])})
    assert _decode(head, FEATURES, tmp_path) == pytest.approx(30.0)


def test_prototype_head_exports_the_embedding_and_its_table(tmp_path: Path):
    head = build_loss("prototype", min_age=0, max_age=100, embed_dim=3).head(4)
    # the embedding is the bias alone, placed on the prototype of age 30
    _set(head, **{"embed.linear.bias": head.prototypes[30].detach().clone()})  # type: ignore[index]
    assert _decode(head, FEATURES, tmp_path) == 30.0
    with np.load(tmp_path / "prototypes.npz") as table:
        assert table["ages"].tolist() == list(range(101))
        assert table["prototypes"].shape == (101, 3)


@pytest.mark.parametrize(
    "name", ["dex", "mean-variance", "coral", "corn", "regression", "prototype"]
)
def test_training_a_head_by_its_loss_moves_its_decoded_age_to_the_label(name, tmp_path: Path):
    """The loss and the decoder agree: minimising the loss on one face aged 30 makes the
    exported output decode to 30."""
    torch.manual_seed(0)
    options = {"norm": "l2"} if name == "regression" else {"min_age": 0, "max_age": 60}
    loss = build_loss(name, **options)
    head = loss.head(8)
    features = torch.randn(1, 8)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        value = loss(head(features), torch.tensor([30]))
        value.backward()
        optimiser.step()
    assert _decode(head, features, tmp_path) == pytest.approx(30.0, abs=0.5)
