"""Metrics on fixed predictions with hand-computed values (warnings are errors here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr

from clcr_cli.errors import ConfigError
from clcr_cli.metrics import (
    METRIC_NAMES,
    classification_metrics,
    mean_std,
    metric_label,
    primary_metric,
    regression_metrics,
    relative_robustness,
)

pytestmark = pytest.mark.filterwarnings("error")


# ---------------------------------------------------------------- regression (MMSA)


def test_acc7_rounds_half_to_even_and_clips():
    # pred -> clipped, rounded (half to even) vs truth class
    truth = np.array([0.0, 2.0, -2.0, 2.0, 3.0, -3.0, 1.0, -3.0])
    pred = np.array([0.5, 1.5, -2.5, 2.5, 4.2, -3.7, 0.5, -2.5])
    # 0.5->0 ok, 1.5->2 ok, -2.5->-2 ok, 2.5->2 ok, 4.2->3 ok, -3.7->-3 ok,
    # 0.5->0 != 1 (half-up would say 1), -2.5->-2 != -3 (half-away-from-zero would say -3)
    assert regression_metrics(truth, pred)["acc7"] == pytest.approx(6 / 8)


def test_acc5_clips_to_two_and_acc7_to_three():
    truth = np.array([3.0, -3.0, 2.0, 1.6, 0.0])
    pred = np.array([2.2, -9.0, 1.5, 2.9, -0.4])
    m = regression_metrics(truth, pred)
    # [-2,2]: truth -> 2,-2,2,2,0; pred -> 2,-2,2,2,-0: all equal
    assert m["acc5"] == 1.0
    # [-3,3]: truth -> 3,-3,2,2,0; pred -> 2,-3,2,3,-0: indices 1,2,4 equal
    assert m["acc7"] == pytest.approx(3 / 5)


def test_has0_counts_zero_truth_positive_non0_drops_it():
    truth = np.array([0.0, 0.0, 1.2, -0.8, 2.0, -1.5])
    pred = np.array([0.3, -0.2, 0.5, 0.1, -0.3, -2.0])
    m = regression_metrics(truth, pred)
    # Has0 (x >= 0): truth T T T F T F, pred T F T T F F -> 3/6 right
    assert m["has0_acc2"] == pytest.approx(0.5)
    # positive: support 4, predicted 3, tp 2 -> P 2/3, R 1/2, F1 4/7
    # negative: support 2, predicted 3, tp 1 -> P 1/3, R 1/2, F1 2/5
    assert m["has0_f1"] == pytest.approx((4 * 4 / 7 + 2 * 2 / 5) / 6)  # = 18/35
    # Non0 (truth != 0 kept, x > 0): truth T F T F, pred T T F F -> 2/4, F1 0.5 per class
    assert m["non0_acc2"] == pytest.approx(0.5)
    assert m["non0_f1"] == pytest.approx(0.5)


def test_zero_prediction_is_positive_for_has0_negative_for_non0():
    m = regression_metrics(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    assert m["has0_acc2"] == 1.0 and m["has0_f1"] == 1.0
    assert m["non0_acc2"] == 0.0 and m["non0_f1"] == 0.0


def test_non0_is_nan_when_every_truth_is_zero():
    m = regression_metrics(np.zeros(4), np.array([0.1, -0.1, 0.0, 2.0]))
    assert math.isnan(m["non0_acc2"]) and math.isnan(m["non0_f1"])
    assert m["has0_acc2"] == pytest.approx(3 / 4)
    assert m["mae"] == pytest.approx((0.1 + 0.1 + 0.0 + 2.0) / 4)


def test_weighted_f1_by_hand_differs_from_macro():
    # truth positive x3, negative x1; pred all positive (Has0 convention)
    m = regression_metrics(np.array([1.0, 2.0, 0.5, -1.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    # positive: P 3/4, R 1 -> F1 6/7 (weight 3); negative: F1 0 (weight 1)
    assert m["has0_f1"] == pytest.approx(3 / 4 * 6 / 7)
    assert m["has0_acc2"] == pytest.approx(3 / 4)


def test_mae_corr_and_flattening():
    rng = np.random.default_rng(0)
    truth = rng.uniform(-3, 3, size=50)
    pred = (0.6 * truth + rng.normal(0, 1, size=50)).reshape(50, 1)  # model output (N, 1)
    m = regression_metrics(truth, pred)
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred[:, 0] - truth)))
    assert m["corr"] == pytest.approx(pearsonr(pred[:, 0], truth)[0], abs=1e-12)
    assert set(m) == set(METRIC_NAMES["regression"])


def _mmsa_reference(truth: np.ndarray, pred: np.ndarray) -> dict:
    """MMSA's __eval_mosei_regression written out step by step (a spec, not our code path)."""
    from sklearn.metrics import accuracy_score, f1_score

    non_zeros = np.array([i for i, e in enumerate(truth) if e != 0])
    return {
        "mae": np.mean(np.absolute(pred - truth)),
        "corr": np.corrcoef(pred, truth)[0][1],
        "acc7": np.sum(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(truth, -3, 3)))
        / len(truth),
        "acc5": np.sum(np.round(np.clip(pred, -2, 2)) == np.round(np.clip(truth, -2, 2)))
        / len(truth),
        "has0_acc2": accuracy_score(pred >= 0, truth >= 0),
        "has0_f1": f1_score(truth >= 0, pred >= 0, average="weighted"),
        "non0_acc2": accuracy_score(pred[non_zeros] > 0, truth[non_zeros] > 0),
        "non0_f1": f1_score(truth[non_zeros] > 0, pred[non_zeros] > 0, average="weighted"),
    }


