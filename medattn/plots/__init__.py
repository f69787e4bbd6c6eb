"""Plots of test results, training histories, explanations and comparisons: data in,
:class:`matplotlib.figure.Figure` out.

Every function builds a standalone ``Figure`` (no ``pyplot``, so no global figure registry, no
GUI backend and nothing to close); ``fig.savefig(path_or_buffer)`` renders it with Agg. The
same inputs give the same image. Figures are 6 x 4.5 inches at 100 dpi with a tight layout.

- :mod:`.training`: ROC curves, confusion matrix, training history of one run;
- :mod:`.saliency`: images and their attribution heat maps;
- :mod:`.comparison`: model variants side by side (low-data curves, explanation scores, forest plots);
- :mod:`.clinical`: reliability diagrams and per-subgroup forest plots;
- :mod:`.common`: the standard figure size and resolution.

The figures are re-exported here, so callers write ``from medattn import plots; plots.roc_curve_figure(...)``.
"""

from medattn.plots.clinical import reliability_figure, subgroup_forest_figure
from medattn.plots.comparison import forest_figure, low_data_figure, variant_style, xai_scores_figure
from medattn.plots.saliency import attribution_hwc, blended_heat_map_figure, image_figure, saliency_grid_figure
from medattn.plots.training import (
    HISTORY_METRICS,
    confusion_matrix_figure,
    history_figure,
    history_figures,
    roc_curve_figure,
)

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
