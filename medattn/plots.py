"""Plots of test results and training histories: data in, :class:`matplotlib.figure.Figure` out.

Every function builds a standalone ``Figure`` (no ``pyplot``, so no global figure registry, no
GUI backend and nothing to close); ``fig.savefig(path_or_buffer)`` renders it with Agg. The
same inputs give the same image. Figures are 6 x 4.5 inches at 100 dpi with a tight layout.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "HISTORY_METRICS",
    "attribution_hwc",
    "blended_heat_map_figure",
    "confusion_matrix_figure",
    "reliability_figure",
    "subgroup_forest_figure",
    "forest_figure",
    "history_figure",
    "history_figures",
    "image_figure",
    "low_data_figure",
    "roc_curve_figure",
    "saliency_grid_figure",
    "variant_style",
    "xai_scores_figure",
]

FIGSIZE = (6.0, 4.5)
DPI = 100

#: Metrics drawn by :func:`history_figures`, in order; each becomes ``history/<metric>.png``.
HISTORY_METRICS = ("loss", "accuracy", "auc")

_METRIC_LABELS = {
    "loss": "Loss",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "auc": "ROC AUC",
    "f1": "Macro F1",
    "precision": "Macro precision",
    "recall": "Macro recall",
}


def _figure(**kwargs: Any) -> Figure:
    """``matplotlib.figure.Figure(**kwargs)``."""
    # matplotlib loads with the first figure, not with this module: the stage modules import this
    # module and the command line imports them for their configs, so ``--help`` stays light
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _new_figure() -> tuple[Figure, object]:
    """A fresh figure of the standard size with one axes and a tight layout."""
    fig = _figure(figsize=FIGSIZE, dpi=DPI, layout="tight")
    return fig, fig.add_subplot()


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

    # scikit-learn loads when curves are drawn, not with this module (see _figure)
    from sklearn.metrics import roc_auc_score, roc_curve

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
    # scikit-learn and matplotlib load when a matrix is drawn, not with this module (see _figure)
    from matplotlib.ticker import MaxNLocator
    from sklearn.metrics import confusion_matrix  # (with the import above)

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
    # matplotlib.ticker is loaded with the figure (see _figure)
    from matplotlib.ticker import MaxNLocator

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


# ---- explanations and comparisons (medattn figures / medattn compare) ------------------------
#: Side of a single-image figure (original or blended heat map), inches at :data:`DPI`.
IMAGE_FIGSIZE = (4.0, 4.0)
#: Side of one cell of a grid figure, inches.
GRID_CELL = 2.0

# Low-data-regimen styles: the backbone family sets the colour, the attention block the line style.
_FAMILY_COLOURS = {"resnet": "tab:blue", "densenet": "tab:orange", "deit": "tab:green"}
_ATTENTION_STYLES = {"none": "-", "se": "--", "cbam": ":"}
_ATTENTION_MARKERS = {"none": "o", "se": "s", "cbam": "^"}


def attribution_hwc(attr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An attribution map as ``(H, W, C)`` for display over an ``(H, W)`` image.

    Args:
        attr: ``(C, H, W)`` (a CNN method's map, e.g. DeepLIFT or LRP) or a raw ``(g, g)`` patch
            map (transformer-lrp), which is upsampled bilinearly to ``size``.
        size: ``(H, W)`` of the image the map is shown on.

    Returns:
        ``float64`` array ``(H, W, C)``; ``C == 1`` for a 2-D map.

    Raises:
        ValueError: If ``attr`` is neither 2-D nor 3-D, or a 3-D map does not match ``size``.
    """
    a = np.asarray(attr, dtype=np.float64)
    if a.ndim == 2:
        if a.shape != tuple(size):
            t = torch.from_numpy(a)[None, None]
            a = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()
        return a[:, :, None]
    if a.ndim == 3:
        if a.shape[1:] != tuple(size):
            raise ValueError(f"a (C, H, W) map of shape {a.shape} does not match the image size {tuple(size)}.")
        return np.transpose(a, (1, 2, 0))
    raise ValueError(f"an attribution map must be (C, H, W) or (g, g), got shape {a.shape}.")


