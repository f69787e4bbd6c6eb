"""The ``train`` stage: one model trained and tracked in MLflow (``medattn train``).

The epoch loop is :func:`medattn.engine.fit`; this module prepares its inputs (data, model,
optimiser, a resumed :class:`~medattn.checkpoint.TrainState`), hooks tracking in through
:class:`TrackingCallback` and DDP through :func:`medattn.distributed.parallel_for`, and logs the
model once training ends.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from medattn import checkpoint as ckpt_io
from medattn import distributed, engine, plots, tracking
from medattn.config import TrainConfig, config_file_values, known_options, train_config, with_legacy_defaults
from medattn.data import duplicate_counts
from medattn.data.gpu import fast_loaders, wants_channels_last
from medattn.errors import ConfigError, MedattnError
from medattn.models import is_vit, resolve_head
from medattn.runtime import resolve_device, seed_everything, torch_flags
from medattn.stages.common import build_model, data_index, make_loader

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, Mapping[str, float]], None]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        run_id: the MLflow run.
        experiment_id: its experiment.
        tracking_uri: the store it lives in.
        best_epoch: 0-based epoch of ``checkpoints/best.pt``.
        best_metrics: the metrics logged at ``best_epoch``.
        history: metric name → per-epoch values (all epochs of the run, resumed ones included).
        model_uri: URI of the logged MLflow model (``models:/m-...``).
        registered_version: registry version when ``--register`` was given.
        config: the resolved flat config.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    best_epoch: int
    best_metrics: dict[str, float]
    history: dict[str, list[float]]
    model_uri: str | None = None
    registered_version: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def resolve_train_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    resume: str | None = None,
) -> TrainConfig:
    """Build the config for ``medattn train``; with ``resume``, start from that run's own config.

    Args:
        overrides: options given explicitly (``None`` values are ignored).
        config_file: an ``experiments/*.yaml`` file.
        resume: a run id whose ``config.yaml`` provides the defaults (``--epochs`` may extend it).
    """
    given = known_options(overrides)
    under = values_under_options(config_file, resume=resume, tracking_uri=given.get("tracking_uri"))
    return train_config({**under, **given, **({"resume": resume} if resume else {})})


def values_under_options(
    config_file: str | Path | None = None, *, resume: str | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """The option values that the options given on the command line override (option name → value).

    Args:
        config_file: an ``experiments/*.yaml`` file, read when ``resume`` is not given.
        resume: a run id: its logged ``config.yaml`` instead of the file (``--epochs`` may extend it).
        tracking_uri: the store of the ``resume`` run.
    """
    if not resume:
        return config_file_values(config_file)
    tracking.connect(tracking_uri)
    logged = with_legacy_defaults(tracking.run_config(resume))  # a run of an older version resumes as it was
    # where the run goes is the caller's choice, never the logged config's (it could name another server)
    return known_options({k: v for k, v in logged.items() if k not in ("resume", "ckpt", "tracking_uri")})


def model_summary(model: nn.Module) -> str:
    """A text summary: parameter counts and the module tree."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"parameters: {total:,}\ntrainable: {trainable:,}\n\n{model}\n"


def split_manifests(index) -> dict[str, pd.DataFrame]:
    """The image ids, labels and patients of each split (logged as ``splits/<split>.csv``)."""
    cols = [c for c in ("image_id", "label", "patient_id") if c in index.frame.columns]
    return {s: index.split(s)[cols] for s in ("train", "val", "test")}


def state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the plain module's weights (DDP and ``torch.compile`` unwrapped)."""
    inner = distributed.unwrap_model(model)
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}


def check_compatible(state: Mapping[str, Any], cfg: TrainConfig) -> None:
    """Refuse a checkpoint whose architecture differs from the config's.

    Raises:
        ConfigError: model, head, layer count or (flatten head) image size differ.
    """
    src = state.get("config", {})
    for key in ("model", "head", "nr_layers"):
        if key in src and str(src[key]) != str(getattr(cfg.model, key)):
            raise ConfigError(
                f"the checkpoint was trained with {key}={src[key]!r} but this run asks for "
                f"{key}={getattr(cfg.model, key)!r}; use the same --{key.replace('_', '-')}."
            )
    flatten = resolve_head(cfg.model.model, cfg.model.head) == "flatten"  # head "paper" flattens the DenseNets
    if "img_size" in src and int(src["img_size"]) != cfg.data.img_size and flatten:
        raise ConfigError(
            f"the checkpoint's flatten head was trained at --img-size {src['img_size']}; use the same image size."
        )


class TrackingCallback(engine.Callback):
    """Writes ``best.pt`` / ``last.pt`` (a :class:`~medattn.checkpoint.TrainState`) and the epoch's
    metrics to the active run, in that order: a run killed in between is resumed from this epoch's
    checkpoint and its missing step is filled in from the checkpoint's history (never logged twice)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, optimizer, scheduler, meta: Mapping[str, Any]) -> None:
        self.cfg, self.model, self.optimizer, self.scheduler, self.meta = cfg, model, optimizer, scheduler, meta
        # checksums of the uploads (a kill can tear one), read on first use
        self.manifest: ckpt_io.Manifest | None = None

    def _manifest(self) -> ckpt_io.Manifest:
        """The run's checksum manifest: a resumed run continues its own."""
        if self.manifest is None:
            self.manifest = (tracking.read_manifest(self.cfg.resume) if self.cfg.resume else None) or ckpt_io.Manifest()
        return self.manifest

    def on_epoch_end(self, end: engine.EpochEnd) -> None:  # noqa: D102 - see engine.Callback
        state = ckpt_io.TrainState(
            model=state_dict(self.model),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            scaler=torch.amp.GradScaler("cuda", enabled=False).state_dict(),
            epoch=end.epoch,
            config=dict(self.meta["config"]),
            num_classes=self.meta["num_classes"],
            class_names=list(self.meta["class_names"]),
            history=end.history,
            best_value=end.best_value,
            best_epoch=end.best_epoch,
            best_metrics=end.best_metrics,
            rng=ckpt_io.rng_state(),
        )
        # The local copies live only until uploaded; no command leaves files in the temp folder.
        with tempfile.TemporaryDirectory(prefix="medattn-ckpt-") as tmp:
            workdir = Path(tmp)
            paths = [ckpt_io.save(workdir / "best.pt", state.best_payload(end.metrics))] if end.improved else []
            paths.append(ckpt_io.save(workdir / "last.pt", state.payload()))
            freq = self.cfg.tracking.save_freq
            if freq and (end.epoch + 1) % freq == 0:
                paths.append(ckpt_io.save(workdir / Path(tracking.epoch_ckpt(end.epoch)).name, state.payload()))
            tracking.log_checkpoints(paths, self._manifest(), end.epoch)  # the files, then their checksums
        tracking.log_metrics(end.metrics, step=end.epoch)


class _EpochHook(engine.Callback):
    """Adapts a plain ``(epoch, metrics)`` function (e.g. Optuna's pruning) to a callback."""

    def __init__(self, fn: EpochCallback) -> None:
        self.fn = fn

    def on_epoch_end(self, end: engine.EpochEnd) -> None:  # noqa: D102 - see engine.Callback
        self.fn(end.epoch, end.metrics)


def train(
    cfg: TrainConfig,
    *,
    parent_run_id: str | None = None,
    epoch_callback: EpochCallback | None = None,
    progress: bool = True,
    extra_tags: Mapping[str, str] | None = None,
    on_run_start: Callable[[str], None] | None = None,
    log_model: bool = True,
    continue_run: str | None = None,
) -> TrainResult:
    """Train one model and track everything in MLflow (``medattn train``).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this function: it joins the process
    group, trains its share of each global batch with DDP, and rank 0 alone logs to MLflow and
    writes checkpoints (:mod:`medattn.distributed`). The other ranks return a result with the same
    ``run_id`` and no ``model_uri``. Torch's global flags (cuDNN autotuning of the GPU pipeline) are
    restored on return.

    Args:
        cfg: the resolved config (:func:`resolve_train_config`).
        parent_run_id: make the run a nested child of this run (demo, search).
        epoch_callback: called after each epoch with ``(epoch, metrics)``; may raise (e.g. Optuna's
            ``TrialPruned``), which ends the run as FAILED unless the caller handles status itself.
        progress: show progress bars.
        extra_tags: tags added to the run.
        on_run_start: called with the run id as soon as the run exists, before anything is logged
            to it (search records it on the Optuna trial, so a killed trial still names its run).
        log_model: log the MLflow model at the end (search turns it off per trial unless ``--log-models``: a
            model per trial would fill the store);
            without it ``checkpoints/best.pt`` stays and ``model_uri`` is ``None``.
        continue_run: an existing run of this same config that died (``medattn grid`` continues a
            cell's run): it goes on from its newest complete checkpoint, from epoch 0 in the same run
            when it died before its first one, and only finishes (model, best metrics) when its
            checkpoint already holds the last epoch.

    Returns:
        A :class:`TrainResult`.
    """
    dctx = distributed.setup(cfg.device)
    try:
        with torch_flags():
            return _train(
                cfg,
                dctx,
                parent_run_id,
                [_EpochHook(epoch_callback)] if epoch_callback else [],
                progress,
                dict(extra_tags or {}),
                on_run_start=on_run_start,
                log_model=log_model,
                continue_run=continue_run,
            )
    finally:
        distributed.teardown(dctx)


def _run_source(cfg: TrainConfig, uri: str, parent_run_id: str | None, continue_run: str | None = None):
    """``(run_id, experiment_id, resume_state)``: a continued grid cell, a resumed run, a checkpoint,
    the project run or a new run.

    Under DDP rank 0 alone calls it (:func:`medattn.distributed.on_main`) and hands the result over.
    """
    if continue_run:
        run = tracking.get_run(continue_run)
        try:
            state = load_resume_state(continue_run)
        except MedattnError:  # it died before its first complete checkpoint: epoch 0, in the same run
            state = None
        return run.info.run_id, run.info.experiment_id, state
    if cfg.resume:
        run = tracking.get_run(cfg.resume)
        return run.info.run_id, run.info.experiment_id, load_resume_state(run.info.run_id)
    project = None if cfg.ckpt else tracking.project_run_id(parent_run_id)
    if project:  # launched by `mlflow run`: log into the run it created (and its experiment)
        return project, tracking.get_run(project).info.experiment_id, None
    exp = tracking.default_train_experiment(cfg.tracking.experiment, cfg.data.dataset, uri)
    return None, exp, ckpt_io.load(cfg.ckpt) if cfg.ckpt else None


def _source(cfg: TrainConfig, dctx, uri: str, parent_run_id: str | None, continue_run: str | None):
    """``(cfg, (run_id, experiment_id, resume_state))`` from :func:`_run_source` on rank 0; a continued
    grid cell with a checkpoint is from then on an ordinary resume (``cfg.resume`` set)."""
    found = distributed.on_main(dctx, lambda: _run_source(cfg, uri, parent_run_id, continue_run))
    if continue_run and found[2] is not None:
        cfg = dataclasses.replace(cfg, resume=continue_run)
    return cfg, found


def load_resume_state(run_id: str) -> dict[str, Any]:
    """The newest complete training state of ``run_id``, with a one-line warning naming any newer one
    skipped (a ``last.pt`` torn by a kill during its upload).

    Raises:
        MedattnError: no checkpoint of the run is complete.
    """
    found = tracking.newest_complete_checkpoint(run_id)
    if found.skipped:
        log.warning(
            "resuming run %s from %s (epoch %s): skipped the incomplete %s",
            run_id,
            found.artifact,
            found.payload.get("epoch"),
            ", ".join(found.skipped),
        )
    return found.payload


def _class_weights(y: np.ndarray, num_classes: int, device: torch.device) -> torch.Tensor:
    present = np.unique(y)
    w = np.ones(num_classes)
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return torch.tensor(w, dtype=torch.float32, device=device)


def training_loss(
    train_labels: np.ndarray, num_classes: int, *, class_weights: bool, norm: int, device: torch.device
) -> engine.WeightedCrossEntropy:
    """The training loss: the class-weighted cross-entropy summed over a batch, divided by ``norm``.

    With ``class_weights`` ("balanced": ``N / (C · N_c)``) every class carries the same share of
    an epoch's loss weight, whatever the batches hold (a per-batch weighted mean does not); the validation loss that
    selects ``best.pt`` is ``Σ w l / Σ w`` over the whole split (:func:`medattn.engine.evaluate`).

    Args:
        train_labels: labels of the training split, shape (N,).
        num_classes: C.
        class_weights: weigh classes inversely to their frequency (else every class 1).
        norm: the fixed divisor of each batch's sum: the nominal batch of this process.
        device: where the weights live.
    """
    weights = _class_weights(np.asarray(train_labels), num_classes, device) if class_weights else None
    return engine.WeightedCrossEntropy(weights, norm=norm).to(device)


def _build(cfg: TrainConfig, index, device: torch.device, resume_state, dctx):
    """Model, loaders, optimiser, scheduler, loss and the resolved data pipeline of a run."""
    seed_everything(cfg.optim.seed)
    model = build_model(cfg, index.num_classes, pretrained="none" if resume_state else None)
    if resume_state is not None:
        check_compatible(resume_state, cfg)
        model.load_state_dict(resume_state["model"])
    model.to(device)
    # --data-pipeline gpu|auto (the GPU input path; a PIL pipeline cannot feed a GPU): loaders from
    # the uint8 cache with batched augmentation on the device; None keeps the PIL loaders below.
    channels_last = wants_channels_last(device, cfg.optim.amp, vit=is_vit(model))
    fast, fast_pair = fast_loaders(index, cfg, device, distributed=dctx.enabled, channels_last=channels_last)
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    if fast.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True  # fixed input shapes; train() restores it (torch_flags)
    if cfg.optim.compile:
        model = torch.compile(model)
    model = distributed.wrap_model(model, dctx, device)  # DDP (no-op for one process)
    loaders = fast_pair or (make_loader(index, "train", cfg, train=True), make_loader(index, "val", cfg, train=False))
    if dctx.enabled:  # DDP: shares of the single-process global batches; val sharded without padding

        def seed_fn(e: int) -> int:
            return cfg.optim.seed * 1000 + e

        loaders = tuple(
            distributed.distribute_loader(ld, dctx, train=tr, global_batch=cfg.optim.batch_size, seed_fn=seed_fn)
            for ld, tr in zip(loaders, (True, False), strict=True)
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.optim.epochs)
        if cfg.optim.scheduler == "cosine"
        else None
    )
    loss_fn = training_loss(
        index.split("train")["label"].to_numpy(),
        index.num_classes,
        class_weights=cfg.optim.class_weights,
        # DDP: each process sums its share of a global batch; DDP averages the gradients over the world
        norm=distributed.per_rank_batch(cfg.optim.batch_size, dctx.world_size),
        device=device,
    )
    return model, loaders, optimizer, scheduler, loss_fn, fast.pipeline


def _restore(
    cfg: TrainConfig, resume_state, optimizer, scheduler, *, finish_only: bool = False
) -> tuple[engine.FitResult, int]:
    """The history and best epoch so far, and the first epoch to run (0 for a new run); with
    ``finish_only`` a checkpoint of the last epoch is accepted (a grid cell that died while finishing)."""
    if resume_state is None or "optimizer" not in resume_state:
        return engine.FitResult(), 0
    state = ckpt_io.TrainState.from_payload(resume_state)
    optimizer.load_state_dict(state.optimizer)
    if scheduler is not None and state.scheduler:
        scheduler.load_state_dict(state.scheduler)
    ckpt_io.set_rng_state(state.rng)
    start_epoch = state.epoch + 1
    if cfg.resume and start_epoch >= cfg.optim.epochs and not finish_only:
        raise ConfigError(
            f"run {cfg.resume} already trained {start_epoch} epochs; pass --epochs larger than {start_epoch} to continue it."
        )
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        last_lr = (state.history.get("lr") or [optimizer.param_groups[0]["lr"]])[-1]
        extend_cosine(scheduler, start_epoch, cfg.optim.epochs, last_lr)
    return engine.FitResult(state.history, state.best_value, state.best_epoch, state.best_metrics), start_epoch


def schedule_end(scheduler: torch.optim.lr_scheduler.CosineAnnealingLR, next_epoch: int) -> int:
    """The epoch at which a cosine schedule reaches ``eta_min``, given the next epoch it will set the lr of."""
    return next_epoch - scheduler.last_epoch + scheduler.T_max


def extend_cosine(
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR, next_epoch: int, end: int, last_lr: float
) -> None:
    """Re-aim a restored cosine schedule at a new end (a resume with a new ``--epochs``: the lr
    keeps falling instead of rising again at the old horizon).

    The restored schedule keeps its old horizon: past it, cosine annealing rises again. Instead,
    a new half cosine starts at the lr of the last trained epoch (``next_epoch - 1``) and reaches
    ``eta_min`` at ``end``, so the lr keeps falling from where the run stopped. It is written into
    the scheduler's own fields (and the optimiser's lr), so its state dict describes it and a
    later resume with the same ``--epochs`` continues it unchanged. A schedule that already ends
    at ``end`` is left alone (a resume that only continues an interrupted run).

    Args:
        scheduler: the restored schedule (stepped once per epoch, last for epoch ``next_epoch - 1``).
        next_epoch: first epoch of the resumed run.
        end: the new total number of epochs.
        last_lr: the lr of epoch ``next_epoch - 1``.
    """
    if end <= next_epoch or schedule_end(scheduler, next_epoch) == end:
        return  # nothing left to train, or the schedule already ends there
    horizon = end - next_epoch + 1  # epochs from the anchor (next_epoch - 1) to the end
    scheduler.base_lrs = [last_lr for _ in scheduler.base_lrs]
    scheduler.T_max, scheduler.last_epoch = horizon, 1
    lr = scheduler.eta_min + (last_lr - scheduler.eta_min) * (1 + math.cos(math.pi / horizon)) / 2
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"], group["lr"] = last_lr, lr
    scheduler._last_lr = [lr for _ in scheduler.optimizer.param_groups]  # what get_last_lr() reports


def _tags(cfg: TrainConfig, pipeline: str, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        tracking.TAG_KIND: "train",
        tracking.TAG_DATASET: cfg.data.dataset,
        tracking.TAG_MODEL: cfg.model.model,
        tracking.TAG_PERC_TRAIN: str(cfg.data.perc_train),
        tracking.TAG_DATA_PIPELINE: pipeline,
        **extra,
    }


def _run_name(cfg: TrainConfig) -> str:
    suffix = f"-p{cfg.data.perc_train:g}" if cfg.data.perc_train < 1 else ""
    return cfg.tracking.run_name or f"{cfg.model.model}-{cfg.data.dataset}{suffix}"


def _log_start(
    cfg: TrainConfig,
    flat: Mapping[str, Any],
    index,
    model: nn.Module,
    run_id: str,
    history,
    on_run_start: Callable[[str], None] | None = None,
) -> None:
    """Params, config, split manifests, near-duplicate groups and model summary of a new run; a resumed
    run fills in missing steps. ``on_run_start(run_id)`` is called first."""
    if on_run_start is not None:
        on_run_start(run_id)
    if cfg.resume:
        tracking.set_tags({tracking.TAG_RESUMED_TO: str(cfg.optim.epochs)})
        tracking.log_yaml(flat, tracking.CONFIG_FILE)
        tracking.log_missing_steps(run_id, history)
        return
    tracking.log_params({k: v for k, v in flat.items() if k != "resume"})
    tracking.log_yaml(flat, tracking.CONFIG_FILE)
    for split, frame in split_manifests(index).items():
        tracking.log_text(frame.to_csv(index=False), f"{tracking.SPLITS_DIR}/{split}.csv")
        tracking.log_dataset(
            frame, name=tracking.dataset_name(cfg.data.dataset, split), context=split, source=str(cfg.data.data_dir)
        )
    # The near-duplicate groups the splits were made with (the policy is the param `duplicates`).
    tracking.log_text(index.duplicate_groups.to_csv(index=False), tracking.DUPLICATE_GROUPS)
    tracking.log_metrics(duplicate_counts(index.duplicate_groups))
    tracking.log_text(model_summary(model), tracking.MODEL_SUMMARY)


def _finish(
    cfg: TrainConfig, run_id: str, fitted: engine.FitResult, num_classes: int, log_model: bool = True
) -> tracking.LoggedModel | None:
    """History figures, ``best_*`` metrics and (``log_model``) the logged, optionally registered model of the best epoch."""
    for key, fig in plots.history_figures(fitted.history).items():
        tracking.log_figure(fig, f"{tracking.HISTORY_DIR}/{key}.png")
    if fitted.best_epoch < 0:
        raise MedattnError(
            f"no epoch produced a finite {cfg.optim.select_metric}; choose another --select-metric (e.g. val_loss)."
        )
    best_val = {f"best_{k}": v for k, v in fitted.best_metrics.items() if k.startswith("val_")}
    tracking.log_metrics(best_val, step=fitted.best_epoch)
    tracking.set_tags({tracking.TAG_BEST_EPOCH: str(fitted.best_epoch)})
    if not log_model:  # best.pt stays: it is the only copy of the best weights
        return None
    register = tracking.registered_model_name(cfg.data.dataset) if cfg.tracking.register else None
    with tempfile.TemporaryDirectory(prefix="medattn-best-") as tmp:
        logged = tracking.log_model(
            tracking.best_weights(run_id, tmp),
            metrics=best_val,
            register_as=register,
            tags={"variant": cfg.model.model, "dataset": cfg.data.dataset},
        )
    tracking.prune_checkpoints(run_id)  # best.pt now is the model; docs/storage.md
    return logged


def _train(
    cfg: TrainConfig,
    dctx,
    parent_run_id: str | None,
    callbacks: list[engine.Callback],
    progress: bool,
    extra_tags: dict[str, str],
    on_run_start: Callable[[str], None] | None = None,
    log_model: bool = True,
    continue_run: str | None = None,
) -> TrainResult:
    uri = distributed.on_main(dctx, lambda: tracking.connect(cfg.tracking.tracking_uri))  # rank 0 alone opens the store
    # DDP: each rank on its own GPU; --batch-size is the global batch (checked before any run starts).
    device = resolve_device(distributed.device_for(dctx, cfg.device))
    if dctx.enabled:
        distributed.per_rank_batch(cfg.optim.batch_size, dctx.world_size)
    index = data_index(cfg)
    cfg, (run_id, experiment_id, resume_state) = _source(cfg, dctx, uri, parent_run_id, continue_run)
    model, loaders, optimizer, scheduler, loss_fn, pipeline = _build(cfg, index, device, resume_state, dctx)
    start, start_epoch = _restore(cfg, resume_state, optimizer, scheduler, finish_only=bool(continue_run))
    flat = {**cfg.flat(), "pretrained": cfg.pretrained}
    meta = {"config": flat, "num_classes": index.num_classes, "class_names": index.class_names}
    tags = _tags(cfg, pipeline, extra_tags)
    run = (
        tracking.stage_run(
            experiment_id=experiment_id,
            run_id=run_id,
            run_name=_run_name(cfg),
            tags=None if cfg.resume else tags,
            parent_run_id=parent_run_id,
            system_metrics=cfg.tracking.system_metrics,
        )
        if dctx.is_main
        else _no_run()
    )  # DDP: other ranks start no MLflow run
    with run as main_run_id:
        run_id = distributed.broadcast_object(dctx, main_run_id)
        if dctx.is_main:
            _log_start(cfg, flat, index, model, run_id, start.history, on_run_start)
        fitted = engine.fit(
            model,
            loaders,
            optimizer,
            loss_fn,
            device,
            epochs=cfg.optim.epochs,
            seed=cfg.optim.seed,
            select_metric=cfg.optim.select_metric,
            scheduler=scheduler,
            start=start,
            start_epoch=start_epoch,
            amp=cfg.optim.amp,
            progress=progress,
            callbacks=[TrackingCallback(cfg, model, optimizer, scheduler, meta), *callbacks],
            parallel=distributed.parallel_for(dctx),
        )
        if not dctx.is_main:
            return TrainResult(
                run_id=run_id,
                experiment_id=str(experiment_id),
                tracking_uri=uri,
                best_epoch=-1,
                best_metrics={},
                history={},
                config=flat,
            )
        logged = _finish(cfg, run_id, fitted, index.num_classes, log_model)
    return TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        tracking_uri=uri,
        best_epoch=fitted.best_epoch,
        best_metrics=fitted.best_metrics,
        history=fitted.history,
        model_uri=logged.model_uri if logged else None,
        registered_version=logged.version if logged else None,
        config=flat,
    )


class _no_run:  # noqa: N801 - used like contextlib.nullcontext
    """The run context of a non-main DDP rank: no MLflow run, no id."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
