"""Figures of the clinical evaluation: reliability diagrams with the operating points marked, and
per-subgroup forest plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from medattn import lazy
from medattn.plots.common import DPI, FIGSIZE, ci_points, forest_axes

# matplotlib and scikit-learn load with the first figure, not with this package: the stage modules
# import it and the command line imports them for their configs, so ``--help`` stays light
figure = lazy.module("matplotlib.figure")
if TYPE_CHECKING:
    from matplotlib.figure import Figure

_OPERATING_MARKERS = ("o", "s", "D", "^", "v", "P")


def _mark_operating_points(ax, positive: np.ndarray, score: np.ndarray, points: Mapping[str, float]) -> None:
    """Mark each ``{label: threshold}`` at the (FPR, TPR) it gives on ``score`` (class 1 when ``>=``)."""
    for k, (label, threshold) in enumerate(points.items()):
        if not np.isfinite(threshold) and threshold != np.inf:
            continue
        pred = score >= threshold
        tpr = float(pred[positive].mean())
        fpr = float(pred[~positive].mean())
        ax.plot(
            fpr, tpr, linestyle="none", marker=_OPERATING_MARKERS[k % len(_OPERATING_MARKERS)], markersize=7,
            markerfacecolor="none", markeredgewidth=1.5, label=f"{label} (t = {threshold:.3g})",
        )  # fmt: skip


def reliability_figure(y_true: np.ndarray, scores: np.ndarray, *, n_bins: int = 15, title: str = "") -> Figure:
    """Reliability diagram: observed frequency against mean predicted probability per equal-mass bin.

    Binary: ``P(class 1)`` against the frequency of class 1 (scikit-learn's
    ``calibration_curve(strategy="quantile")``); multiclass: top-class probability against accuracy.
    A histogram of the probabilities sits under the curve; the diagonal is perfect calibration.

    Args:
        y_true: Integer labels ``(N,)``.
        scores: Class probabilities ``(N, C)``.
        n_bins: equal-mass bins (the ECE's).
        title: Axes title; ``"Reliability diagram"`` when empty.
    """
    from sklearn.calibration import calibration_curve  # scikit-learn's calibration module is slow to import

    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[1] == 2:
        p, target, what = s[:, 1], (y == 1).astype(int), "fraction of class 1"
    else:
        p, target, what = s.max(1), (s.argmax(1) == y).astype(int), "accuracy"
    fig = figure.Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    prob_true, prob_pred = calibration_curve(target, p, n_bins=n_bins, strategy="quantile", pos_label=1)
    ax.plot(prob_pred, prob_true, marker="o", linewidth=2, label=f"model ({n_bins} equal-mass bins)")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel(f"Observed {what}")
    ax.set_title(title or "Reliability diagram")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, alpha=0.3)
    hist.hist(p, bins=20, range=(0.0, 1.0), color="tab:blue", alpha=0.7)
    hist.set_xlabel("Mean predicted probability" if s.shape[1] == 2 else "Mean top-class probability")
    hist.set_ylabel("Images")
    return fig


def subgroup_forest_figure(
    rows: Sequence[Mapping[str, object]], *, overall: float | None = None, metric: str = "AUC", title: str = ""
) -> Figure:
    """A forest plot of a metric per subgroup with its 95 % CI; too-small subgroups are listed without a point.

    Args:
        rows: one mapping per subgroup, top to bottom: ``label``, ``value``, ``ci_low``, ``ci_high``,
            ``status`` (``"ok"`` or ``"too small"``) and ``n``, ``n_pos`` (printed at the right).
        overall: the metric on all images, drawn as a dashed vertical line.
        metric: x axis label.
        title: Axes title; ``"<metric> per subgroup (95 % bootstrap CI)"`` when empty.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("subgroup_forest_figure needs at least one row.")
    fig, ax, y = forest_axes(len(rows), row_height=0.4, margin=0.4)
    ok = np.array([r.get("status") == "ok" and np.isfinite(float(r["value"])) for r in rows])
    if ok.any():
        v = np.array([float(r["value"]) for r in rows])[ok]
        lo = np.array([float(r["ci_low"]) for r in rows])[ok]
        hi = np.array([float(r["ci_high"]) for r in rows])[ok]
        ci_points(ax, v, y[ok], lo, hi)
    if overall is not None and np.isfinite(overall):
        ax.axvline(overall, color="tab:grey", linestyle="--", linewidth=1, label=f"all images ({overall:.3f})")
        ax.legend(loc="lower left", fontsize="small")
    labels = [str(r["label"]) + ("" if flag else " (too small)") for r, flag in zip(rows, ok, strict=True)]
    ax.set_yticks(y, labels=labels, fontsize="small")
    for yi, row in zip(y, rows, strict=True):
        ax.annotate(
            f"n = {row.get('n', '?')}, pos = {row.get('n_pos', '?')}", (1.0, yi), xycoords=("axes fraction", "data"),
            xytext=(-4, 0), textcoords="offset points", ha="right", va="center", fontsize="x-small",
        )  # fmt: skip
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(y[-1] - 0.7, 0.7)
    ax.set_xlabel(metric)
    ax.set_title(title or f"{metric} per subgroup (95 % bootstrap CI)")
    ax.grid(True, axis="x", alpha=0.3)
    return fig
