"""The ``calibrate`` stage: post-hoc temperature scaling of a trained model (Guo et al., "On
Calibration of Modern Neural Networks", ICML 2017).

One scalar temperature ``T`` divides the model's logits; it is fitted on the *validation* split by
minimising the negative log-likelihood (:func:`medattn.clinical.fit_temperature`), so it changes
no prediction (argmax and AUC stay) and only how confident the probabilities are. The result is a
new ``calibrate`` run in the source run's experiment that logs the temperature as a param, the
validation ECE and NLL before and after, and the same weights with the temperature as a new MLflow
model, registered as a new version of the data set's registered model. ``medattn test`` on that
run (or version) applies the temperature and logs the ECE change; the served model does too.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from medattn import checkpoint as ckpt_io
from medattn import clinical, engine, tracking
from medattn.config import RuntimePart, SourcePart, at_least, positive
from medattn.errors import ConfigError, MedattnError
from medattn.runtime import resolve_device
from medattn.stages.common import data_index, make_loader
from medattn.stages.evaluate import load_source, source_tags


@dataclass(frozen=True, kw_only=True)
class CalibrateConfig(SourcePart, RuntimePart):
    """Options of ``medattn calibrate``: a training run (``run_id`` or ``model_uri``), fitted on ``val``."""

    batch_size: int = 64
    num_workers: int = 0
    register: bool = True

    def __post_init__(self) -> None:  # noqa: D105
        super().__post_init__()
        if self.ckpt:
            raise ConfigError(
                "medattn calibrate logs a new version of a tracked model; pass --run-id or --model-uri, not --ckpt."
            )
        if self.split != "val":
            raise ConfigError("the temperature is fitted on the validation split only; drop --split.")
        positive("batch_size", self.batch_size)
        at_least("num_workers", self.num_workers, 0, "0 or more")


@dataclass(frozen=True)
class CalibrateResult:
    """Outcome of :func:`calibrate`: the new run, its temperature, the validation metrics, the logged model."""

    run_id: str
    source_run_id: str
    temperature: float
    metrics: dict[str, float]
    model_uri: str
    registered_name: str | None
    version: str | None
    tracking_uri: str


def calibrate(cfg: CalibrateConfig, *, progress: bool = True) -> CalibrateResult:
    """Fit a temperature on the validation split and log the calibrated model (see the module docstring).

    Raises:
        MedattnError: the source does not resolve, is itself calibrated, or its data do not match.
    """
    uri = tracking.connect(cfg.tracking_uri)
    loaded = load_source(cfg)
    if loaded.temperature != 1.0:
        raise MedattnError(
            f"run {loaded.source_run_id!r} is already temperature-scaled (T = {loaded.temperature:.4g}); "
            "calibrate its training run instead."
        )
    tcfg = loaded.config
    index = data_index(tcfg, cfg.data_dir)
    if index.num_classes != loaded.num_classes:
        raise MedattnError(
            f"the model predicts {loaded.num_classes} classes but the data has {index.num_classes}; "
            "use the same task options (--multiclass) as in training."
        )
    device = resolve_device(cfg.device)
    loader = make_loader(index, "val", tcfg, train=False, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    experiment_id = tracking.stage_experiment(cfg.experiment, tcfg.data.dataset, uri, loaded.source_run_id)
    register = tracking.registered_model_name(tcfg.data.dataset) if cfg.register else None
    with tracking.stage_run(
        experiment_id=experiment_id,
        run_id=tracking.project_run_id(),
        run_name=f"calibrate-{tcfg.model.model}",
        tags=source_tags("calibrate", loaded, "val"),
    ) as run_id:
        out = engine.evaluate(
            loaded.model.to(device), loader, nn.CrossEntropyLoss(), device, amp=False, desc="val", progress=progress
        )
        temperature = clinical.fit_temperature(out.y_true, out.scores)
        scaled = clinical.apply_temperature(out.scores, temperature)
        metrics = {
            "val_ece_before": clinical.expected_calibration_error(out.y_true, out.scores),
            "val_ece_after": clinical.expected_calibration_error(out.y_true, scaled),
            "val_nll_before": clinical.nll(out.y_true, out.scores),
            "val_nll_after": clinical.nll(out.y_true, scaled),
            "val_n_images": float(out.n_images),
        }
        tracking.log_params(
            {
                "source_run_id": loaded.source_run_id,
                "model": tcfg.model.model,
                "dataset": tcfg.data.dataset,
                "temperature": temperature,
                "fit_split": "val",
                "method": "temperature scaling (NLL)",
            }
        )
        tracking.log_metrics(tracking.finite(metrics))
        with tempfile.TemporaryDirectory(prefix="medattn-calibrate-") as tmp:
            payload = ckpt_io.load(tracking.model_weights(loaded.source_run_id, tmp))
            payload["temperature"] = float(temperature)
            weights = ckpt_io.save(Path(tmp) / "calibrated.pt", payload)
            logged = tracking.log_model(
                weights,
                tags={
                    "model": tcfg.model.model,
                    "dataset": tcfg.data.dataset,
                    "temperature": f"{temperature:.6g}",
                },
                metrics={"val_ece": metrics["val_ece_after"]},
                register_as=register,
            )
    return CalibrateResult(
        run_id, loaded.source_run_id, temperature, metrics, logged.model_uri, register, logged.version, uri
    )
