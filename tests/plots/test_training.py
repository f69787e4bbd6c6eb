"""Tests of medattn.plots.training: pure figures, deterministic, showing the data they were given."""

from __future__ import annotations

import math
import subprocess
import sys
from io import BytesIO

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from medattn import plots

# Same hand-worked binary example as tests/test_metrics.py:
# y_true = [0, 0, 1, 1, 1], P(class 1) = [0.2, 0.6, 0.9, 0.6, 0.4], prediction = [0, 1, 1, 1, 0]
BIN_Y = np.array([0, 0, 1, 1, 1])
BIN_P1 = np.array([0.2, 0.6, 0.9, 0.6, 0.4])
BIN_SCORES = np.stack([1.0 - BIN_P1, BIN_P1], axis=1)
BIN_PRED = np.array([0, 1, 1, 1, 0])

MC_Y = np.array([0, 0, 1, 1, 2, 2])
MC_SCORES = np.array(
    [
        [0.6, 0.3, 0.1],
        [0.4, 0.5, 0.1],
        [0.2, 0.7, 0.1],
        [0.3, 0.4, 0.3],
        [0.1, 0.2, 0.7],
        [0.5, 0.2, 0.3],
    ]
)
MC_PRED = MC_SCORES.argmax(1)  # [0, 1, 1, 1, 2, 0]


def _png(fig: Figure) -> bytes:
    buffer = BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _assert_renders_non_blank(fig: Figure) -> None:
    """Renders to PNG, checks the size is 600 x 450 pixels and the image is not one colour."""
    image = mpimg.imread(BytesIO(_png(fig)))
    assert image.shape[:2] == (450, 600)
    assert image[..., :3].std() > 0.01


