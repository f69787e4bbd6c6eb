"""Figures of attribution maps: an image, its heat map blended over it, and grids of images × methods."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from medattn.plots.common import DPI

#: Side of a single-image figure (original or blended heat map), inches at :data:`DPI`.
IMAGE_FIGSIZE = (4.0, 4.0)
#: Side of one cell of a grid figure, inches.
GRID_CELL = 2.0


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
    fig = Figure(figsize=IMAGE_FIGSIZE, dpi=DPI, layout="tight")
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
    fig = Figure(figsize=IMAGE_FIGSIZE, dpi=DPI, layout="tight")
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
    fig = Figure(
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