def _blend(fig: Figure, ax, attr: np.ndarray, image: np.ndarray, alpha_overlay: float, title: str) -> None:
    """Draw captum's blended heat map (grey image, ``bwr`` map, sign ``all``) on ``ax``.

    Non-finite map values are drawn as 0 and an all-zero map as the bare greyscale image, each
    with a note on the axes, so that a broken explanation is visible rather than a crash.
    """
    # Imported here, not at the top: captum's visualization imports matplotlib.pyplot (a global
    # figure registry and GUI backend), which the other plots of this module never need.
    from captum.attr import visualization as viz

    img = np.asarray(image)
    attr_hwc = attribution_hwc(attr, img.shape[:2])
    finite = np.isfinite(attr_hwc)
    note = ""
    if not finite.all():
        # captum's percentile threshold fails on NaN; show what is finite and say so on the figure.
        attr_hwc = np.where(finite, attr_hwc, 0.0)
        note = f"{100.0 * (1.0 - finite.mean()):.0f}% non-finite values shown as 0"
    if not np.any(attr_hwc):
        # captum normalises by a percentile of |attr|; an all-zero map would divide by ~0.
        ax.imshow(img.mean(axis=2), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title)
        note = note or "all-zero map"
    else:
        with warnings.catch_warnings():
            # tiny but non-zero maps (e.g. 1e-6) are rescaled correctly; captum warns all the same
            warnings.filterwarnings("ignore", message="Attempting to normalize by value approximately 0")
            viz.visualize_image_attr(
                attr_hwc,
                img,
                method="blended_heat_map",
                sign="all",
                cmap="bwr",
                alpha_overlay=alpha_overlay,
                plt_fig_axis=(fig, ax),
                title=title or None,
                use_pyplot=False,
            )
    if note:
        ax.text(
            0.5,
            0.02,
            note,
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize="x-small",
            color="black",
            backgroundcolor="white",
        )


def image_figure(image: np.ndarray, *, title: str = "") -> Figure:
    """An input image as the model saw it, at the size of :func:`blended_heat_map_figure`.

    Args:
        image: ``(H, W, 3)`` uint8.
        title: Axes title.

    Returns:
        A 400 x 400 pixel figure.
    """
    fig = _figure(figsize=IMAGE_FIGSIZE, dpi=DPI, layout="tight")
    ax = fig.add_subplot()
    ax.imshow(np.asarray(image))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


def blended_heat_map_figure(
    attr: np.ndarray, image: np.ndarray, *, alpha_overlay: float = 0.5, title: str = ""
) -> Figure:
    """captum's ``blended_heat_map`` (sign ``all``, ``bwr``): the map over the greyscale image.

    Args:
        attr: ``(C, H, W)`` map or raw ``(g, g)`` transformer map (see :func:`attribution_hwc`).
        image: ``(H, W, 3)`` uint8, the model's view of the image.
        alpha_overlay: Opacity of the heat map over the image, in ``[0, 1]``.
        title: Axes title.

    Returns:
        A 400 x 400 pixel figure: red is positive relevance, blue negative.
    """
    fig = _figure(figsize=IMAGE_FIGSIZE, dpi=DPI, layout="tight")
    _blend(fig, fig.add_subplot(), attr, image, alpha_overlay, title)
    return fig