def test_roc_curve_binary_by_hand():
    fig = plots.roc_curve_figure(BIN_Y, BIN_SCORES, title="demo")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    curve, chance = ax.lines
    # Thresholds from high to low (negatives 0.2, 0.6; positives 0.9, 0.6, 0.4):
    #   >0.9: (FPR, TPR) = (0, 0); 0.9: (0, 1/3); 0.6: (1/2, 2/3); 0.4: (1/2, 1); 0.2: (1, 1)
    np.testing.assert_allclose(curve.get_xdata(), [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.get_ydata(), [0, 1 / 3, 2 / 3, 1, 1])
    assert curve.get_label() == "AUC = 0.750"  # 4.5 of 6 pairs, see test_metrics
    assert chance.get_label() == "chance"
    assert ax.get_title() == "demo"
    assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["AUC = 0.750", "chance"]
    _assert_renders_non_blank(fig)


def test_roc_curve_multiclass_one_curve_per_class():
    fig = plots.roc_curve_figure(MC_Y, MC_SCORES, class_names=["a", "b", "c"])
    labels = [line.get_label() for line in fig.axes[0].lines]
    # one-vs-rest AUCs by hand: 7/8, 7/8, 15/16 (see test_metrics)
    assert labels == ["a (AUC = 0.875)", "b (AUC = 0.875)", "c (AUC = 0.938)", "chance"]
    assert fig.axes[0].get_title() == "ROC curve"
    _assert_renders_non_blank(fig)


def test_roc_curve_single_class_draws_no_curve():
    fig = plots.roc_curve_figure(np.ones(3, dtype=int), BIN_SCORES[:3])
    assert [line.get_label() for line in fig.axes[0].lines] == ["chance"]
    assert "undefined" in fig.axes[0].texts[0].get_text()
    _assert_renders_non_blank(fig)


def test_roc_curve_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        plots.roc_curve_figure(BIN_Y, BIN_P1)
    with pytest.raises(ValueError, match="class_names"):
        plots.roc_curve_figure(MC_Y, MC_SCORES, class_names=["a", "b"])


def test_confusion_matrix_cells_are_the_counts_binary():
    fig = plots.confusion_matrix_figure(BIN_Y, BIN_PRED, ["benign", "malignant"], title="cm")
    ax = fig.axes[0]
    # rows true, columns predicted: [[TN, FP], [FN, TP]] = [[1, 1], [1, 2]]
    assert [t.get_text() for t in ax.texts] == ["1", "1", "1", "2"]
    assert [t.get_position() for t in ax.texts] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["benign", "malignant"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["benign", "malignant"]
    assert ax.get_xlabel() == "Predicted class" and ax.get_ylabel() == "True class"
    assert ax.get_title() == "cm"
    np.testing.assert_array_equal(ax.images[0].get_array(), [[1, 1], [1, 2]])
    _assert_renders_non_blank(fig)


def test_confusion_matrix_cells_are_the_counts_multiclass():
    fig = plots.confusion_matrix_figure(MC_Y, MC_PRED, ["a", "b", "c"])
    # true 0 -> predicted 0, 1; true 1 -> 1, 1; true 2 -> 2, 0
    expected = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert [t.get_text() for t in fig.axes[0].texts] == [str(c) for row in expected for c in row]
    _assert_renders_non_blank(fig)


def test_confusion_matrix_rejects_labels_outside_the_class_names():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        plots.confusion_matrix_figure(MC_Y, MC_PRED, ["a", "b"])


HISTORY = {
    "train_loss": [0.9, 0.6, 0.4, 0.35],
    "val_loss": [1.0, 0.7, 0.65, 0.7],
    "train_accuracy": [0.5, 0.7, 0.8, 0.85],
    "val_accuracy": [0.45, 0.6, 0.7, 0.72],
    "val_auc": [0.5, 0.7, math.nan, 0.8],
    "lr": [1e-3, 1e-3, 1e-4, 1e-4],
}


def test_history_figure_plots_the_given_values():
    fig = plots.history_figure(HISTORY, "loss", title="run 1")
    ax = fig.axes[0]
    train, val = ax.lines
    assert train.get_label() == "train" and val.get_label() == "validation"
    np.testing.assert_array_equal(train.get_ydata(), HISTORY["train_loss"])
    np.testing.assert_array_equal(val.get_ydata(), HISTORY["val_loss"])
    np.testing.assert_array_equal(train.get_xdata(), [0, 1, 2, 3])  # epochs are 0-based
    assert ax.get_xlabel() == "Epoch" and ax.get_ylabel() == "Loss"
    assert ax.get_title() == "run 1"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
    _assert_renders_non_blank(fig)


def test_history_figure_with_only_validation_values_and_nan():
    fig = plots.history_figure(HISTORY, "auc")
    (val,) = fig.axes[0].lines
    assert val.get_label() == "validation"
    np.testing.assert_array_equal(val.get_ydata(), HISTORY["val_auc"])  # NaN kept as a gap
    _assert_renders_non_blank(fig)


def test_history_figure_rejects_a_missing_metric():
    with pytest.raises(ValueError, match="train_f1"):
        plots.history_figure(HISTORY, "f1")


def test_history_figures_keys_are_the_metrics_present():
    figs = plots.history_figures(HISTORY)
    assert list(figs) == ["loss", "accuracy", "auc"]
    assert all(isinstance(f, Figure) for f in figs.values())
    np.testing.assert_array_equal(figs["accuracy"].axes[0].lines[1].get_ydata(), HISTORY["val_accuracy"])
    only_loss = {"train_loss": [1.0, 0.5], "val_loss": [1.1, 0.8]}
    assert list(plots.history_figures(only_loss)) == ["loss"]
    assert plots.history_figures({"lr": [0.1]}) == {}


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.roc_curve_figure(MC_Y, MC_SCORES),
        lambda: plots.confusion_matrix_figure(BIN_Y, BIN_PRED, ["0", "1"]),
        lambda: plots.history_figure(HISTORY, "accuracy"),
    ],
    ids=["roc", "confusion", "history"],
)
def test_figures_are_deterministic_and_standard_size(make):
    first, second = make(), make()
    assert tuple(first.get_size_inches()) == (6.0, 4.5) and first.dpi == 100
    assert _png(first) == _png(second)


def test_import_and_use_without_pyplot():
    # Pure module: importing and drawing must not pull in pyplot (global figure registry, GUI).
    code = (
        "import sys, io, numpy as np\n"
        "from medattn import plots\n"
        "fig = plots.history_figure({'train_loss': [1.0, 0.5]}, 'loss')\n"
        "fig.savefig(io.BytesIO(), format='png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
