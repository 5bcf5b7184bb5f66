"""Paired statistics checked against values computed independently here: scipy.stats, plain
Python loops and hand-worked small cases."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scipy import stats as scipy_stats

from agebench.core import stats

# absolute errors of two models on the same nine records (odd n on purpose)
ERR_A = np.array([1.0, 2.5, 0.0, 4.0, 3.0, 1.5, 6.0, 2.0, 0.5])
ERR_B = np.array([2.0, 2.5, 1.0, 7.0, 2.0, 3.5, 9.0, 2.5, 1.5])


def _hand_rolled_bootstrap(a, b, n_boot, seed, confidence):
    """The documented procedure, one resample at a time."""
    rng = np.random.default_rng(seed)
    n = len(a)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        diffs.append(sum(abs(a[i]) for i in idx) / n - sum(abs(b[i]) for i in idx) / n)
    tail = (1 - confidence) / 2
    return [float(np.percentile(diffs, 100 * tail)), float(np.percentile(diffs, 100 - 100 * tail))]


def test_paired_bootstrap_matches_a_hand_rolled_loop():
    result = stats.paired_bootstrap_mae_diff(ERR_A, ERR_B, n_boot=500, seed=7, confidence=0.95)
    expected_diff = sum(ERR_A) / 9 - sum(ERR_B) / 9
    assert result["diff"] == pytest.approx(expected_diff, abs=1e-12)
    assert result["mae_a"] == pytest.approx(sum(ERR_A) / 9)
    assert result["n"] == 9 and result["n_boot"] == 500 and result["seed"] == 7
    ci = _hand_rolled_bootstrap(ERR_A, ERR_B, 500, 7, 0.95)
    assert result["ci"] == pytest.approx(ci, abs=1e-12)
    assert result["ci"][0] <= result["diff"] <= result["ci"][1]
    assert result["excludes_zero"] is (ci[1] < 0 or ci[0] > 0)


def test_paired_bootstrap_other_confidence_and_chunking(monkeypatch: pytest.MonkeyPatch):
    ci = _hand_rolled_bootstrap(ERR_A, ERR_B, 300, 3, 0.9)
    monkeypatch.setattr(stats, "_BOOT_CHUNK", 20)  # several chunks: the same stream
    result = stats.paired_bootstrap_mae_diff(ERR_A, ERR_B, n_boot=300, seed=3, confidence=0.9)
    assert result["ci"] == pytest.approx(ci, abs=1e-12)


def test_paired_bootstrap_uses_absolute_values_and_is_deterministic():
    signs = np.where(np.arange(9) % 2 == 0, 1.0, -1.0)
    signed = stats.paired_bootstrap_mae_diff(ERR_A * signs, -ERR_B, n_boot=200, seed=1)
    plain = stats.paired_bootstrap_mae_diff(ERR_A, ERR_B, n_boot=200, seed=1)
    assert signed == plain
    assert stats.paired_bootstrap_mae_diff(ERR_A, ERR_B, n_boot=200, seed=2)["ci"] != plain["ci"]


def test_paired_bootstrap_degenerate_inputs():
    empty = stats.paired_bootstrap_mae_diff([], [], n_boot=100, seed=0)
    assert empty["n"] == 0 and empty["diff"] is None and empty["ci"] is None
    same = stats.paired_bootstrap_mae_diff(ERR_A, ERR_A, n_boot=100, seed=0)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0] and same["excludes_zero"] is False
    with pytest.raises(ValueError, match="same length"):
        stats.paired_bootstrap_mae_diff([1.0, 2.0], [1.0], n_boot=10, seed=0)
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_bootstrap_mae_diff(ERR_A, ERR_B, n_boot=10, seed=0, confidence=1.5)


def test_resampled_means_of_many_models_equal_the_pairwise_bootstrap():
    c = ERR_A[::-1].copy()
    means = stats.bootstrap_resampled_means(np.vstack([ERR_A, ERR_B, c]), n_boot=400, seed=5)
    assert means.shape == (3, 400)
    pair = stats.paired_bootstrap_mae_diff(ERR_B, c, n_boot=400, seed=5)
    assert stats.percentile_ci(means[1] - means[2], 0.95) == pytest.approx(pair["ci"], abs=1e-12)


def test_wilcoxon_equals_scipy_small_and_large():
    small = stats.wilcoxon_abs_errors(ERR_A, ERR_B)
    expected = scipy_stats.wilcoxon(ERR_A, ERR_B)  # one tie (2.5, 2.5) is dropped
    assert small["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert small["statistic"] == pytest.approx(expected.statistic)
    assert small["n"] == 9 and small["n_nonzero"] == 8
    rng = np.random.default_rng(0)
    a = np.round(np.abs(rng.normal(5, 3, 120)))
    b = np.round(np.abs(rng.normal(5.8, 3, 120)))
    large = stats.wilcoxon_abs_errors(-a, b)  # signed errors: their absolute values are tested
    expected = scipy_stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    assert large["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert large["n_nonzero"] == int(np.count_nonzero(a - b))


def test_wilcoxon_all_zero_differences_and_nothing():
    same = stats.wilcoxon_abs_errors(ERR_A, -ERR_A)
    assert same["p"] == 1.0 and same["statistic"] == 0.0 and same["n_nonzero"] == 0
    assert same["note"] == "all differences are zero"
    empty = stats.wilcoxon_abs_errors([], [])
    assert empty["p"] is None and empty["statistic"] is None


def test_holm_known_case():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02, None, 0.04]) == pytest.approx([0.04, None, 0.04])
    assert stats.holm([0.2]) == [0.2] and stats.holm([]) == []


def test_closer_shares_hand_computed():
    shares = stats.closer_shares([1.0, 2.0, 3.0, 4.0], [-2.0, 2.0, 1.0, 5.0])
    assert shares == {
        "n": 4,
        "a_closer": 2,
        "b_closer": 1,
        "ties": 1,
        "share_a_closer": 0.5,
        "share_b_closer": 0.25,
        "share_ties": 0.25,
    }
    # 25.3 - 20.3 is not quite 5 in binary floating point, but it is a tie with 5
    assert stats.closer_shares([25.3 - 20.3], [5.0])["ties"] == 1
    assert stats.closer_shares([], [])["share_ties"] is None


def test_agreement_hand_computed():
    a, b = [10.0, 20.0, 30.0, 40.0], [12.0, 18.0, 33.0, 40.0]
    result = stats.agreement(a, b)
    d = [x - y for x, y in zip(a, b, strict=True)]  # -2, 2, -3, 0
    sd = statistics.stdev(d)
    assert result["n"] == 4
    assert result["mean_abs_diff"] == pytest.approx(7 / 4)
    assert result["ba_mean_diff"] == pytest.approx(-0.75)
    assert result["ba_sd_diff"] == pytest.approx(sd)
    assert result["ba_loa"] == pytest.approx([-0.75 - 1.96 * sd, -0.75 + 1.96 * sd])
    assert result["pearson_r"] == pytest.approx(statistics.correlation(a, b))
    constant = stats.agreement([5.0, 5.0, 5.0], [1.0, 2.0, 3.0])
    assert constant["pearson_r"] is None and constant["ba_mean_diff"] == pytest.approx(3.0)
    one = stats.agreement([5.0], [4.0])
    assert one["ba_loa"] is None and one["mean_abs_diff"] == 1.0
    assert stats.agreement([], [])["mean_abs_diff"] is None


def test_ranking_groups_and_adjacent_significance():
    maes = {"C": 5.0, "A": 3.0, "D": 5.05, "B": 3.1}
    p = {
        ("A", "B"): 0.5,
        ("A", "C"): 0.001,
        ("D", "A"): 0.001,  # either key order
        ("B", "C"): 0.01,
        ("B", "D"): 0.02,
        ("C", "D"): 0.7,
    }
    result = stats.ranking(maes, p, alpha=0.05)
    order = result["order"]
    assert [e["model"] for e in order] == ["A", "B", "C", "D"]
    assert [e["rank"] for e in order] == [1, 2, 3, 4]
    assert [e["significant_to_next"] for e in order] == [False, True, False, None]
    assert [e["p_to_next"] for e in order] == [0.5, 0.01, 0.7, None]
    assert result["groups"] == [
        {"letter": "a", "models": ["A", "B"]},
        {"letter": "b", "models": ["C", "D"]},
    ]
    assert [e["groups"] for e in order] == ["a", "a", "b", "b"]


def test_ranking_non_transitive_groups_overlap():
    maes = {"A": 1.0, "B": 2.0, "C": 3.0}
    p = {("A", "B"): 0.2, ("B", "C"): 0.3, ("A", "C"): 0.01}
    result = stats.ranking(maes, p, alpha=0.05)
    assert [g["models"] for g in result["groups"]] == [["A", "B"], ["B", "C"]]
    assert [e["groups"] for e in result["order"]] == ["a", "ab", "b"]


def test_ranking_all_distinct_missing_pvalues_and_ties():
    distinct = stats.ranking({"A": 1.0, "B": 2.0}, {("A", "B"): 0.001})
    assert [g["models"] for g in distinct["groups"]] == [["A"], ["B"]]
    unknown = stats.ranking({"B": 2.0, "A": 2.0, "N": None}, {})
    assert [e["model"] for e in unknown["order"]] == ["A", "B", "N"]  # ties by name, None last
    assert [g["models"] for g in unknown["groups"]] == [["A", "B", "N"]]


def test_letters_go_past_z():
    assert [stats._letter(i) for i in (0, 25, 26, 27, 51, 52)] == [
        "a",
        "z",
        "aa",
        "ab",
        "az",
        "ba",
    ]