def saliency_grid_figure(
    images: Sequence[np.ndarray],
    maps: Sequence[Sequence[np.ndarray | None]],
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    alpha_overlay: float = 0.5,
    title: str = "",
) -> Figure:
    """A grid: one row per image, the original first, then one blended heat map per column.

    Args:
        images: ``R`` images, each ``(H, W, 3)`` uint8.
        maps: ``R`` rows of ``K`` maps (``(C, H, W)`` or ``(g, g)``); ``None`` leaves a cell empty.
        row_labels: ``R`` labels written left of each row (e.g. id, label, prediction).
        col_labels: ``K`` column titles (a method, or ``model / method``).
        alpha_overlay: Opacity of the heat maps.
        title: Figure title.

    Returns:
        A figure of ``(K + 1) * 200`` x ``R * 200`` pixels (plus a title band when titled).

    Raises:
        ValueError: If the numbers of images, rows and labels disagree.
    """
    n_rows, n_cols = len(images), len(col_labels) + 1
    if n_rows == 0 or len(maps) != n_rows or len(row_labels) != n_rows:
        raise ValueError(
            f"saliency_grid_figure needs R >= 1 images with R rows of maps and R row labels, "
            f"got {n_rows}, {len(maps)} and {len(row_labels)}."
        )
    if any(len(row) != n_cols - 1 for row in maps):
        raise ValueError(f"every row of maps needs {n_cols - 1} entries, one per column label.")
    fig = _figure(
        figsize=(GRID_CELL * n_cols, GRID_CELL * n_rows + (0.4 if title else 0.0)), dpi=DPI, layout="constrained"
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        ax = axes[r][0]
        ax.imshow(np.asarray(images[r]))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(row_labels[r], fontsize="small")
        if r == 0:
            ax.set_title("image", fontsize="small")
        for k, attr in enumerate(maps[r]):
            ax = axes[r][k + 1]
            if attr is None:
                ax.set_axis_off()
                continue
            _blend(fig, ax, attr, images[r], alpha_overlay, "")
            if r == 0:
                ax.set_title(col_labels[k], fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def variant_style(model: str) -> dict[str, str]:
    """Colour, line style and marker of a model variant in the low-data-regimen figure.

    The backbone family sets the colour (ResNet blue, DenseNet orange, DeiT green, others grey);
    the attention block sets the line style (none solid, SE dashed, CBAM dotted).

    Args:
        model: Variant name, e.g. ``"cbam_resnet50"``, ``"se_densenet121"``, ``"deit_tiny"``.

    Returns:
        ``{"color": ..., "linestyle": ..., "marker": ...}`` for ``Axes.plot``.
    """
    name = model.lower()
    attention = next((a for a in ("cbam", "se") if name.startswith(f"{a}_") or f"_{a}" in name), "none")
    family = next((f for f in ("densenet", "resnet", "deit") if f in name), None)
    colour = _FAMILY_COLOURS.get(family, "tab:grey")
    if family == "deit":
        return {"color": colour, "linestyle": "-.", "marker": "D"}
    return {"color": colour, "linestyle": _ATTENTION_STYLES[attention], "marker": _ATTENTION_MARKERS[attention]}


def low_data_figure(
    rows: Sequence[Mapping[str, object]],
    metric: str,
    *,
    title: str = "",
    reference: tuple[float, float, float] | None = None,
) -> Figure:
    """A metric against the percentage of training data, one line per model variant.

    Args:
        rows: One mapping per (variant, fraction) with keys ``model``, ``perc_train`` (a fraction in
            ``(0, 1]``), ``value`` and optionally ``ci_low`` / ``ci_high`` (drawn as a band).
        metric: Metric name for the y label, e.g. ``"test_auc"``.
        title: Axes title; ``"Low-data regimen"`` when empty.
        reference: ``(value, ci_low, ci_high)`` of a known ceiling (the oracle's AUC), drawn as a
            dashed black line labelled ``oracle`` with a grey band (NaN bounds: no band).

    Returns:
        The figure; its axes hold one line per variant (label = the variant, in first-seen order)
        with x = ``100 * perc_train`` sorted ascending and y = ``value``, then the reference line.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("low_data_figure needs at least one row.")
    variants: dict[str, list[Mapping[str, object]]] = {}
    for row in rows:
        variants.setdefault(str(row["model"]), []).append(row)
    fig, ax = _new_figure()
    for model, points in variants.items():
        points = sorted(points, key=lambda p: float(p["perc_train"]))
        x = np.array([100.0 * float(p["perc_train"]) for p in points])
        y = np.array([float(p["value"]) for p in points])
        style = variant_style(model)
        ax.plot(x, y, label=model, linewidth=2, markersize=5, **style)
        lo = np.array([float(p.get("ci_low", np.nan)) for p in points])
        hi = np.array([float(p.get("ci_high", np.nan)) for p in points])
        if np.isfinite(lo).all() and np.isfinite(hi).all():
            ax.fill_between(x, lo, hi, color=style["color"], alpha=0.12, linewidth=0)
    if reference is not None:
        value, low, high = (float(v) for v in reference)
        ax.axhline(value, color="black", linestyle="--", linewidth=1.5, label=f"oracle {value:.3f} (known ceiling)")
        if np.isfinite(low) and np.isfinite(high):
            ax.axhspan(low, high, color="grey", alpha=0.15, linewidth=0)
    readable = metric.removeprefix("test_")
    ax.set_xlabel("Training data (%)")
    ax.set_ylabel(f"Test {_METRIC_LABELS.get(readable, readable.replace('_', ' '))}")
    ax.set_title(title or "Low-data regimen")
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig


def xai_scores_figure(rows: Sequence[Mapping[str, object]], *, title: str = "") -> Figure:
    """Explanation scores as grouped bars: one panel per score, one group per model, one bar per method.

    Args:
        rows: One mapping per (model, method, score) with keys ``model``, ``method``, ``score``
            (e.g. ``"deletion_auc"``) and ``value``.
        title: Figure title; ``"Explanation scores"`` when empty.

    Returns:
        The figure; panel ``s`` (in first-seen score order) holds one bar container per method,
        whose bar heights are the values in model order (``nan`` where a model lacks the method).

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("xai_scores_figure needs at least one row.")
    scores = list(dict.fromkeys(str(r["score"]) for r in rows))
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    values = {(str(r["model"]), str(r["method"]), str(r["score"])): float(r["value"]) for r in rows}
    fig = _figure(figsize=(max(FIGSIZE[0], 1.2 * len(models) * len(scores)), FIGSIZE[1]), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    width = 0.8 / len(methods)
    x = np.arange(len(models))
    for ax, score in zip(axes, scores, strict=True):
        for j, method in enumerate(methods):
            heights = [values.get((m, method, score), np.nan) for m in models]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, heights, width, label=method)
        ax.set_xticks(x, labels=models, rotation=30, ha="right", fontsize="small")
        ax.set_title(score.replace("_", " "))
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title or "Explanation scores")
    return fig


def forest_figure(
    rows: Sequence[Mapping[str, object]],
    *,
    xlabel: str = "ΔAUC (variant − plain backbone)",
    title: str = "",
) -> Figure:
    """A forest plot: one row per comparison, its difference with the 95 % CI as a horizontal bar.

    Args:
        rows: One mapping per comparison, top to bottom, with keys ``label`` (e.g.
            ``"se_resnet50 vs resnet50"``), ``delta``, ``ci_low``, ``ci_high`` and optionally
            ``p_value`` (printed at the right of the row).
        xlabel: x axis label.
        title: Axes title; ``"Paired differences (95 % bootstrap CI)"`` when empty.

    Returns:
        The figure; its axes hold one error-bar container (x = ``delta``, one point per row, row
        ``i`` at y = ``-i``) and a dashed vertical line at 0 (no difference).

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("forest_figure needs at least one row.")
    fig = _figure(figsize=(FIGSIZE[0], max(2.0, 0.2 + 0.55 * len(rows))), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    y = -np.arange(len(rows), dtype=float)
    delta = np.array([float(r["delta"]) for r in rows])
    lo = np.array([float(r["ci_low"]) for r in rows])
    hi = np.array([float(r["ci_high"]) for r in rows])
    err = np.vstack([np.where(np.isfinite(lo), delta - lo, 0.0), np.where(np.isfinite(hi), hi - delta, 0.0)])
    ax.errorbar(delta, y, xerr=err, fmt="s", color="tab:blue", ecolor="tab:blue", capsize=4, markersize=6)
    ax.axvline(0.0, color="tab:grey", linestyle="--", linewidth=1)
    ax.set_yticks(y, labels=[str(r["label"]) for r in rows], fontsize="small")
    for yi, row in zip(y, rows, strict=True):
        p = row.get("p_value")
        if p is not None and np.isfinite(float(p)):
            ax.annotate(
                f"p = {float(p):.2g}",
                (1.0, yi),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize="small",
            )
    ax.set_ylim(y[-1] - 0.7, 0.7)
    ax.set_xlabel(xlabel)
    ax.set_title(title or "Paired differences (95 % bootstrap CI)")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# =============================================================================================
# clinical evaluation: operating points, reliability diagram, subgroup forest plot
# =============================================================================================
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
    fig = _figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
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
    fig = _figure(figsize=(FIGSIZE[0], max(2.0, 0.4 + 0.4 * len(rows))), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    y = -np.arange(len(rows), dtype=float)
    ok = np.array([r.get("status") == "ok" and np.isfinite(float(r["value"])) for r in rows])
    if ok.any():
        v = np.array([float(r["value"]) for r in rows])[ok]
        lo = np.array([float(r["ci_low"]) for r in rows])[ok]
        hi = np.array([float(r["ci_high"]) for r in rows])[ok]
        err = np.vstack([np.where(np.isfinite(lo), v - lo, 0.0), np.where(np.isfinite(hi), hi - v, 0.0)])
        ax.errorbar(v, y[ok], xerr=err, fmt="s", color="tab:blue", ecolor="tab:blue", capsize=4, markersize=6)
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
