"""medattn.metrics.paired_bootstrap against a case worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medattn.metrics import paired_bootstrap, roc_auc


def _probs(p1: list[float]) -> np.ndarray:
    p = np.asarray(p1)
    return np.stack([1 - p, p], 1)


Y = np.array([0, 0, 1, 1])
A = _probs([0.1, 0.2, 0.8, 0.9])  # AUC 1
B = _probs([0.1, 0.9, 0.8, 0.2])  # positives 0.8, 0.2 vs negatives 0.1, 0.9: 2 of 4 pairs, AUC 0.5


def test_paired_bootstrap_matches_a_hand_computed_case():
    resamples = np.array(
        [
            [0, 1, 2, 3],  # A 1, B 1/2: delta 1/2
            [0, 0, 2, 2],  # A 1, B 1 (0.8 > 0.1): 0
            [1, 1, 3, 3],  # A 1, B 0 (0.2 < 0.9): 1
            [0, 1, 1, 2],  # one positive (0.8) vs 0.1, 0.9, 0.9: A 1, B 1/3: 2/3
            [0, 0, 1, 1],  # one class only: skipped
        ]
    )
    res = paired_bootstrap(Y, [A], [B], roc_auc, resamples=resamples)
    assert res.delta == pytest.approx(0.5)
    assert res.n_boot == 4
    # differences 0, 1/2, 2/3, 1: numpy's linear quantiles at 2.5 % and 97.5 %
    assert res.ci_low == pytest.approx(0.075 * 0.5)
    assert res.ci_high == pytest.approx(2 / 3 + 0.925 * (1 / 3))
    # sd (ddof 1) of the differences: mean 13/24, squares sum to 0.5208333 -> sd 0.4166667; z = 1.2
    sd = math.sqrt(((0 - 13 / 24) ** 2 + (0.5 - 13 / 24) ** 2 + (2 / 3 - 13 / 24) ** 2 + (1 - 13 / 24) ** 2) / 3)
    assert sd == pytest.approx(5 / 12)
    assert res.p_value == pytest.approx(2 * 0.11506967022170822, rel=1e-9)  # 2 Φ(-1.2)


def test_identical_classifiers_differ_by_zero_with_p_one():
    res = paired_bootstrap(Y, [A], [A], roc_auc, n_boot=50, seed=1)
    assert (res.delta, res.ci_low, res.ci_high, res.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_several_seeds_average_per_side_on_each_resample():
    resamples = np.array([[0, 1, 2, 3], [1, 1, 3, 3]])
    res = paired_bootstrap(Y, [A, B], [B], roc_auc, resamples=resamples)
    # side A = mean(AUC(A), AUC(B)): all images 0.75 - 0.5 = 0.25; second resample (1 + 0) / 2 - 0 = 0.5
    assert res.delta == pytest.approx(0.25)
    assert (res.ci_low, res.ci_high) == pytest.approx((0.25 + 0.025 * 0.25, 0.25 + 0.975 * 0.25))


def test_drawn_resamples_are_reproducible_and_bracket_the_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = _probs(np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 200), 0, 1))
    bad = _probs(rng.uniform(0, 1, 200))
    one = paired_bootstrap(y, [good], [bad], n_boot=300, seed=3)
    two = paired_bootstrap(y, [good], [bad], n_boot=300, seed=3)
    assert one == two
    assert one.ci_low < one.delta < one.ci_high
    assert one.ci_low > 0 and one.p_value < 0.001
