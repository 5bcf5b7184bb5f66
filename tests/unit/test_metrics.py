"""Every metric against values computed independently, by hand or with plain Python.

The expected numbers are worked out in the comments (or with ``statistics``, ``math`` and
``scipy.stats``), never with agebench's own helpers, so a wrong definition cannot agree with
itself.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import numpy as np
import pytest
from scipy import stats

from agebench.core.metrics import compute_metrics
from agebench.core.metrics.breakdowns import DEFAULT_BANDS
from agebench.core.metrics.groups import compute_group_metrics, group_of_age, predicted_group

ADIENCE = [(0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100)]


def row(
    age: float | None,
    pred: float | None,
    status: str = "ok",
    **extra: Any,
) -> dict[str, Any]:
    """A prediction row as predictions.jsonl holds it (unset fields at their empty values)."""
    base: dict[str, Any] = {
        "image": f"img-{age}-{pred}.jpg",
        "status": status,
        "error": None if status == "ok" else status,
        "age": age,
        "targets": {},
        "age_std": None,
        "age_group": None,
        "fold": None,
        "subject": None,
        "split": None,
        "attributes": {},
        "pred_age": pred,
        "pred_std": None,
        "pred_group": None,
    }
    return base | extra


def assert_json_clean(result: dict[str, Any]) -> None:
    """JSON-serialisable without NaN, and unchanged by a round trip."""
    assert json.loads(json.dumps(result, allow_nan=False)) == result


# Errors (pred - true) of the four scored rows: +5, -2, 0, +11; |err| = 5, 2, 0, 11.
BASIC = [
    row(20, 25),
    row(30, 28),
    row(40, 40),
    row(10, 21),
    row(50, None, "no_face"),
    row(60, None, "missing"),  # label row whose image is absent: counts, as a failure
    row(None, 33),  # no label for this target: not a row of it at all
]


def test_counts_use_label_rows_as_denominator():
    m = compute_metrics(BASIC, n_boot=50)
    assert m["n_rows"] == 6  # the missing image counts; the unlabelled row does not
    assert m["n_scored"] == 4
    assert m["n_failed"] == {"no_face": 1, "failed": 0, "missing": 1}
    assert m["coverage"] == pytest.approx(4 / 6)
    assert_json_clean(m)


def test_error_statistics_by_hand():
    m = compute_metrics(BASIC, n_boot=50)
    assert m["mae"] == pytest.approx((5 + 2 + 0 + 11) / 4)  # 4.5; failures not in the MAE
    assert m["rmse"] == pytest.approx(math.sqrt((25 + 4 + 0 + 121) / 4))
    assert m["bias"] == pytest.approx((5 - 2 + 0 + 11) / 4)  # 3.5
    assert m["median_ae"] == pytest.approx((2 + 5) / 2)  # sorted 0, 2, 5, 11
    assert m["median_ae"] == pytest.approx(statistics.median([5, 2, 0, 11]))


def test_cumulative_score_by_hand_and_boundary_counts():
    m = compute_metrics(BASIC, n_boot=50)
    # |err| = 0, 2, 5, 11: CS@L = #(|err| <= L) / 4
    expected = {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3, 8: 3, 9: 3, 10: 3}
    assert m["cs"] == {str(k): v / 4 for k, v in expected.items()}
    assert m["cs5"] == 0.75  # the error of exactly 5 counts
    assert len(m["cs_curve"]) == 21
    assert m["cs_curve"][:11] == [v / 4 for v in expected.values()]
    assert m["cs_curve"][11:] == [1.0] * 10
    assert m["ce20"] == 0.0


def test_cs_boundary_survives_decimal_labels():
    assert 8.3 - 3.3 > 5  # 5.000000000000001 in binary floating point
    m = compute_metrics([row(3.3, 8.3), row(11.1, 16.1), row(30, 36)], n_boot=10)
    assert m["cs"]["5"] == pytest.approx(2 / 3)
    assert m["cs"]["4"] == 0.0
    assert m["cs"]["6"] == 1.0


def test_gross_error_rate_is_strictly_above_20_years():
    # |err| = 20 (not gross), 20.5 (gross), 25 (gross), 1 (not)
    m = compute_metrics([row(10, 30), row(50, 29.5), row(5, 30), row(40, 41)], n_boot=10)
    assert m["ce20"] == 0.5
    assert m["cs_curve"][20] == 0.5  # CS@20 + CE@20 = 1


def test_apparent_age_is_never_rounded():
    rows = [
        row(25, 25.0, targets={"apparent_age": 24.6}, age_std=3.0),
        row(30, 30.0, targets={"apparent_age": 9.6}, age_std=2.0),
    ]
    m = compute_metrics(rows, target="apparent_age", n_boot=10)
    assert m["mae"] == pytest.approx((0.4 + 20.4) / 2)
    assert m["bias"] == pytest.approx((0.4 + 20.4) / 2)
    bands = {b["band"]: b["n"] for b in m["by_band"]}
    assert bands["0-9"] == 1 and bands["20-29"] == 1  # 9.6 stays below 10
    assert compute_metrics(rows, n_boot=10)["mae"] == 0.0  # the real-age target is separate


def test_epsilon_error_by_hand():
    rows = [
        # mu 30, sigma 5, x 35: e = 1 - exp(-25 / 50)
        row(31, 35.0, targets={"apparent_age": 30.0}, age_std=5.0),
        # sigma 0: an exact hit scores 0, any miss 1
        row(20, 20.0, targets={"apparent_age": 20.0}, age_std=0.0),
        row(20, 21.0, targets={"apparent_age": 20.0}, age_std=0.0),
        # failures still count, scoring 1
        row(40, None, "missing", targets={"apparent_age": 40.0}, age_std=4.0),
        row(44, None, "no_face", targets={"apparent_age": 41.0}, age_std=4.0),
        # no label std: not part of the epsilon average
        row(50, 50.0, targets={"apparent_age": 50.0}),
    ]
    m = compute_metrics(rows, target="apparent_age", n_boot=10)
    assert m["n_epsilon"] == 5
    assert m["epsilon_error"] == pytest.approx((1 - math.exp(-0.5) + 0 + 1 + 1 + 1) / 5)
    # the real-age target has no spread of votes: no epsilon
    real = compute_metrics(rows, target="age", n_boot=10)
    assert real["epsilon_error"] is None and real["n_epsilon"] == 0


def test_epsilon_all_exact_hits_with_zero_sigma_is_zero():
    rows = [row(None, 20.0, targets={"apparent_age": 20.0}, age_std=0.0)] * 3
    m = compute_metrics(rows, target="apparent_age", n_boot=10)
    assert m["epsilon_error"] == 0.0 and m["n_epsilon"] == 3


def test_bootstrap_ci_contains_mae_and_is_reproducible():
    rng = np.random.default_rng(123)
    noise = rng.normal(0, 6, 60)
    rows = [row(float(a), float(a + e)) for a, e in zip(range(20, 80), noise, strict=True)]
    a = compute_metrics(rows, n_boot=500, seed=7)
    b = compute_metrics(rows, n_boot=500, seed=7)
    c = compute_metrics(rows, n_boot=500, seed=8)
    lo, hi = a["mae_ci"]
    assert lo < a["mae"] < hi
    assert a["mae_ci"] == b["mae_ci"]
    assert a["mae_ci"] != c["mae_ci"]
    assert (a["confidence"], a["n_boot"]) == (0.95, 500)


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(5)
    true = rng.uniform(10, 70, 80)
    pred = true + rng.normal(1, 7, 80)
    rows = [row(float(t), float(p)) for t, p in zip(true, pred, strict=True)]
    ours = compute_metrics(rows, n_boot=2000, seed=0)["mae_ci"]
    ref = stats.bootstrap(
        (np.abs(pred - true),),
        np.mean,
        n_resamples=2000,
        confidence_level=0.95,
        method="percentile",
        random_state=np.random.default_rng(99),
    ).confidence_interval
    sem = statistics.stdev(np.abs(pred - true)) / math.sqrt(80)
    # independent Monte Carlo estimates of the same percentiles: within half a standard error
    assert ours[0] == pytest.approx(ref.low, abs=0.5 * sem)
    assert ours[1] == pytest.approx(ref.high, abs=0.5 * sem)


def test_bootstrap_ci_on_a_two_point_sample():
    # |err| in {0, 10}: a resampled mean is 0 (p 1/4), 5 (p 1/2) or 10 (p 1/4), so the
    # 2.5th and 97.5th percentiles of 2000 resamples are 0 and 10.
    m = compute_metrics([row(20, 20), row(30, 40)], n_boot=2000, seed=0)
    assert m["mae_ci"] == [0.0, 10.0]
    # identical errors: no spread at all
    assert compute_metrics([row(20, 23), row(30, 27)], n_boot=100)["mae_ci"] == [3.0, 3.0]
    assert compute_metrics([row(20, 23)], n_boot=0)["mae_ci"] is None


def test_bands_by_true_age_half_open():
    rows = [row(5, 7), row(9.99, 5.99), row(10, 10), row(79.5, 70), row(80, 85), row(95, 80)]
    m = compute_metrics(rows, n_boot=10)
    bands = {b["band"]: b for b in m["by_band"]}
    assert list(bands) == [f"{lo}-{lo + 9}" for lo in range(0, 80, 10)] + ["80+"]
    assert len(DEFAULT_BANDS) == 9
    # 0-9: errors +2 and -4 -> MAE 3, bias -1
    assert bands["0-9"]["n"] == 2
    assert bands["0-9"]["mae"] == pytest.approx(3.0)
    assert bands["0-9"]["bias"] == pytest.approx(-1.0)
    assert (bands["0-9"]["low"], bands["0-9"]["high"]) == (0, 10)
    assert (bands["10-19"]["n"], bands["10-19"]["mae"]) == (1, 0.0)  # 10 opens the next band
    assert bands["20-29"] == {
        "band": "20-29",
        "low": 20,
        "high": 30,
        "n": 0,
        "mae": None,
        "bias": None,
    }
    assert (bands["70-79"]["mae"], bands["70-79"]["bias"]) == (9.5, -9.5)
    # 80+: errors +5 and -15 -> MAE 10, bias -5; open-ended
    assert bands["80+"]["high"] is None
    assert (bands["80+"]["n"], bands["80+"]["mae"], bands["80+"]["bias"]) == (2, 10.0, -5.0)


def test_attributes():
    rows = [
        row(20, 22, attributes={"gender": "F", "race": "0"}),  # +2
        row(30, 26, attributes={"gender": "F"}),  # -4
        row(40, 41, attributes={"gender": "M", "race": "1"}),  # +1
        row(50, None, "failed", attributes={"gender": "M"}),
        row(60, None, "no_face", attributes={"gender": "X"}),
    ]
    m = compute_metrics(rows, n_boot=10)
    assert m["by_attribute"] == {
        "gender": [
            {"value": "F", "n": 2, "mae": 3.0, "bias": -1.0},
            {"value": "M", "n": 1, "mae": 1.0, "bias": 1.0},
            {"value": "X", "n": 0, "mae": None, "bias": None},  # every image failed
        ],
        "race": [
            {"value": "0", "n": 1, "mae": 2.0, "bias": 2.0},
            {"value": "1", "n": 1, "mae": 1.0, "bias": 1.0},
        ],
    }


def test_folds_with_sample_std():
    rows = [
        row(20, 21, fold="1"),  # |err| 1
        row(30, 33, fold="1"),  # |err| 3 -> fold 1 MAE 2
        row(40, 44, fold="2"),  # fold 2 MAE 4
        row(50, 41, fold="10"),  # fold 10 MAE 9
        row(60, None, "failed", fold="3"),  # fold 3: nothing scored, left out of mean/std
    ]
    m = compute_metrics(rows, n_boot=10)
    assert m["by_fold"] == [
        {"fold": "1", "n": 2, "mae": 2.0},
        {"fold": "2", "n": 1, "mae": 4.0},
        {"fold": "3", "n": 0, "mae": None},
        {"fold": "10", "n": 1, "mae": 9.0},
    ]
    # mean 5; deviations -3, -1, 4; sum of squares 26 / (3 - 1) = 13
    assert m["fold_mae_mean"] == pytest.approx(5.0)
    assert m["fold_mae_std"] == pytest.approx(math.sqrt(13))
    assert m["fold_mae_std"] == pytest.approx(float(np.std([2, 4, 9], ddof=1)))
    # the pooled MAE is the headline: (1 + 3 + 4 + 9) / 4, not the mean of fold MAEs
    assert m["mae"] == pytest.approx(17 / 4)


def test_one_fold_has_no_std_and_no_folds_no_table():
    m = compute_metrics([row(20, 22, fold="a"), row(30, 30, fold="a")], n_boot=10)
    assert m["by_fold"] == [{"fold": "a", "n": 2, "mae": 1.0}]
    assert (m["fold_mae_mean"], m["fold_mae_std"]) == (1.0, None)
    plain = compute_metrics([row(20, 22)], n_boot=10)
    assert (plain["by_fold"], plain["fold_mae_mean"], plain["fold_mae_std"]) == ([], None, None)


def test_under_18_rates_on_a_2x2_case():
    rows = [
        row(10, 12),  # minor as minor
        row(15, 17.9),  # minor as minor
        row(17, 18),  # minor as adult: 18 is not under 18
        row(18, 17),  # adult as minor: 18 is an adult
        row(30, 25),  # adult as adult
        row(40, 45),  # adult as adult
        row(25, 30),  # adult as adult
        row(12, None, "no_face"),  # not scored: not in the table
    ]
    u = compute_metrics(rows, n_boot=10)["under_age"]
    tp, fn, fp, tn = 2, 1, 1, 3
    assert (u["minor_as_minor"], u["minor_as_adult"]) == (tp, fn)
    assert (u["adult_as_minor"], u["adult_as_adult"]) == (fp, tn)
    assert (u["threshold"], u["n_minors"], u["n_adults"]) == (18.0, 3, 4)
    assert u["precision"] == pytest.approx(2 / 3)
    assert u["recall"] == pytest.approx(2 / 3)
    assert u["false_accept_rate"] == pytest.approx(1 / 3)
    assert u["false_reject_rate"] == pytest.approx(1 / 4)


def test_under_age_threshold_and_empty_classes():
    rows = [row(30, 25), row(40, 15)]  # adults only; one predicted minor
    u = compute_metrics(rows, under_age=21, n_boot=10)["under_age"]
    assert (u["threshold"], u["n_minors"], u["n_adults"]) == (21, 0, 2)
    assert u["recall"] is None and u["false_accept_rate"] is None
    assert u["precision"] == 0.0  # the one predicted minor was an adult
    assert u["false_reject_rate"] == 0.5


def test_ok_row_without_prediction_is_a_failure():
    m = compute_metrics([row(20, None), row(30, float("nan")), row(40, 41)], n_boot=10)
    assert (m["n_rows"], m["n_scored"]) == (3, 1)
    assert m["n_failed"]["no_prediction"] == 2
    assert m["mae"] == 1.0


def test_empty_inputs_give_none_not_crashes():
    for rows in ([], [row(None, 20)], [row(20, None, "failed"), row(30, None, "missing")]):
        m = compute_metrics(rows)
        assert_json_clean(m)
        assert m["n_scored"] == 0
        for key in ("mae", "mae_ci", "rmse", "bias", "median_ae", "cs5", "ce20"):
            assert m[key] is None, key
        assert set(m["cs"].values()) == {None} and set(m["cs_curve"]) == {None}
        assert all(b["n"] == 0 and b["mae"] is None for b in m["by_band"])
        u = m["under_age"]
        assert [u[k] for k in ("precision", "recall", "false_accept_rate")] == [None] * 3
    assert compute_metrics([])["coverage"] is None
    assert compute_metrics([row(20, None, "failed")])["coverage"] == 0.0
    g = compute_group_metrics([], ADIENCE)
    assert_json_clean(g)
    assert (g["n_rows"], g["accuracy"], g["one_off"], g["mae_midpoint"]) == (0, None, None, None)
    assert g["coverage"] is None and g["accuracy_ci"] is None


# --- age groups ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "index"),
    [
        (1, 0),
        (2, 0),  # inclusive upper end
        (2.5, 0),  # gap 2..4: 0.5 from 0-2, 1.5 from 4-6
        (3, 0),  # exactly between: the younger group
        (3.5, 1),
        (13, 2),  # gap 12..15: 1 from 8-12, 2 from 15-20
        (14, 3),
        (35, 4),  # tie between 25-32 and 38-43: the younger
        (36.5, 5),
        (-1, 0),  # outside every group: the nearest
        (120, 7),
    ],
)
def test_group_of_age_in_gaps(age: float, index: int):
    assert group_of_age(age, ADIENCE) == index


def test_predicted_group_prefers_pred_group():
    groups = [(float(lo), float(hi)) for lo, hi in ADIENCE]
    assert predicted_group(row(None, 30.0, pred_group=[48, 53]), groups) == 6
    # a group foreign to the benchmark goes by its midpoint (22.5: tie, the younger)
    assert predicted_group(row(None, None, pred_group=[21, 24]), groups) == 3
    assert predicted_group(row(None, None), groups) is None


def group_row(group: tuple[int, int], pred: float | None, fold: str, **extra: Any) -> dict:
    return row(None, pred, age_group=list(group), fold=fold, **extra)


ADIENCE_ROWS = [
    group_row((25, 32), 28.0, "0"),  # group 4 -> 4: exact
    group_row((25, 32), 36.5, "0"),  # group 4 -> 5: one off
    group_row((8, 12), 14.0, "0"),  # group 2 -> 3: one off
    group_row((38, 43), 50.0, "0"),  # group 5 -> 6: one off
    group_row((0, 2), 3.0, "1"),  # group 0 -> 0 (tie in the gap): exact
    group_row((60, 100), 105.0, "1"),  # group 7 -> 7: exact
    group_row((15, 20), 40.5, "1", pred_group=[38, 43]),  # group 3 -> 5: two off
    group_row((48, 53), None, "1", pred_group=[48, 53]),  # group 6 -> 6: exact, no pred_age
    group_row((4, 6), None, "1", status="no_face"),  # not scored
]


def test_group_accuracy_and_one_off():
    g = compute_group_metrics(ADIENCE_ROWS, ADIENCE, n_boot=200)
    assert (g["n_rows"], g["n_scored"]) == (9, 8)
    assert g["n_failed"] == {"no_face": 1, "failed": 0, "missing": 0}
    assert g["coverage"] == pytest.approx(8 / 9)
    assert g["accuracy"] == pytest.approx(4 / 8)
    assert g["one_off"] == pytest.approx(7 / 8)
    lo, hi = g["accuracy_ci"]
    assert lo <= g["accuracy"] <= hi
    confusion = np.array(g["confusion"])
    assert confusion.sum() == 8
    for true, pred in [(4, 4), (4, 5), (2, 3), (5, 6), (0, 0), (7, 7), (3, 5), (6, 6)]:
        assert confusion[true, pred] == 1
    assert_json_clean(g)


def test_group_folds_and_midpoint_mae():
    g = compute_group_metrics(ADIENCE_ROWS, ADIENCE, n_boot=10)
    # fold 0: exact 1/4, one-off 4/4; fold 1 (4 scored): exact 3/4, one-off 3/4
    assert g["by_fold"] == [
        {"fold": "0", "n": 4, "accuracy": 0.25, "one_off": 1.0},
        {"fold": "1", "n": 4, "accuracy": 0.75, "one_off": 0.75},
    ]
    assert g["accuracy_fold_mean"] == pytest.approx(0.5)
    assert g["accuracy_fold_std"] == pytest.approx(0.5 / math.sqrt(2))  # ddof=1 of 2 values
    assert g["one_off_fold_mean"] == pytest.approx(0.875)
    assert g["one_off_fold_std"] == pytest.approx(0.25 / math.sqrt(2))
    # |pred - midpoint|: 0.5, 8, 4, 9.5, 2, 25, 23 (40.5 vs 17.5); the pred_group-only row
    # has no pred_age
    assert g["n_midpoint"] == 7
    assert g["mae_midpoint"] == pytest.approx((0.5 + 8 + 4 + 9.5 + 2 + 25 + 23) / 7)


def test_unknown_true_group_is_an_error():
    with pytest.raises(ValueError, match="age group"):
        compute_group_metrics([group_row((3, 7), 5.0, "0")], ADIENCE)
