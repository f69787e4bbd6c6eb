"""Every MLflow name medattn writes: tags, artifact paths, registry and experiment names.

Stages hand over MLflow identifiers (run ids, ``models:/NAME@ALIAS``) rather than local paths
(a path means nothing on another machine or server); the names below are the only spelling of each artifact and tag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from medattn.data.ids import safe_name

# ---- artifacts of a training run ------------------------------------------------------------
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
BEST_CKPT = "checkpoints/best.pt"
LAST_CKPT = "checkpoints/last.pt"
CHECKPOINT_MANIFEST = "checkpoints/manifest.json"  # sha256 and size of every checkpoint uploaded
SPLITS_DIR = "splits"
DUPLICATE_GROUPS = "splits/duplicate_groups.csv"  # one row per image in a near-duplicate group
MODEL_SUMMARY = "model_summary.txt"
HISTORY_DIR = "history"
MODEL_NAME = "model"
# ---- test runs ------------------------------------------------------------------------------
PREDICTIONS = "predictions.csv"
PREDICTIONS_TABLE = "predictions.json"  # the same rows as an MLflow table (mlflow.log_table), shown by the UI
TEST_FIGURES_DIR = "figures"
# ---- interpret / figures / compare ----------------------------------------------------------
SALIENCY_DIR = "saliency"  # saliency/<method>/<image_id>.npy
INPUTS_DIR = "inputs"  # inputs/<image_id>.png (the model's view of the image)
SALIENCY_INDEX = "saliency/index.csv"
SALIENCY_ID_MAP = "saliency/id_map.csv"  # id,name of every image id whose file name had to change (safe_name)
FIGURES_DIR = "figures"
ORIGINAL_DIR = "figures/original"  # figures/original/<image_id>.png
GRID_FIGURE = "figures/grid.png"
FIGURES_HISTORY_DIR = "figures/history"  # figures/history/<metric>.png
COMPARISON_CSV = "comparison.csv"
XAI_CSV = "xai_scores.csv"
LOW_DATA_FIGURE = "figures/low_data.png"
XAI_FIGURE = "figures/xai_scores.png"
COMPARE_GRID_FIGURE = "figures/saliency_grid.png"
PAIRED_CSV = "paired_auc.csv"  # ΔAUC of each attention variant vs its plain backbone
FOREST_FIGURE = "figures/forest_auc.png"  # the same ΔAUCs with their paired bootstrap CIs
# ---- search ---------------------------------------------------------------------------------
SEARCH_SPACE_FILE = "search_space.yaml"
TRIALS_FILE = "trials.csv"
SEARCH_HISTORY_FIGURE = "figures/optimization_history.png"  # Optuna's plot, on the parent run
SEARCH_IMPORTANCE_FIGURE = "figures/param_importances.png"

# ---- run tags -------------------------------------------------------------------------------
TAG_KIND = "medattn.kind"  # train | test | interpret | figures | compare | search | demo
TAG_SOURCE_RUN = "medattn.source_run"
TAG_DATASET = "medattn.dataset"
TAG_MODEL = "medattn.model"
TAG_SPLIT = "medattn.split"
TAG_MODEL_ID = "medattn.logged_model_id"
TAG_PERC_TRAIN = "medattn.perc_train"
TAG_FIGURES = "medattn.figures"  # set on an interpret run once `medattn figures` logged to it
TAG_DATA_PIPELINE = "medattn.data_pipeline"  # what --data-pipeline auto resolved to
TAG_RESUMED_TO = "medattn.resumed_to_epochs"
TAG_BEST_EPOCH = "medattn.best_epoch"
TAG_CHAMPION = "medattn.champion"
TAG_TRIAL_NUMBER = "medattn.trial_number"
TAG_STUDY = "medattn.study"
TAG_TRIAL_STATE = "medattn.trial_state"
TAG_RETRY_OF = "medattn.retry_of_trial"  # a retried trial (its worker died): the first trial it retries
TAG_BEST_TRIAL_RUN = "best_trial_run_id"
TAG_BEST_TRIAL_NUMBER = "best_trial_number"
TAG_DESCRIPTION = "mlflow.note.content"  # the run's description in the MLflow UI
# ---- params ---------------------------------------------------------------------------------
RESOLVED_PREFIX = "resolved."  # resolved.<key>: medattn's value of a param `mlflow run` logged in another spelling
# ---- model-version tags (promote) -----------------------------------------------------------
VTAG_METRIC = "medattn.metric"
VTAG_METRIC_VALUE = "medattn.metric_value"
VTAG_VARIANT = "medattn.variant"
VTAG_DATASET = "medattn.dataset"
VTAG_RUN = "medattn.source_run"
# ---- environment ----------------------------------------------------------------------------
ENV_RUN_ID = "MLFLOW_RUN_ID"  # set by `mlflow run`: the project run a stage logs into
ENV_EXPERIMENT_ID = "MLFLOW_EXPERIMENT_ID"


def resolved_param(key: str) -> str:
    """Param key of medattn's normalised value when ``mlflow run`` already logged ``key`` as spelled
    on its command line (``lr`` = ``1e-3`` → ``resolved.lr`` = ``0.001``)."""
    return f"{RESOLVED_PREFIX}{key}"


def dataset_name(dataset: str, split: str) -> str:
    """Name of a split manifest logged as an MLflow Dataset, ``<dataset>-<split>`` (e.g. ``demo-train``)."""
    return f"{dataset}-{split}"


def _fraction(perc_train: str | None) -> str:
    try:
        value = float(perc_train) if perc_train is not None else 1.0
    except ValueError:
        return ""
    return "" if value >= 1.0 else f" ({value:.0%} of the training split)"


def _source(tags: Mapping[str, str]) -> str:
    source = tags.get(TAG_SOURCE_RUN)
    return f" from training run {source}" if source else ""


# One sentence per run kind, from the run's medattn tags (``describe_run``); kinds not listed get none.
_DESCRIPTIONS: dict[str, Callable[[Mapping[str, str]], str]] = {
    "train": lambda t: f"{t[TAG_MODEL]} trained on {t[TAG_DATASET]}{_fraction(t.get(TAG_PERC_TRAIN))}.",
    "test": lambda t: f"{t[TAG_MODEL]}{_source(t)} tested on the {t[TAG_SPLIT]} split of {t[TAG_DATASET]}.",
    "interpret": lambda t: f"{t[TAG_MODEL]}{_source(t)} explained on the {t[TAG_SPLIT]} split of {t[TAG_DATASET]}.",
}


def describe_run(tags: Mapping[str, str]) -> str | None:
    """The one-sentence description of a run with these medattn tags (what was trained, tested or
    explained on what), or ``None`` for a kind without one or tags that lack a part of it."""
    describe = _DESCRIPTIONS.get(tags.get(TAG_KIND, ""))
    try:
        return describe(tags) if describe is not None else None
    except KeyError:
        return None


def epoch_ckpt(epoch: int) -> str:
    """Artifact path of the periodic checkpoint after 0-based ``epoch``."""
    return f"{CHECKPOINT_DIR}/epoch_{epoch:04d}.pt"


def heat_map_artifact(method: str, image_id: str) -> str:
    """Artifact path of one blended heat map, ``figures/<method>/<image_id>.png`` (both made file-safe by
    :func:`medattn.data.ids.safe_name`: they come from an index that may have been written by anyone)."""
    return f"{FIGURES_DIR}/{safe_name(method)}/{safe_name(image_id)}.png"


def original_artifact(image_id: str) -> str:
    """Artifact path of one explained image as drawn by ``figures``, ``figures/original/<image_id>.png`` (file-safe)."""
    return f"{ORIGINAL_DIR}/{safe_name(image_id)}.png"


def cases_csv(case: str) -> str:
    """Artifact path of a case list, ``cases/<case>.csv``."""
    return f"cases/{case}.csv"


def cases_figure(case: str) -> str:
    """Artifact path of a case grid, ``figures/cases_<case>.png``."""
    return f"{FIGURES_DIR}/cases_{case}.png"


def registered_model_name(dataset: str) -> str:
    """Registry name of a data set's models, ``medattn-<dataset>``."""
    return f"medattn-{dataset}"


def experiment_name(dataset: str) -> str:
    """Default experiment of a data set, ``medattn-<dataset>``."""
    return f"medattn-{dataset}"