def test_matches_mmsa_on_mosi_like_labels():
    rng = np.random.default_rng(3)
    truth = np.round(rng.uniform(-3, 3, size=400) * 3) / 3  # annotator means: k/3, many 0s
    truth[:40] = 0.0
    pred = np.clip(truth + rng.normal(0, 0.9, size=400), -3.4, 3.4)
    pred[40:50] = np.round(pred[40:50] * 2) / 2  # exact halves exercise the rounding rule
    ours, ref = regression_metrics(truth, pred), _mmsa_reference(truth, pred)
    assert ours == pytest.approx(ref, abs=1e-12)


def test_corr_of_constant_side_is_zero_without_warning():
    m = regression_metrics(np.array([1.0, -2.0, 0.5]), np.full(3, 0.7))
    assert m["corr"] == 0.0
    assert regression_metrics(np.full(3, 1.0), np.array([1.0, 2.0, 3.0]))["corr"] == 0.0


def test_regression_single_sign_has_no_nan():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.5, 2.5]))
    assert not any(math.isnan(v) for v in m.values())
    assert m["has0_f1"] == 1.0 and m["non0_f1"] == 1.0


def test_regression_rejects_bad_input():
    with pytest.raises(ValueError, match="3 values"):
        regression_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="zero samples"):
        regression_metrics(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="finite"):
        regression_metrics(np.zeros(2), np.array([0.0, np.nan]))


# ---------------------------------------------------------------- classification


def test_classification_macro_vs_weighted_by_hand():
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(truth, pred, num_classes=3)
    f1 = [0.8, 0.5, 2 / 3]  # class 0: P 1 R 2/3; class 1: P 1/2 R 1/2; class 2: P 1/2 R 1
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx(sum(f1) / 3)
    assert m["f1_weighted"] == pytest.approx((3 * f1[0] + 2 * f1[1] + 1 * f1[2]) / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]  # rows = truth


