"""Tests of medattn.metrics against values worked out by hand (a
number checked only against the code's own output cannot be wrong)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

# Imported as a module: `from medattn.metrics import test_metrics` would be collected by pytest.
from medattn import metrics

# --- Hand-worked binary example -----------------------------------------------------------------
# y_true      = [0,   0,   1,   1,   1  ]
# P(class 1)  = [0.2, 0.6, 0.9, 0.6, 0.4]  (one tie, 0.6, between a negative and a positive)
# prediction  = [0,   1,   1,   1,   0  ]  (argmax: class 1 iff P(class 1) > 0.5)
# TN = 1 (item 0), FP = 1 (item 1), TP = 2 (items 2, 3), FN = 1 (item 4)
BIN_Y = np.array([0, 0, 1, 1, 1])
BIN_P1 = np.array([0.2, 0.6, 0.9, 0.6, 0.4])
BIN_SCORES = np.stack([1.0 - BIN_P1, BIN_P1], axis=1)

# --- Hand-worked 3-class example ----------------------------------------------------------------
# y_true     = [0, 0, 1, 1, 2, 2]
# prediction = [0, 1, 1, 1, 2, 0]
# confusion (rows true, columns predicted): [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
MC_Y = np.array([0, 0, 1, 1, 2, 2])
MC_SCORES = np.array(
    [
        [0.6, 0.3, 0.1],
        [0.4, 0.5, 0.1],
        [0.2, 0.7, 0.1],
        [0.3, 0.4, 0.3],
        [0.1, 0.2, 0.7],
        [0.5, 0.2, 0.3],
    ]
)


def test_binary_metrics_by_hand():
    m = metrics.classification_metrics(BIN_Y, BIN_SCORES)
    # accuracy = (TN + TP) / N = (1 + 2) / 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    # sensitivity = TP / (TP + FN) = 2 / 3; specificity = TN / (TN + FP) = 1 / 2
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    # balanced accuracy = (2/3 + 1/2) / 2 = 7/12
    assert m["balanced_accuracy"] == pytest.approx(7 / 12)
    # precision: class 0 = TN / (TN + FN) = 1/2, class 1 = TP / (TP + FP) = 2/3 -> macro 7/12
    assert m["precision"] == pytest.approx(7 / 12)
    # recall: class 0 = 1/2, class 1 = 2/3 -> macro 7/12
    assert m["recall"] == pytest.approx(7 / 12)
    # f1 = 2PR / (P + R): class 0 = 2(1/4)/1 = 1/2, class 1 = 2(4/9)/(4/3) = 2/3 -> macro 7/12
    assert m["f1"] == pytest.approx(7 / 12)
    # AUC = share of (positive, negative) pairs ranked correctly, ties count 1/2:
    #   positive 0.9 vs negatives 0.2, 0.6 -> 1 + 1
    #   positive 0.6 vs negatives 0.2, 0.6 -> 1 + 1/2 (tie)
    #   positive 0.4 vs negatives 0.2, 0.6 -> 1 + 0
    #   (2 + 1.5 + 1) / (3 positives * 2 negatives) = 4.5 / 6 = 3/4
    assert m["auc"] == pytest.approx(3 / 4)
    assert set(m) == {
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "auc",
        "sensitivity",
        "specificity",
    }
    assert all(isinstance(v, float) for v in m.values())


def test_binary_metrics_where_precision_and_f1_differ():
    # y_true = [0, 0, 0, 1, 1], prediction = [0, 1, 1, 1, 0]: TN = 1, FP = 2, TP = 1, FN = 1
    y = np.array([0, 0, 0, 1, 1])
    p1 = np.array([0.1, 0.8, 0.7, 0.9, 0.3])
    m = metrics.classification_metrics(y, np.stack([1 - p1, p1], axis=1))
    assert m["accuracy"] == pytest.approx(2 / 5)
    # precision: class 0 = 1/(1+1) = 1/2, class 1 = 1/(1+2) = 1/3 -> macro 5/12
    assert m["precision"] == pytest.approx(5 / 12)
    # recall: class 0 = 1/3, class 1 = 1/2 -> macro 5/12 (= balanced accuracy)
    assert m["recall"] == pytest.approx(5 / 12)
    assert m["balanced_accuracy"] == pytest.approx(5 / 12)
    # f1: class 0 = 2(1/2)(1/3)/(5/6) = 2/5, class 1 = 2(1/3)(1/2)/(5/6) = 2/5 -> macro 2/5
    assert m["f1"] == pytest.approx(2 / 5)
    # sensitivity = 1/2, specificity = 1/3
    assert m["sensitivity"] == pytest.approx(1 / 2)
    assert m["specificity"] == pytest.approx(1 / 3)
    # AUC: positives 0.9, 0.3 against negatives 0.1, 0.8, 0.7: 0.9 beats 3, 0.3 beats 1 -> 4/6
    assert m["auc"] == pytest.approx(2 / 3)


def test_multiclass_metrics_by_hand():
    m = metrics.classification_metrics(MC_Y, MC_SCORES)
    # accuracy = diagonal / N = (1 + 2 + 1) / 6
    assert m["accuracy"] == pytest.approx(2 / 3)
    # recall per class = diagonal / row sum = 1/2, 2/2, 1/2 -> macro 2/3 (= balanced accuracy)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    # precision per class = diagonal / column sum = 1/2, 2/3, 1/1 -> (3/6 + 4/6 + 6/6) / 3 = 13/18
    assert m["precision"] == pytest.approx(13 / 18)
    # f1 per class: (P=1/2, R=1/2) -> 1/2; (2/3, 1) -> 2(2/3)/(5/3) = 4/5; (1, 1/2) -> 2(1/2)/(3/2) = 2/3
    # macro = (15/30 + 24/30 + 20/30) / 3 = 59/90
    assert m["f1"] == pytest.approx(59 / 90)
    # one-vs-rest AUC, by counting (positive, negative) pairs in each column:
    #   class 0: positives 0.6, 0.4 vs negatives 0.2, 0.3, 0.1, 0.5 -> 4 + 3 = 7 of 8
    #   class 1: positives 0.7, 0.4 vs negatives 0.3, 0.5, 0.2, 0.2 -> 4 + 3 = 7 of 8
    #   class 2: positives 0.7, 0.3 vs negatives 0.1, 0.1, 0.1, 0.3 -> 4 + 3.5 (tie) = 7.5 of 8
    #   macro = (14/16 + 14/16 + 15/16) / 3 = 43/48
    assert m["auc"] == pytest.approx(43 / 48)
    assert "sensitivity" not in m and "specificity" not in m


def test_multiclass_auc_skips_a_class_absent_from_y_true():
    # Keep the rows of classes 0 and 1 only; class 2 has no positives, so its AUC is undefined.
    #   class 0: positives 0.6, 0.4 vs negatives 0.2, 0.3 -> 2 + 2 = 4 of 4
    #   class 1: positives 0.7, 0.4 vs negatives 0.3, 0.5 -> 2 + 1 = 3 of 4
    #   mean over the defined classes = (1 + 3/4) / 2 = 7/8
    m = metrics.classification_metrics(MC_Y[:4], MC_SCORES[:4])
    assert m["auc"] == pytest.approx(7 / 8)
    assert metrics.roc_auc(MC_Y[:4], MC_SCORES[:4]) == pytest.approx(7 / 8)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_auc_without_error_or_warning(label):
    y = np.full(4, label)
    p1 = np.array([0.2, 0.7, 0.4, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics.classification_metrics(y, np.stack([1 - p1, p1], axis=1))
    assert math.isnan(m["auc"])
    # predictions = [0, 1, 0, 1]: half right whichever the single label is
    assert m["accuracy"] == pytest.approx(1 / 2)
    # the recall of the absent class is undefined, the other one is 1/2
    absent, present = ("sensitivity", "specificity") if label == 0 else ("specificity", "sensitivity")
    assert math.isnan(m[absent])
    assert m[present] == pytest.approx(1 / 2)


def test_single_class_multiclass_gives_nan_auc():
    m = metrics.classification_metrics(np.array([2, 2]), MC_SCORES[:2])
    assert math.isnan(m["auc"])
    assert math.isnan(metrics.roc_auc(np.array([2, 2]), MC_SCORES[:2]))


def test_roc_auc_by_hand_binary():
    # same pairs as in test_binary_metrics_by_hand: 4.5 / 6
    assert metrics.roc_auc(BIN_Y, BIN_SCORES) == pytest.approx(3 / 4)
    assert metrics.roc_auc(MC_Y, MC_SCORES) == pytest.approx(43 / 48)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_fast_metrics_agree_with_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 300)
    # Rounding to one decimal creates many ties, the case where rank-based AUC is easy to get wrong.
    logits = np.round(rng.normal(size=(300, n_classes)) + 1.5 * np.eye(n_classes)[y], 1)
    scores = metrics.softmax(logits)
    if n_classes == 2:
        expected_auc = roc_auc_score(y, scores[:, 1])
    else:
        expected_auc = roc_auc_score(y, scores, multi_class="ovr", average="macro")
    assert metrics.roc_auc(y, scores) == pytest.approx(expected_auc, abs=1e-12)
    expected_bacc = balanced_accuracy_score(y, scores.argmax(1))
    assert metrics.balanced_accuracy(y, scores) == pytest.approx(expected_bacc, abs=1e-12)


def test_softmax_by_hand_and_stable():
    # [0, ln 3] -> [e^0, e^ln3] / (1 + 3) = [1/4, 3/4]; adding 1000 to a row must not change it
    logits = np.array([[0.0, math.log(3.0)], [1000.0, 1000.0 + math.log(3.0)], [-1000.0, -1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = metrics.softmax(logits)
    np.testing.assert_allclose(p, [[0.25, 0.75], [0.25, 0.75], [0.5, 0.5]], atol=1e-12)


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        (np.array([0, 1]), np.array([0.2, 0.8]), "shape"),
        (np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]), "shape"),
        (np.array([0, 2]), np.array([[0.8, 0.2], [0.3, 0.7]]), r"\[0, 2\)"),
        (np.array([], dtype=int), np.zeros((0, 2)), "at least one"),
        (np.array([0.5, 1.0]), np.array([[0.8, 0.2], [0.3, 0.7]]), "integer"),
    ],
)
def test_bad_inputs_raise_value_error(y, scores, message):
    with pytest.raises(ValueError, match=message):
        metrics.classification_metrics(y, scores)


def _binary_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic binary problem of moderate difficulty: labels (n,), probabilities (n, 2)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 2)) + np.eye(2)[y]
    return y, metrics.softmax(logits)


def test_bootstrap_ci_contains_point_estimate():
    y, s = _binary_data(200, seed=1)
    for metric in (metrics.roc_auc, metrics.balanced_accuracy):
        low, high = metrics.bootstrap_ci(y, s, metric)
        assert 0.0 <= low < metric(y, s) < high <= 1.0


def test_bootstrap_ci_is_deterministic_for_a_seed():
    y, s = _binary_data(100, seed=2)
    first = metrics.bootstrap_ci(y, s, metrics.roc_auc, n_boot=200, seed=7)
    assert metrics.bootstrap_ci(y, s, metrics.roc_auc, n_boot=200, seed=7) == first
    assert metrics.bootstrap_ci(y, s, metrics.roc_auc, n_boot=200, seed=8) != first


def test_bootstrap_ci_is_the_documented_percentile_interval():
    # Redo by hand what the docstring promises: all indices from default_rng(seed) at once,
    # metric on each resample, alpha/2 and 1 - alpha/2 quantiles.
    y, s = _binary_data(60, seed=3)
    idx = np.random.default_rng(5).integers(0, 60, size=(300, 60))
    values = [metrics.balanced_accuracy(y[i], s[i]) for i in idx]  # n = 60: no single-class resample
    expected = tuple(np.quantile(values, [0.05, 0.95]))
    got = metrics.bootstrap_ci(y, s, metrics.balanced_accuracy, n_boot=300, alpha=0.1, seed=5)
    assert got == pytest.approx(expected)


def test_bootstrap_ci_narrows_with_more_data():
    small = metrics.bootstrap_ci(*_binary_data(50, seed=4), metrics.roc_auc)
    large = metrics.bootstrap_ci(*_binary_data(2000, seed=4), metrics.roc_auc)
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])


def test_bootstrap_ci_narrows_with_larger_alpha():
    y, s = _binary_data(200, seed=6)
    wide = metrics.bootstrap_ci(y, s, metrics.roc_auc, alpha=0.05)
    narrow = metrics.bootstrap_ci(y, s, metrics.roc_auc, alpha=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_ci_skips_single_class_resamples():
    # Two items, one per class. Each resample is one of (0,0), (0,1), (1,0), (1,1) with
    # probability 1/4; (0,0) and (1,1) hold one class and are skipped. Both mixed resamples
    # rank the positive (0.8) above the negative (0.2), so every kept AUC is 1: the CI is (1, 1).
    y = np.array([0, 1])
    s = np.array([[0.8, 0.2], [0.2, 0.8]])
    seen = []

    def spy(y_b: np.ndarray, s_b: np.ndarray) -> float:
        seen.append(len(np.unique(y_b)))
        return metrics.roc_auc(y_b, s_b)

    assert metrics.bootstrap_ci(y, s, spy, n_boot=400) == (1.0, 1.0)
    assert set(seen) == {2}  # the metric never saw a single-class resample
    assert 150 < len(seen) < 250  # about half of the 400 resamples are mixed


def test_bootstrap_ci_rare_class_still_gives_an_interval():
    # One positive among 20: about (19/20)^20 = 36 % of resamples lack it and are skipped.
    y = np.zeros(20, dtype=int)
    y[3] = 1
    p1 = np.linspace(0.05, 0.95, 20)
    low, high = metrics.bootstrap_ci(y, np.stack([1 - p1, p1], axis=1), metrics.roc_auc)
    assert 0.0 <= low <= high <= 1.0


def test_bootstrap_ci_nan_when_never_defined():
    y = np.ones(5, dtype=int)
    s = np.tile([0.3, 0.7], (5, 1))
    assert all(math.isnan(v) for v in metrics.bootstrap_ci(y, s, metrics.roc_auc, n_boot=50))
    y2, s2 = _binary_data(30, seed=0)
    nan_ci = metrics.bootstrap_ci(y2, s2, lambda a, b: float("nan"), n_boot=50)
    assert all(math.isnan(v) for v in nan_ci)


@pytest.mark.parametrize(("kwargs", "message"), [({"n_boot": 0}, "n_boot"), ({"alpha": 1.0}, "alpha")])
def test_bootstrap_ci_rejects_bad_arguments(kwargs, message):
    y, s = _binary_data(10, seed=0)
    with pytest.raises(ValueError, match=message):
        metrics.bootstrap_ci(y, s, metrics.roc_auc, **kwargs)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_test_metrics_adds_cis_around_the_point_estimates(n_classes):
    rng = np.random.default_rng(10 + n_classes)
    y = rng.integers(0, n_classes, 150)
    s = metrics.softmax(rng.normal(size=(150, n_classes)) + np.eye(n_classes)[y])
    m = metrics.test_metrics(y, s, n_boot=300, seed=0)
    base = metrics.classification_metrics(y, s)
    assert {k: m[k] for k in base} == base
    assert set(m) - set(base) == {
        "auc_ci_low",
        "auc_ci_high",
        "balanced_accuracy_ci_low",
        "balanced_accuracy_ci_high",
    }
    for name in ("auc", "balanced_accuracy"):
        assert m[f"{name}_ci_low"] < m[name] < m[f"{name}_ci_high"]
    assert metrics.test_metrics(y, s, n_boot=300, seed=0) == m


def test_test_metrics_single_class_gives_nan_cis():
    m = metrics.test_metrics(np.zeros(6, dtype=int), np.tile([0.6, 0.4], (6, 1)), n_boot=50)
    assert math.isnan(m["auc"]) and math.isnan(m["auc_ci_low"]) and math.isnan(m["auc_ci_high"])
    assert math.isnan(m["balanced_accuracy_ci_low"])


def test_test_metrics_is_not_collected_by_pytest():
    assert metrics.test_metrics.__test__ is False
