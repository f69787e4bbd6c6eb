"""What every standard figure shares: its size and resolution, the metrics' axis labels, and the one place
that creates such a figure."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medattn import lazy

# matplotlib and scikit-learn load with the first figure, not with this package: the stage modules
# import it and the command line imports them for their configs, so ``--help`` stays light
figure = lazy.module("matplotlib.figure")
if TYPE_CHECKING:
    from matplotlib.figure import Figure


FIGSIZE = (6.0, 4.5)
DPI = 100

#: Axis labels of the metrics the figures draw.
_METRIC_LABELS = {
    "loss": "Loss",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "auc": "ROC AUC",
    "f1": "Macro F1",
    "precision": "Macro precision",
    "recall": "Macro recall",
}


def _new_figure() -> tuple[Figure, object]:
    """A fresh figure of the standard size with one axes and a tight layout."""
    fig = figure.Figure(figsize=FIGSIZE, dpi=DPI, layout="tight")
    return fig, fig.add_subplot()


def forest_axes(n_rows: int, row_height: float, margin: float) -> tuple[Figure, object, np.ndarray]:
    """A forest plot's figure with one axes, and the rows' y positions (row ``i`` at y = ``-i``, top to
    bottom): the standard width, ``margin + row_height * n_rows`` inches high (at least 2)."""
    fig = figure.Figure(figsize=(FIGSIZE[0], max(2.0, margin + row_height * n_rows)), dpi=DPI, layout="constrained")
    return fig, fig.add_subplot(), -np.arange(n_rows, dtype=float)


def ci_points(ax, values: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """Draw each value as a square at ``y`` with its CI ``[low, high]`` as a bar (an unknown end: no bar)."""
    err = np.vstack([np.where(np.isfinite(low), values - low, 0.0), np.where(np.isfinite(high), high - values, 0.0)])
    ax.errorbar(values, y, xerr=err, fmt="s", color="tab:blue", ecolor="tab:blue", capsize=4, markersize=6)