def test_absent_class_counts_in_macro_not_in_weighted():
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    m3 = classification_metrics(truth, pred, num_classes=3)
    m4 = classification_metrics(truth, pred, num_classes=4)
    assert m4["f1_macro"] == pytest.approx(m3["f1_macro"] * 3 / 4)
    assert m4["f1_weighted"] == pytest.approx(m3["f1_weighted"])
    assert np.array(m4["confusion"]).shape == (4, 4)
    assert np.array(m4["confusion"])[3].sum() == 0 and np.array(m4["confusion"])[:, 3].sum() == 0


def test_confusion_rows_are_truth():
    m = classification_metrics(np.array([2, 2, 2]), np.array([0, 1, 1]), num_classes=3)
    assert m["confusion"] == [[0, 0, 0], [0, 0, 0], [1, 2, 0]]


@pytest.mark.parametrize(
    ("truth", "pred", "num_classes", "expected"),
    [
        ([0, 0, 0], [0, 0, 0], 3, (1.0, 1 / 3, 1.0)),
        ([1, 1, 1], [0, 0, 0], 3, (0.0, 0.0, 0.0)),
        ([1, 1, 1, 1], [1, 0, 2, 1], 3, (0.5, (2 / 3) / 3, 2 / 3)),
        ([0, 1, 2, 0], [1, 1, 1, 1], 3, (0.25, (2 / 5) / 3, (2 / 5) / 4)),
        ([0, 0], [0, 0], 1, (1.0, 1.0, 1.0)),
    ],
)
def test_single_class_edge_cases_are_finite_and_warning_free(truth, pred, num_classes, expected):
    m = classification_metrics(np.array(truth), np.array(pred), num_classes)
    assert (m["acc"], m["f1_macro"], m["f1_weighted"]) == pytest.approx(expected)


def test_classification_accepts_whole_floats_and_rejects_bad_input():
    m = classification_metrics(np.array([0.0, 1.0]), np.array([1, 1]), num_classes=2)
    assert m["acc"] == 0.5
    with pytest.raises(ValueError, match="outside 0..1"):
        classification_metrics(np.array([0, 2]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="integer"):
        classification_metrics(np.array([0.5, 1.0]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="2 values"):
        classification_metrics(np.array([0, 1]), np.array([0]), num_classes=2)


# ---------------------------------------------------------------- selection and labels


def test_primary_metric_and_labels():
    assert primary_metric("classification") == ("acc", True)
    assert primary_metric("regression") == ("mae", False)
    with pytest.raises(ConfigError, match="unknown target"):
        primary_metric("ranking")
    assert metric_label("acc7") == "Acc-7"
    assert metric_label("non0_f1") == "Non0 F1"
    assert metric_label("f1_macro") == "F1 (macro)"
    assert metric_label("loss_align") == "loss_align"
    for names in METRIC_NAMES.values():
        assert all(metric_label(n) != n for n in names)


# ---------------------------------------------------------------- robustness and seeds


def test_relative_robustness_of_constant_curve_is_the_constant():
    assert relative_robustness([0.0, 0.05, 0.3, 0.9], [0.7] * 4) == pytest.approx(0.7)


def test_relative_robustness_is_trapezoid_mean_height():
    levels = [round(0.1 * i, 1) for i in range(10)]
    scores = [0.9 - 0.08 * i**1.3 for i in range(10)]
    multibench_area = sum((scores[i] + scores[i + 1]) * 0.1 / 2 for i in range(9))
    assert relative_robustness(levels, scores) == pytest.approx(multibench_area / 0.9)
    # linear drop 1 -> 0 over irregular levels: mean height 0.5
    assert relative_robustness([0.0, 0.2, 1.0], [1.0, 0.8, 0.0]) == pytest.approx(0.5)


def test_relative_robustness_rejects_bad_curves():
    with pytest.raises(ValueError, match="increasing"):
        relative_robustness([0.0, 0.2, 0.1], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="two"):
        relative_robustness([0.0], [1.0])
    with pytest.raises(ValueError, match="scores"):
        relative_robustness([0.0, 0.1], [1.0])


def test_mean_std_over_seeds():
    rows = [
        {"acc": 0.5, "f1_macro": 0.4, "confusion": [[1]]},
        {"acc": 0.7, "f1_macro": 0.4, "confusion": [[1]]},
        {"acc": 0.9, "f1_macro": 0.4, "confusion": [[1]]},
    ]
    summary = mean_std(rows)
    assert set(summary) == {"acc", "f1_macro"}
    assert summary["acc"] == pytest.approx((0.7, 0.2))  # sample std, ddof=1
    assert summary["f1_macro"] == pytest.approx((0.4, 0.0))
    assert mean_std(rows[:1]) == {"acc": (0.5, 0.0), "f1_macro": (0.4, 0.0)}
    with pytest.raises(ValueError, match="'f1_macro'"):
        mean_std([rows[0], {"acc": 0.1}])
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])


