"""Figures that compare model variants: scores against the training fraction, explanation scores by
method, and forest plots of paired differences (one colour per backbone family, one line style and
marker per attention type).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from medattn import lazy
from medattn.plots.common import _METRIC_LABELS, DPI, FIGSIZE, _new_figure, ci_points, forest_axes

# matplotlib and scikit-learn load with the first figure, not with this package: the stage modules
# import it and the command line imports them for their configs, so ``--help`` stays light
figure = lazy.module("matplotlib.figure")
if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Low-data-regimen styles: the backbone family sets the colour, the attention block the line style.
_FAMILY_COLOURS = {"resnet": "tab:blue", "densenet": "tab:orange", "deit": "tab:green"}
_ATTENTION_STYLES = {"none": "-", "se": "--", "cbam": ":"}
_ATTENTION_MARKERS = {"none": "o", "se": "s", "cbam": "^"}


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
    fig = figure.Figure(
        figsize=(max(FIGSIZE[0], 1.2 * len(models) * len(scores)), FIGSIZE[1]), dpi=DPI, layout="constrained"
    )
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
    fig, ax, y = forest_axes(len(rows), row_height=0.55, margin=0.2)
    delta = np.array([float(r["delta"]) for r in rows])
    lo = np.array([float(r["ci_low"]) for r in rows])
    hi = np.array([float(r["ci_high"]) for r in rows])
    ci_points(ax, delta, y, lo, hi)
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
