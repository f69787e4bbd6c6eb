"""medattn.tracking.names: the tag names and artifact paths existing stores already hold.

They are a file format: renaming one orphans every run logged before, so each is pinned here.
"""

from __future__ import annotations

from medattn import tracking
from medattn.tracking import names


def test_artifact_paths_are_the_documented_ones():
    assert (names.CONFIG_FILE, names.BEST_CKPT, names.LAST_CKPT) == (
        "config.yaml",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    )
    assert names.epoch_ckpt(0) == "checkpoints/epoch_0000.pt" and names.epoch_ckpt(12) == "checkpoints/epoch_0012.pt"
    assert (names.SPLITS_DIR, names.MODEL_SUMMARY, names.HISTORY_DIR, names.PREDICTIONS) == (
        "splits",
        "model_summary.txt",
        "history",
        "predictions.csv",
    )
    assert (names.SALIENCY_INDEX, names.INPUTS_DIR, names.XAI_CSV) == ("saliency/index.csv", "inputs", "xai_scores.csv")
    assert names.heat_map_artifact("lrp", "img_1") == "figures/lrp/img_1.png"
    assert (names.ORIGINAL_DIR, names.GRID_FIGURE, names.FIGURES_HISTORY_DIR) == (
        "figures/original",
        "figures/grid.png",
        "figures/history",
    )
    assert (names.COMPARISON_CSV, names.LOW_DATA_FIGURE, names.XAI_FIGURE, names.COMPARE_GRID_FIGURE) == (
        "comparison.csv",
        "figures/low_data.png",
        "figures/xai_scores.png",
        "figures/saliency_grid.png",
    )
    assert names.cases_csv("tp") == "cases/tp.csv" and names.cases_figure("tp") == "figures/cases_tp.png"


def test_tags_and_registry_names_are_the_documented_ones():
    assert (names.TAG_KIND, names.TAG_SOURCE_RUN, names.TAG_MODEL, names.TAG_DATASET, names.TAG_SPLIT) == (
        "medattn.kind",
        "medattn.source_run",
        "medattn.model",
        "medattn.dataset",
        "medattn.split",
    )
    assert (names.TAG_MODEL_ID, names.TAG_PERC_TRAIN, names.TAG_FIGURES) == (
        "medattn.logged_model_id",
        "medattn.perc_train",
        "medattn.figures",
    )
    assert names.registered_model_name("demo") == "medattn-demo" == names.experiment_name("demo")
    assert (names.ENV_RUN_ID, names.ENV_EXPERIMENT_ID) == ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")


def test_every_name_is_reachable_from_the_package():
    """``from medattn import tracking; tracking.X`` works for every constant of names.py."""
    constants = [k for k in vars(names) if k.isupper() and not k.startswith("_")]
    assert len(constants) >= 30
    assert all(getattr(tracking, k) == getattr(names, k) for k in constants)
