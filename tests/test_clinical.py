"""Clinical metrics (:mod:`medattn.clinical`) against hand computations and scikit-learn."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

from medattn import clinical
from medattn.metrics import softmax


def _two(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], 1)


# ---- calibration --------------------------------------------------------------------------------
def test_ece_matches_a_hand_computation():
    # 6 images, 3 equal-mass bins of 2 (sorted by P(class 1)):
    #   bin 0: p 0.1, 0.2 -> mean 0.15, labels 0, 1 -> 0.5, gap 0.35
    #   bin 1: p 0.4, 0.5 -> mean 0.45, labels 0, 0 -> 0.0, gap 0.45
    #   bin 2: p 0.8, 0.9 -> mean 0.85, labels 1, 1 -> 1.0, gap 0.15
    # ECE = (2 * 0.35 + 2 * 0.45 + 2 * 0.15) / 6 = 0.3166...
    p = [0.8, 0.1, 0.5, 0.9, 0.2, 0.4]
    y = [1, 0, 0, 1, 1, 0]
    assert clinical.expected_calibration_error(y, _two(p), n_bins=3) == pytest.approx((0.35 + 0.45 + 0.15) / 3)


def test_ece_uses_the_reliability_diagrams_equal_mass_bins():
    """ECE = Σ n_b/N |prob_true - prob_pred| with scikit-learn's quantile bins (its counts via the same edges)."""
    rng = np.random.default_rng(1)
    p = rng.uniform(size=300)
    y = (rng.uniform(size=300) < p**2).astype(int)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy="quantile")
    counts = np.bincount(clinical.equal_mass_bins(p, 15), minlength=15)
    counts = counts[counts > 0]
    expected = float(np.sum(counts / len(p) * np.abs(prob_true - prob_pred)))
    assert clinical.expected_calibration_error(y, _two(p)) == pytest.approx(expected)
    # a perfectly calibrated, perfectly sharp model: 0
    assert clinical.expected_calibration_error([0, 1, 0, 1], _two([0, 1, 0, 1]), n_bins=2) == 0.0


def test_multiclass_ece_is_top_label_confidence_against_accuracy():
    s = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    y = np.array([0, 1, 2, 2])
    # one bin: mean confidence (0.7 + 0.6 + 0.8 + 0.5) / 4 = 0.65, accuracy 2/4 -> 0.15
    assert clinical.expected_calibration_error(y, s, n_bins=1) == pytest.approx(0.15)


def test_brier_and_calibration_metrics_match_scikit_learn_and_bracket():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=120)
    y = (rng.uniform(size=120) < p).astype(int)
    m = clinical.calibration_metrics(y, _two(p), n_boot=200, seed=0)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["brier_ci_low"] <= m["brier"] <= m["brier_ci_high"]
    assert m["ece_ci_low"] <= m["ece_ci_high"]
    assert set(clinical.calibration_metrics(y, _two(p), n_boot=0)) == {"ece", "brier"}


