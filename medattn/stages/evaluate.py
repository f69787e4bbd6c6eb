"""The ``evaluate`` stage (the ``medattn test`` command): a trained model on a split, with
bootstrap CIs, predictions and figures, logged to a new run linked to its source (``medattn test``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from medattn import clinical, engine, lazy, plots, tracking
from medattn.config import RuntimePart, SourcePart, at_least, check_subgroups, positive, set_field
from medattn.data.synthetic import ORACLE_COLUMN
from medattn.errors import MedattnError
from medattn.metrics import oracle_metrics, test_metrics
from medattn.runtime import resolve_device
from medattn.stages import clinical as clinical_stage
from medattn.stages.common import LoadedModel, data_index, load_trained, make_loader, predictions_frame

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help


@dataclass(frozen=True, kw_only=True)
class TestConfig(SourcePart, RuntimePart):
    """Options of ``medattn test``; exactly one of ``run_id``, ``model_uri``, ``ckpt``."""

    __test__ = False  # not a pytest class

    batch_size: int = 64
    num_workers: int = 0
    n_boot: int = 1000
    # clinical evaluation (docs/evaluation.md): subgroup attributes, MIMIC-IV patients table, minimum positives
    subgroups: tuple[str, ...] = ()
    patients_csv: str | None = None
    min_subgroup_positives: int = 10

    def __post_init__(self) -> None:  # noqa: D105
        super().__post_init__()
        positive("batch_size", self.batch_size)
        at_least("num_workers", self.num_workers, 0, "0 or more")
        at_least("n_boot", self.n_boot, 0, "0 or more")
        set_field(self, "subgroups", check_subgroups(self.subgroups))
        at_least("min_subgroup_positives", self.min_subgroup_positives, 1, "at least 1")


@dataclass(frozen=True)
class TestResult:
    """Outcome of :func:`test`: the new run and its ``test_*`` metrics."""

    __test__ = False  # not a pytest class

    run_id: str
    source_run_id: str | None
    metrics: dict[str, float]
    predictions: pd.DataFrame
    tracking_uri: str


def source_tags(kind: str, loaded: LoadedModel, split: str) -> dict[str, str]:
    """Tags of a run that reads a trained model (test, interpret)."""
    tcfg = loaded.config
    tags = {
        tracking.TAG_KIND: kind,
        tracking.TAG_DATASET: tcfg.data.dataset,
        tracking.TAG_MODEL: tcfg.model.model,
        tracking.TAG_SPLIT: split,
        tracking.TAG_PERC_TRAIN: str(tcfg.data.perc_train),
    }
    if loaded.source_run_id:
        tags[tracking.TAG_SOURCE_RUN] = loaded.source_run_id
    return tags


def _log_figures(loaded: LoadedModel, out: engine.EpochOutput, split: str, operating_points=None) -> None:
    names = list(loaded.class_names) or [str(k) for k in range(loaded.num_classes)]
    title = f"{loaded.config.model.model} — {split}"
    tracking.log_figure(
        plots.roc_curve_figure(
            out.y_true, out.scores, title=title, class_names=names, operating_points=operating_points
        ),
        f"{tracking.TEST_FIGURES_DIR}/roc_curve.png",
    )
    tracking.log_figure(
        plots.confusion_matrix_figure(out.y_true, out.scores.argmax(1), names, title=title),
        f"{tracking.TEST_FIGURES_DIR}/confusion_matrix.png",
    )


def ceiling_metrics(frame: pd.DataFrame, out: engine.EpochOutput, cfg: TestConfig) -> dict[str, float]:
    """``oracle_auc`` and ``oracle_gap`` (with CIs) on exactly the tested images, where the data set
    carries the generator's ``oracle_prob`` (the demo set from version 3); empty otherwise."""
    if ORACLE_COLUMN not in frame.columns or out.scores.shape[1] != 2:
        return {}
    prob = frame[ORACLE_COLUMN].to_numpy(dtype=float)
    if len(prob) != len(out.y_true) or not np.isfinite(prob).all():
        return {}
    return oracle_metrics(out.y_true, prob, out.scores, n_boot=cfg.n_boot, seed=cfg.seed)


def load_source(cfg: SourcePart) -> LoadedModel:
    """The trained model a ``test`` / ``interpret`` config names: a run id, any model URI MLflow 3
    hands out (:func:`medattn.tracking.source_run_of`: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
    ``models:/m-<id>``, ``runs:/ID/...``) or a checkpoint file."""
    run_id = tracking.source_run_of(cfg.model_uri) if cfg.model_uri else cfg.run_id
    return load_trained(run_id, None, None if run_id else cfg.ckpt)


MANIFEST_COLUMNS = ("image_id", "label", "patient_id")
"""Columns of a split manifest (as the training run logs it under ``splits/``)."""


def log_split_input(loaded: LoadedModel, frame: pd.DataFrame, split: str, data_dir: str | None) -> None:
    """The evaluated split as an MLflow Dataset input (same name and digest as in the training run)."""
    cols = [c for c in MANIFEST_COLUMNS if c in frame.columns]
    tracking.log_dataset(
        frame[cols],
        name=tracking.dataset_name(loaded.config.data.dataset, split),
        context=split,
        source=str(data_dir or loaded.config.data.data_dir),
    )


def _calibrated(out: engine.EpochOutput, temperature: float) -> engine.EpochOutput:
    """The pass with its probabilities temperature-scaled (and its loss, the mean cross-entropy, recomputed)."""
    if temperature == 1.0:
        return out
    scores = clinical.apply_temperature(out.scores, temperature)
    return replace(out, scores=scores, loss=clinical.nll(out.y_true, scores))


