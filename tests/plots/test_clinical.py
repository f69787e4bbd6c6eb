"""The clinical-evaluation figures: reliability diagram, operating points on the ROC curve, subgroup forest plot."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from medattn import plots


def _two(p1: np.ndarray) -> np.ndarray:
    return np.stack([1 - p1, p1], 1)


def test_reliability_diagram_draws_scikit_learns_equal_mass_curve():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200)
    y = (rng.uniform(size=200) < p).astype(int)
    fig = plots.reliability_figure(y, _two(p), n_bins=10)
    ax = fig.axes[0]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    curve = next(ln for ln in ax.lines if ln.get_label().startswith("model"))
    np.testing.assert_allclose(curve.get_xdata(), prob_pred)
    np.testing.assert_allclose(curve.get_ydata(), prob_true)
    assert sum(patch.get_height() for patch in fig.axes[1].patches) == 200  # the histogram under it
    fig.savefig(io.BytesIO(), format="png")


def test_roc_curve_marks_each_operating_point_where_its_threshold_lands():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    fig = plots.roc_curve_figure(y, _two(p), operating_points={"sens_at_spec90": 0.65, "spec_at_sens90": 0.35})
    marks = {
        ln.get_label(): (ln.get_xdata()[0], ln.get_ydata()[0]) for ln in fig.axes[0].lines if ln.get_marker() != "None"
    }
    # threshold 0.65: negatives >= 0.65 none -> FPR 0; positives 0.7, 0.8, 0.9 -> TPR 0.75
    assert marks["sens_at_spec90 (t = 0.65)"] == pytest.approx((0.0, 0.75))
    # threshold 0.35: negative 0.6 -> FPR 0.25; all positives -> TPR 1
    assert marks["spec_at_sens90 (t = 0.35)"] == pytest.approx((0.25, 1.0))


def test_subgroup_forest_lists_too_small_groups_without_a_point():
    rows = [
        {"label": "sex: female", "value": 0.8, "ci_low": 0.7, "ci_high": 0.9, "status": "ok", "n": 50, "n_pos": 20},
        {"label": "site: palms_soles", "value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
         "status": "too small", "n": 4, "n_pos": 1},
        {"label": "sex: male", "value": 0.7, "ci_low": 0.6, "ci_high": 0.8, "status": "ok", "n": 48, "n_pos": 18},
    ]  # fmt: skip
    fig = plots.subgroup_forest_figure(rows, overall=0.75)
    ax = fig.axes[0]
    line = ax.containers[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0.8, 0.7])
    np.testing.assert_allclose(line.get_ydata(), [0.0, -2.0])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["sex: female", "site: palms_soles (too small)", "sex: male"]
    assert any(list(ln.get_xdata()) == [0.75, 0.75] for ln in ax.lines)
    fig.savefig(io.BytesIO(), format="png")
    with pytest.raises(ValueError, match="at least one row"):
        plots.subgroup_forest_figure([])