def test_paired_difference_matches_the_t_interval_by_hand():
    from clcr_cli.metrics import paired_difference

    mean, low, high = paired_difference([0.9, 0.8, 0.7], [-0.1, -0.2, -0.3])  # diffs all 1.0
    assert (mean, low, high) == pytest.approx((1.0, 1.0, 1.0))
    mean, low, high = paired_difference([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])  # diffs 1, 2, 3
    half = 4.302652729911275 * 1.0 / 3**0.5  # t(0.975, 2) * sd / sqrt(n)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    mean, low, high = paired_difference([0.5], [0.25])
    assert mean == 0.25 and math.isnan(low) and math.isnan(high)


def _hand_t_interval(values, reference, confidence):
    """The interval as paired_difference computed it before it called scipy."""
    from scipy.stats import t as student_t

    diff = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    half = student_t.ppf(0.5 + confidence / 2, diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size)
    return diff.mean(), diff.mean() - half, diff.mean() + half


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_paired_difference_is_scipys_paired_t_interval(n, confidence):
    from scipy.stats import ttest_rel

    from clcr_cli.metrics import paired_difference

    rng = np.random.default_rng(n)
    reference = rng.uniform(0.5, 0.8, size=n)
    values = reference + rng.normal(0.02, 0.03, size=n)
    mean, low, high = paired_difference(values, reference, confidence)
    scipy_low, scipy_high = ttest_rel(values, reference).confidence_interval(confidence)
    assert (low, high) == pytest.approx((scipy_low, scipy_high), abs=1e-12)
    assert (mean, low, high) == pytest.approx(_hand_t_interval(values, reference, confidence), abs=1e-12)


def test_paired_difference_degenerate_cases_keep_their_outputs():
    from clcr_cli.metrics import paired_difference

    assert paired_difference([0.3, 0.3, 0.3], [0.3, 0.3, 0.3]) == (0.0, 0.0, 0.0)  # no difference
    assert paired_difference([1.5, 2.5], [1.0, 2.0]) == (0.5, 0.5, 0.5)  # no spread
    mean, low, high = paired_difference([1.5], [1.0])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)  # one pair: no interval
    # nearly equal differences: scipy's precision warning is not ours (warnings are errors here)
    values = [1.0, 1.0, 1.0 + 4e-16 * 3]
    assert paired_difference(values, [0.0] * 3) == pytest.approx(_hand_t_interval(values, [0.0] * 3, 0.95), abs=1e-12)
    with pytest.raises(ValueError, match="at least one pair"):
        paired_difference([], [])


def test_the_std_of_seed_tables_is_labelled_with_its_ddof():
    from clcr_cli.metrics import STD_DDOF, STD_LABEL

    assert (STD_DDOF, STD_LABEL) == (1, "std, ddof 1")
    spread = mean_std([{"acc": 0.5}, {"acc": 0.9}])["acc"][1]
    assert spread == pytest.approx(np.std([0.5, 0.9], ddof=1)) and spread > np.std([0.5, 0.9])
