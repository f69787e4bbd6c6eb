"""medattn.plots.forest_figure: the points, intervals and zero line it draws."""

from __future__ import annotations

import io

import numpy as np
import pytest

from medattn import plots


def test_forest_figure_draws_each_difference_with_its_interval():
    rows = [
        {"label": "se_resnet50 vs resnet50", "delta": 0.02, "ci_low": -0.01, "ci_high": 0.05, "p_value": 0.4},
        {"label": "cbam_resnet50 vs resnet50", "delta": -0.03, "ci_low": -0.06, "ci_high": -0.005, "p_value": 0.01},
    ]
    fig = plots.forest_figure(rows)
    ax = fig.axes[0]
    line = ax.containers[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0.02, -0.03])
    np.testing.assert_allclose(line.get_ydata(), [0.0, -1.0])
    segments = ax.containers[0].lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 0] for s in segments], [[-0.01, 0.05], [-0.06, -0.005]])
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["label"] for r in rows]
    assert [t.get_text() for t in ax.texts] == ["p = 0.4", "p = 0.01"]
    assert any(list(ln.get_xdata()) == [0.0, 0.0] for ln in ax.lines)  # the no-difference line
    fig.savefig(io.BytesIO(), format="png")


def test_forest_figure_needs_rows():
    with pytest.raises(ValueError, match="at least one row"):
        plots.forest_figure([])
