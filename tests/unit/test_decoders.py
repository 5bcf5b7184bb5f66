"""Each decoder against cases small enough to compute by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agebench.core.errors import IntegrityError, ManifestError
from agebench.models.decoders import build_decoder

HERE = Path(".")


def decode(kind: str, output, task: str = "age", base_dir: Path = HERE, **params):
    decoder = build_decoder(kind, params, task=task, base_dir=base_dir)
    return decoder.decode(np.asarray(output, dtype=np.float32))


def test_expectation_mean_and_spread():
    # p = (0.5, 0.5) over bins (10, 20): mean 15, std 5
    result = decode("expectation", [[0.5, 0.5], [1.0, 0.0]], bins=[10, 20])
    assert result.fields["age"] == pytest.approx([15.0, 10.0])
    assert result.fields["age_std"] == pytest.approx([5.0, 0.0])
    assert result.raw["probabilities"].shape == (2, 2)


def test_expectation_softmax_and_generated_bins():
    # equal logits -> uniform over 0,1,2: mean 1, std sqrt(2/3)
    result = decode("expectation", [[3.0, 3.0, 3.0]], start=0, count=3, activation="softmax")
    assert result.fields["age"][0] == pytest.approx(1.0)
    assert result.fields["age_std"][0] == pytest.approx(math.sqrt(2 / 3))


def test_expectation_dlib_bins_first_bin_is_a_quarter_year():
    bins = [0.25, *range(1, 81)]
    probs = np.zeros((1, 81))
    probs[0, 0] = 1.0
    assert decode("expectation", probs, bins=bins).fields["age"][0] == pytest.approx(0.25)


def test_expectation_rejects_wrong_width():
    with pytest.raises(ValueError, match="expected 3"):
        decode("expectation", [[0.5, 0.5]], bins=[1, 2, 3])


def test_regression_scale_offset_and_clip():
    result = decode("regression", [[0.5], [0.25], [2.0]], scale=116, offset=1, clip=[0, 120])
    assert result.fields["age"] == pytest.approx([59.0, 30.0, 120.0])
    assert np.isnan(result.fields["age_std"]).all()


def test_coral_counts_probabilities_above_threshold_plus_start():
    # logits 2, 0.4, -1 -> sigmoid .881, .599, .269: two ranks above 0.5 -> 16 + 2 = 18
    logits = [[2.0, 0.4, -1.0]]
    result = decode("ordinal", logits, start=16)
    assert result.fields["age"][0] == 18
    assert result.raw["rank"][0] == 2
    assert result.raw["ranks_above_threshold"][0].tolist() == [1, 1, 0]
    # with threshold 0.6 only the first counts
    assert decode("ordinal", logits, start=16, threshold=0.6).fields["age"][0] == 17
    # and with 0.25 all three
    assert decode("ordinal", logits, start=16, threshold=0.25).fields["age"][0] == 19


def test_coral_spread_from_implied_distribution():
    # P(y>0)=1, P(y>1)=0.5 (probabilities given): pmf over {0,1,2} = (0, .5, .5)
    result = decode("ordinal", [[1.0, 0.5]], activation="none")
    assert result.fields["age_std"][0] == pytest.approx(0.5)


def test_corn_conditional_probabilities_become_cumulative():
    # conditional .9, .5, .9 -> cumulative .9, .45, .405: one rank above 0.5
    result = decode("ordinal", [[0.9, 0.5, 0.9]], mode="corn", activation="none")
    assert result.raw["rank_probabilities"][0] == pytest.approx([0.9, 0.45, 0.405])
    assert result.fields["age"][0] == 1


def test_ordinal_rejects_bad_params():
    with pytest.raises(ManifestError, match="threshold"):
        build_decoder("ordinal", {"threshold": 1.5}, task="age", base_dir=HERE)
    with pytest.raises(ManifestError, match="mode"):
        build_decoder("ordinal", {"mode": "ranknet"}, task="age", base_dir=HERE)


def test_age_groups_report_label_and_midpoint():
    groups = [[0, 2], [4, 6], [8, 12], [60, 100]]
    result = decode("groups", [[0.1, 0.2, 0.6, 0.1]], groups=groups, activation="none")
    assert result.fields["age_group"][0] == "8-12"
    assert result.fields["age"][0] == 10.0
    assert result.fields["age_group_probability"][0] == pytest.approx(0.6)
    labelled = decode(
        "groups", [[0, 0, 0, 5.0]], groups=groups, labels=["baby", "child", "teen", "senior"]
    )
    assert labelled.fields["age_group"][0] == "senior"
    assert labelled.fields["age"][0] == 80.0


def test_prototype_nearest_by_mean_l1(tmp_path: Path):
    np.savez(
        tmp_path / "protos.npz",
        ages=np.array([10.0, 30.0, 50.0]),
        prototypes=np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 4.0]]),
    )
    # embedding (1, 2): mean L1 to protos = (1.5, 0.5, 1.5) -> age 30
    result = decode("prototype", [[1.0, 2.0]], base_dir=tmp_path, prototypes="protos.npz")
    assert result.fields["age"][0] == 30.0
    assert result.raw["distances"][0] == pytest.approx([1.5, 0.5, 1.5])
    # softmax(-d) weights are symmetric around 30: std = sqrt(2 w_out * 400)
    w = np.exp([-1.5, -0.5, -1.5])
    w /= w.sum()
    assert result.fields["age_std"][0] == pytest.approx(math.sqrt(2 * w[0] * 400))


def test_prototype_table_checked_at_load(tmp_path: Path):
    np.savez(tmp_path / "bad.npz", ages=np.array([1.0, 2.0]), prototypes=np.zeros((3, 2)))
    with pytest.raises(ManifestError, match="len\\(ages\\)"):
        build_decoder("prototype", {"prototypes": "bad.npz"}, task="age", base_dir=tmp_path)
    with pytest.raises(IntegrityError, match="sha256"):
        np.savez(tmp_path / "ok.npz", ages=np.array([1.0]), prototypes=np.zeros((1, 2)))
        build_decoder(
            "prototype", {"prototypes": "ok.npz", "sha256": "0" * 64}, task="age", base_dir=tmp_path
        )


def test_gender_head_is_a_classification():
    result = decode(
        "classification", [[0.2, 0.8]], task="gender", labels=["female", "male"], activation="none"
    )
    assert result.fields["gender"][0] == "male"
    assert result.fields["gender_probability"][0] == pytest.approx(0.8)


def test_unknown_decoder_suggests_close_name():
    with pytest.raises(Exception, match="did you mean 'ordinal'"):
        build_decoder("ordinl", {}, task="age", base_dir=HERE)


def test_unknown_parameter_is_a_manifest_error():
    with pytest.raises(ManifestError, match="bad parameters"):
        build_decoder("regression", {"scael": 2}, task="age", base_dir=HERE)