def _validation_pass(cfg: TestConfig, index, loaded: LoadedModel, model, device, out, progress: bool):
    """``(labels, probabilities)`` of the validation split, where the operating points' thresholds are
    chosen (the tested pass itself when it is the validation split); ``None`` for multiclass tasks."""
    if loaded.num_classes != 2:
        return None
    if cfg.split == "val":
        return out.y_true, out.scores
    tcfg = loaded.config
    loader = make_loader(index, "val", tcfg, train=False, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    val = engine.evaluate(
        model, loader, nn.CrossEntropyLoss(), device, amp=False, desc="val (thresholds)", progress=progress
    )
    val = _calibrated(val, loaded.temperature)
    return val.y_true, val.scores


def _run_params(cfg: TestConfig, loaded: LoadedModel) -> dict:
    """The params of a test run: its source, split, model, data and bootstrap settings."""
    tcfg = loaded.config
    return {
        "source_run_id": loaded.source_run_id,
        "model_uri": cfg.model_uri,
        "checkpoint": loaded.checkpoint,
        "split": cfg.split,
        "model": tcfg.model.model,
        "dataset": tcfg.data.dataset,
        "img_size": tcfg.data.img_size,
        "perc_train": tcfg.data.perc_train,
        "n_boot": cfg.n_boot,
        "temperature": loaded.temperature,
    }


def _check_classes(data_classes: int, model_classes: int) -> None:
    if data_classes != model_classes:
        raise MedattnError(
            f"the model predicts {model_classes} classes but the data has {data_classes}; "
            "use the same task options (--multiclass) as in training."
        )


def test(
    cfg: TestConfig,
    *,
    parent_run_id: str | None = None,
    progress: bool = True,
    extra_tags: dict[str, str] | None = None,
) -> TestResult:
    """Evaluate a trained model on a split and log a linked test run (``medattn test``).

    ``extra_tags`` are added to the run (``medattn grid`` adds the cell and the process that tests it).

    Logs ``test_*`` metrics (with ``test_oracle_auc`` and ``test_oracle_gap`` and their CIs where
    the data set carries ``oracle_prob``, :func:`ceiling_metrics`), ``predictions.csv`` and the same rows as the MLflow table
    ``predictions.json``, ROC and confusion-matrix figures, and the split as a Dataset input; and the
    clinical evaluation of :mod:`medattn.stages.clinical` (docs/evaluation.md): ``test_ece``,
    ``test_brier``, ``figures/reliability.png``, for binary tasks the operating points with
    thresholds chosen on the validation split, and with ``cfg.subgroups`` per-subgroup metrics,
    ``subgroups.csv`` and ``figures/subgroups_forest.png``. A calibrated model (``medattn
    calibrate``) is tested with its temperature and also logs ``test_ece_uncalibrated`` and
    ``test_ece_change``.
    """
    uri = tracking.connect(cfg.tracking_uri)
    split = cfg.split
    loaded = load_source(cfg)
    tcfg = loaded.config
    device = resolve_device(cfg.device)
    index = data_index(tcfg, cfg.data_dir)
    _check_classes(index.num_classes, loaded.num_classes)
    loader = make_loader(index, split, tcfg, train=False, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    frame = index.split(split)
    # before the run starts: a subgroup the data lack is a user error, not a failed run
    groups = None
    if cfg.subgroups or cfg.patients_csv:
        groups = clinical_stage.subgroup_values(index, frame, cfg.subgroups, cfg.patients_csv) or None
    experiment_id = tracking.stage_experiment(cfg.experiment, tcfg.data.dataset, uri, loaded.source_run_id)
    model = loaded.model.to(device)
    with tracking.stage_run(
        experiment_id=experiment_id,
        run_id=tracking.project_run_id(parent_run_id),
        run_name=f"test-{tcfg.model.model}-{split}",
        tags={**source_tags("test", loaded, split), **(extra_tags or {})},
        parent_run_id=parent_run_id,
    ) as run_id:
        tracking.log_params(_run_params(cfg, loaded))
        raw = engine.evaluate(
            model, loader, nn.CrossEntropyLoss(), device, amp=False, desc=f"test {split}", progress=progress
        )
        out = _calibrated(raw, loaded.temperature)
        metrics = {
            "loss": out.loss,
            **test_metrics(out.y_true, out.scores, n_boot=cfg.n_boot, seed=cfg.seed),
            "n_images": float(out.n_images),
            **ceiling_metrics(frame, out, cfg),
        }
        clin = clinical_stage.evaluate_clinical(
            out.y_true,
            out.scores,
            split=split,
            val=_validation_pass(cfg, index, loaded, model, device, out, progress),
            groups=groups,
            min_positives=cfg.min_subgroup_positives,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
        )
        metrics.update(clin.metrics)
        if loaded.temperature != 1.0:
            metrics["ece_uncalibrated"] = clinical.expected_calibration_error(raw.y_true, raw.scores)
            metrics["ece_change"] = metrics["ece"] - metrics["ece_uncalibrated"]
        logged = tracking.finite({f"test_{k}": v for k, v in metrics.items()})
        tracking.log_metrics(logged)
        preds = predictions_frame(frame["image_id"].astype(str).tolist(), out.y_true, out.scores)
        tracking.log_text(preds.to_csv(index=False), tracking.PREDICTIONS)
        tracking.log_table(preds, tracking.PREDICTIONS_TABLE)
        log_split_input(loaded, frame, split, cfg.data_dir)
        _log_figures(loaded, out, split, clinical_stage.thresholds_of(clin))
        clinical_stage.log_clinical(clin, out.y_true, out.scores, f"{tcfg.model.model} — {split}")
    return TestResult(run_id, loaded.source_run_id, logged, preds, uri)