def test_logits_times_five_are_miscalibrated_and_temperature_scaling_fixes_it_on_held_out_data():
    """Labels drawn from the model's own probabilities (calibrated by construction); logits ×5 are
    overconfident; a temperature fitted on one half brings the ECE down on the other half."""
    rng = np.random.default_rng(0)
    n = 4000
    logits = np.stack([np.zeros(n), rng.normal(0.0, 1.5, n)], 1)
    y = (rng.uniform(size=n) < softmax(logits)[:, 1]).astype(int)
    calibrated, overconfident = softmax(logits), softmax(5 * logits)
    fit, held = slice(0, n // 2), slice(n // 2, n)
    ece_cal = clinical.expected_calibration_error(y[held], calibrated[held])
    ece_over = clinical.expected_calibration_error(y[held], overconfident[held])
    assert ece_over > ece_cal + 0.05
    t = clinical.fit_temperature(y[fit], overconfident[fit])
    assert t == pytest.approx(5.0, rel=0.15)
    scaled = clinical.apply_temperature(overconfident[held], t)
    ece_scaled = clinical.expected_calibration_error(y[held], scaled)
    assert ece_scaled < ece_over / 2
    assert ece_scaled < ece_cal + 0.02
    # the ranking (AUC) does not change, only the confidence
    assert roc_auc_score(y[held], scaled[:, 1]) == pytest.approx(roc_auc_score(y[held], overconfident[held, 1]))
    assert clinical.apply_temperature(calibrated, t) == pytest.approx(softmax(logits / t))


# ---- operating points ---------------------------------------------------------------------------
def test_threshold_at_specificity_and_sensitivity_by_hand():
    # negatives 0.1..1.0 (10), positives 0.35, 0.55, 0.75, 0.95, 0.99
    neg = np.round(np.arange(1, 11) / 10, 2)
    pos = np.array([0.35, 0.55, 0.75, 0.95, 0.99])
    y = np.r_[np.zeros(10, int), np.ones(5, int)]
    s = _two(np.r_[neg, pos])
    # specificity >= 0.9 needs at most one negative >= t: the lowest such t is 0.95 (negative 1.0 above it)
    # -> sensitivity 2/5 (0.95, 0.99)
    assert clinical.choose_threshold(y, s, "specificity", 0.90) == pytest.approx(0.95)
    assert clinical.rates_at(y, s, 0.95) == pytest.approx((0.4, 0.9))
    # sensitivity >= 0.8 needs 4 of 5 positives: t = 0.55 (the highest), specificity 5/10 = 0.5
    assert clinical.choose_threshold(y, s, "sensitivity", 0.80) == pytest.approx(0.55)
    assert clinical.rates_at(y, s, 0.55) == pytest.approx((0.8, 0.5))
    assert math.isnan(clinical.choose_threshold(np.zeros(3, int), _two([0.1, 0.2, 0.3]), "sensitivity", 0.9))


def test_operating_points_are_chosen_on_the_choosing_split_not_the_applied_one():
    """Validation and test scores differ in scale, so the two splits pick different thresholds: the
    reported test sensitivity is the one at the validation threshold, never the test-tuned one."""
    rng = np.random.default_rng(3)
    y_val = np.r_[np.zeros(100, int), np.ones(50, int)]
    y_test = np.r_[np.zeros(100, int), np.ones(50, int)]
    p_val = np.r_[rng.uniform(0.0, 0.6, 100), rng.uniform(0.3, 1.0, 50)]
    p_test = np.r_[rng.uniform(0.2, 0.9, 100), rng.uniform(0.5, 1.0, 50)]  # shifted up
    thresholds, metrics = clinical.operating_point_metrics(y_val, _two(p_val), y_test, _two(p_test), n_boot=100)
    t_val = clinical.choose_threshold(y_val, _two(p_val), "specificity", 0.90)
    t_test = clinical.choose_threshold(y_test, _two(p_test), "specificity", 0.90)
    assert thresholds["threshold_spec90"] == t_val != t_test
    sens_val_threshold = float(np.mean(p_test[y_test == 1] >= t_val))
    sens_test_threshold = float(np.mean(p_test[y_test == 1] >= t_test))
    assert metrics["sens_at_spec90"] == pytest.approx(sens_val_threshold)
    assert metrics["sens_at_spec90"] != pytest.approx(sens_test_threshold)
    # applied to the shifted test split the specificity falls short of 0.90: the honest, untuned number
    assert float(np.mean(p_test[y_test == 0] < t_val)) < 0.9
    assert set(thresholds) == {"threshold_spec90", "threshold_spec95", "threshold_sens90", "threshold_sens95"}
    for name in ("sens_at_spec90", "sens_at_spec95", "spec_at_sens90", "spec_at_sens95"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name


# ---- subgroups ----------------------------------------------------------------------------------
def test_slugs_and_age_bands():
    assert clinical.slug("head/neck") == "head_neck"
    assert clinical.slug("Lower Extremity") == "lower_extremity"
    assert clinical.slug(float("nan")) == "missing"
    assert clinical.slug("  ") == "missing"
    assert [clinical.age_group(a) for a in (0, 39.9, 40, 59, 60, 79, 80, 95, None, "x", float("nan"))] == [
        "0_39", "0_39", "40_59", "40_59", "60_79", "60_79", "80_plus", "80_plus", "missing", "missing", "missing",
    ]  # fmt: skip


def test_subgroup_table_matches_scikit_learn_and_marks_small_groups():
    rng = np.random.default_rng(4)
    n = 200
    y = (rng.uniform(size=n) < 0.4).astype(int)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)
    site = np.where(np.arange(n) < 190, np.where(np.arange(n) % 2 == 0, "torso", "head_neck"), "palms_soles")
    table = clinical.subgroup_table(y, _two(p), {"site": site}, min_positives=5, n_boot=100)
    assert table["group"].tolist() == ["head_neck", "palms_soles", "torso"]
    for row in table.to_dict("records"):
        m = site == row["group"]
        assert row["n"] == m.sum() and row["n_pos"] == y[m].sum()
        if row["group"] == "palms_soles":  # 10 images, fewer than 5 of a class
            assert row["status"] == "too small" and math.isnan(row["auc"])
            continue
        assert row["status"] == "ok"
        assert row["auc"] == pytest.approx(roc_auc_score(y[m], p[m]))
        assert row["sensitivity"] == pytest.approx(np.mean(p[m][y[m] == 1] > 0.5))
        assert row["specificity"] == pytest.approx(np.mean(p[m][y[m] == 0] <= 0.5))
        assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
    metrics = clinical.subgroup_metrics(table)
    assert metrics["auc__site_torso"] == pytest.approx(table.loc[2, "auc"])
    assert "auc__site_palms_soles" not in metrics and metrics["n__site_palms_soles"] == 10
    assert all(re.fullmatch(r"[/\w.\- :]+", k) for k in metrics)
