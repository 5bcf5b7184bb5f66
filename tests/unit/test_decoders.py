"""Each decoder against cases small enough to compute by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agebench.core.errors import IntegrityError, ManifestError
from agebench.models.decoders import DECODERS, build_decoder

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


# --- every registered decoder: the parameters are read from the registry at collection, so a
# new decoder is tested here without a line added, and fails until it has a hand case


@dataclass(frozen=True)
class HandCase:
    """One face's output small enough to decode by hand, and parameters the decoder refuses
    (each merged over ``params``) with the message that says why."""

    params: Mapping[str, Any]
    output: list[float]
    #: decoded field -> the value worked out by hand
    expected: Mapping[str, object]
    refused: tuple[tuple[Mapping[str, Any], str], ...]
    task: str = "age"
    #: ``.npz`` tables written beside the manifest first: file name -> arrays
    tables: Mapping[str, Mapping[str, list[Any]]] = field(default_factory=dict)


HAND_CASES: dict[str, HandCase] = {
    # 0.2 * 10 + 0.5 * 20 + 0.3 * 30 = 21
    "expectation": HandCase(
        {"bins": [10, 20, 30]},
        [0.2, 0.5, 0.3],
        {"age": 21.0},
        (({"bins": [5]}, "at least two bin values"), ({"activation": "relu"}, "activation")),
    ),
    # 0.25 * 116 + 1 = 30
    "regression": HandCase(
        {"scale": 116, "offset": 1},
        [0.25],
        {"age": 30.0},
        (({"clip": [10, 5]}, "low < high"),),
    ),
    # P(y > k) = .9, .7, .2: two ranks above 0.5, so 16 + 2
    "ordinal": HandCase(
        {"start": 16, "activation": "none"},
        [0.9, 0.7, 0.2],
        {"age": 18.0},
        (({"threshold": 1.5}, "threshold"), ({"mode": "ranknet"}, "mode")),
    ),
    # the middle group is the most probable: its midpoint (4 + 6) / 2
    "groups": HandCase(
        {"groups": [[0, 2], [4, 6], [8, 12]], "activation": "none"},
        [0.1, 0.7, 0.2],
        {"age": 5.0, "age_group": "4-6"},
        (({"groups": [[0, 2]]}, "at least two"), ({"labels": ["baby"]}, "1 labels for 3")),
    ),
    # mean L1 from (1.8, 1.9) to (0, 0) is 1.85, to (2, 2) 0.15: the second prototype's age
    "prototype": HandCase(
        {"prototypes": "protos.npz"},
        [1.8, 1.9],
        {"age": 40.0},
        (({"temperature": 0}, "temperature"), ({"prototypes": "none.npz"}, "does not exist")),
        tables={"protos.npz": {"ages": [20.0, 40.0], "prototypes": [[0.0, 0.0], [2.0, 2.0]]}},
    ),
    "classification": HandCase(
        {"labels": ["female", "male"], "activation": "none"},
        [0.3, 0.7],
        {"gender": "male", "gender_probability": 0.7},
        (({"labels": ["male"]}, "at least two"),),
        task="gender",
    ),
}


def _hand_case(kind: str, base_dir: Path) -> HandCase:
    if kind not in HAND_CASES:
        pytest.fail(f"decoder {kind!r} has no hand case in HAND_CASES")
    case = HAND_CASES[kind]
    for name, arrays in case.tables.items():
        np.savez(base_dir / name, **{key: np.asarray(value) for key, value in arrays.items()})
    return case


def test_every_registered_decoder_has_a_hand_case():
    assert set(HAND_CASES) == set(DECODERS.names())


@pytest.mark.parametrize("kind", DECODERS.names())
def test_every_decoder_decodes_by_hand(kind: str, tmp_path: Path):
    case = _hand_case(kind, tmp_path)
    result = decode(kind, [case.output], case.task, tmp_path, **case.params)
    for name, value in case.expected.items():
        expected = pytest.approx(value) if isinstance(value, float) else value
        assert result.fields[name][0] == expected, name


@pytest.mark.parametrize("kind", DECODERS.names())
def test_every_decoder_refuses_bad_params(kind: str, tmp_path: Path):
    """Bad values and unknown keys alike are one ManifestError naming the decoder."""
    case = _hand_case(kind, tmp_path)
    refused = [*case.refused, ({"no_such_param": 2}, "bad parameters")]
    for bad, message in refused:
        with pytest.raises(ManifestError, match=rf"decoder '{kind}'.*{message}"):
            build_decoder(kind, {**case.params, **bad}, task=case.task, base_dir=tmp_path)
