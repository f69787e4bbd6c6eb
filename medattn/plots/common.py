"""What every standard figure shares: its size and resolution, the metrics' axis labels, and the one place
that creates such a figure."""

from __future__ import annotations

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
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="tight")
    return fig, fig.add_subplot()
