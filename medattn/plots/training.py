"""Figures of one run: its ROC curves and confusion matrix on the test split, and its training history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from medattn.plots.clinical import _mark_operating_points
from medattn.plots.common import _METRIC_LABELS, _new_figure

#: Metrics drawn by :func:`history_figures`, in order; each becomes ``history/<metric>.png``.
HISTORY_METRICS = ("loss", "accuracy", "auc")


def roc_curve_figure(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    title: str = "",
    class_names: Sequence[str] | None = None,
    operating_points: Mapping[str, float] | None = None,
) -> Figure:
    """ROC curve(s) with the AUC in the legend.

    Binary (``C == 2``): one curve of ``scores[:, 1]`` against class 1. Multiclass: one
    one-vs-rest curve per class that has both positives and negatives in ``y_true``. A class
    (or a binary problem) with a single label in ``y_true`` has no ROC curve; the axes then say
    so instead of drawing one.

    Args:
        y_true: Integer labels, shape ``(N,)``, values in ``[0, C)``.
        scores: Class probabilities, shape ``(N, C)``.
        title: Axes title; ``"ROC curve"`` when empty.
        class_names: ``C`` names for the multiclass legend; ``"class <c>"`` when omitted.
        operating_points: binary only: ``{label: threshold}``; each is marked on the curve at the
            (false positive rate, sensitivity) the threshold gives on these data (predict class 1
            when ``scores[:, 1] >= threshold``), e.g. thresholds chosen on another split.

    Returns:
        The figure.

    Raises:
        ValueError: If the shapes disagree or ``class_names`` has the wrong length.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2 or y.shape != (s.shape[0],):
        raise ValueError(
            f"roc_curve_figure needs y_true of shape (N,) and scores of shape (N, C >= 2), got {y.shape} and {s.shape}."
        )
    n_classes = s.shape[1]
    if class_names is not None and len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {n_classes} score columns.")
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(n_classes)]

    fig, ax = _new_figure()
    # Binary problems have one curve, for the positive class (column 1).
    curves = [1] if n_classes == 2 else list(range(n_classes))
    drawn = 0
    for c in curves:
        positive = y == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, s[:, c])
        auc = roc_auc_score(positive, s[:, c])
        label = f"AUC = {auc:.3f}" if n_classes == 2 else f"{names[c]} (AUC = {auc:.3f})"
        ax.plot(fpr, tpr, linewidth=2, label=label)
        drawn += 1
    if operating_points and n_classes == 2 and drawn:
        _mark_operating_points(ax, y == 1, s[:, 1], operating_points)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    if drawn == 0:
        ax.text(0.5, 0.6, "undefined: y_true holds one class", ha="center", va="center")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(title or "ROC curve")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig


def confusion_matrix_figure(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "",
) -> Figure:
    """Confusion matrix heat map with the count written in every cell.

    Rows are true classes, columns predicted classes, both in the order of ``class_names``
    (class ``c`` is label ``c``).

    Args:
        y_true: Integer labels, shape ``(N,)``, values in ``[0, K)`` with ``K = len(class_names)``.
        y_pred: Integer predictions, shape ``(N,)``, same range.
        class_names: ``K`` class names for the tick labels.
        title: Axes title; ``"Confusion matrix"`` when empty.

    Returns:
        The figure; its first axes holds ``K * K`` texts, row by row, each the cell's count.

    Raises:
        ValueError: If the shapes disagree or a label is outside ``[0, K)``.
    """
    y = np.asarray(y_true)
    p = np.asarray(y_pred)
    k = len(class_names)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {y.shape} and {p.shape}.")
    for name, labels in (("y_true", y), ("y_pred", p)):
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"{name} labels must lie in [0, {k}) for {k} class names.")
    counts = confusion_matrix(y, p, labels=np.arange(k))

    fig, ax = _new_figure()
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(int(counts.max()), 1))
    colorbar = fig.colorbar(image, ax=ax, label="count")
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    # White text on dark cells, black on light ones.
    threshold = counts.max() / 2.0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(counts[i, j])),
                ha="center",
                va="center",
                color="white" if counts[i, j] > threshold else "black",
            )
    ax.set_xticks(np.arange(k), labels=list(class_names))
    ax.set_yticks(np.arange(k), labels=list(class_names))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title or "Confusion matrix")
    return fig


def history_figure(
    history: Mapping[str, Sequence[float]],
    metric: str,
    *,
    title: str = "",
) -> Figure:
    """Training and validation curves of one metric against the epoch.

    Args:
        history: Per-epoch values keyed ``train_<metric>`` and ``val_<metric>``; each a sequence
            of length ``E`` (epoch ``i`` at index ``i``). Either key may be missing.
        metric: Metric name, e.g. ``"loss"``, ``"accuracy"`` or ``"auc"``.
        title: Axes title; the metric's readable name when empty.

    Returns:
        The figure; its axes hold the training line (label ``"train"``) then the validation line
        (label ``"validation"``), for the keys present, with x values ``0 .. E - 1``.

    Raises:
        ValueError: If neither ``train_<metric>`` nor ``val_<metric>`` is in ``history``.
    """
    series = [
        (label, history[key])
        for label, key in (("train", f"train_{metric}"), ("validation", f"val_{metric}"))
        if key in history
    ]
    if not series:
        raise ValueError(f"history has no 'train_{metric}' or 'val_{metric}'; it has {sorted(history)}.")
    fig, ax = _new_figure()
    for label, values in series:
        y = np.asarray(values, dtype=np.float64)
        ax.plot(np.arange(y.shape[0]), y, marker="o", markersize=3, label=label)
    readable = _METRIC_LABELS.get(metric, metric.replace("_", " "))
    ax.set_xlabel("Epoch")
    ax.set_ylabel(readable)
    ax.set_title(title or readable)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.grid(True, alpha=0.3)
    return fig


def history_figures(history: Mapping[str, Sequence[float]]) -> dict[str, Figure]:
    """History curves for each of :data:`HISTORY_METRICS` present in ``history``.

    Args:
        history: Per-epoch values keyed ``train_<metric>`` / ``val_<metric>``, as for
            :func:`history_figure`.

    Returns:
        ``{metric: figure}`` in the order of :data:`HISTORY_METRICS`, for the metrics with a
        train or validation series; ``metric`` is meant to be saved as ``history/<metric>.png``.
    """
    return {
        metric: history_figure(history, metric)
        for metric in HISTORY_METRICS
        if f"train_{metric}" in history or f"val_{metric}" in history
    }
