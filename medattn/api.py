"""The library API behind every ``medattn`` command: ``train``, ``test``, ``demo``.

Each function takes a frozen config, does the work, tracks it in MLflow through
:mod:`medattn.tracking`, and returns a plain result object; the CLI only parses options and
prints results (STYLE habit 4). User mistakes are raised as :class:`~medattn.errors.MedattnError`
*before* any MLflow run starts, so bad input never leaves a run behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medattn import checkpoint as ckpt_io
from medattn import tracking
from medattn.compare import CompareConfig, CompareResult, FiguresConfig, FiguresResult  # re-exported
from medattn.config import TrainConfig, build_train_config, config_from_flat, load_yaml, split_name
from medattn.errors import ConfigError, MedattnError
from medattn.promote import PromoteConfig, PromoteResult  # re-exported for callers of the API
from medattn.search import SearchConfig, SearchResult  # re-exported

if TYPE_CHECKING:
    from medattn.bench import BenchConfig, BenchResult

EpochCallback = Callable[[int, Mapping[str, float]], None]


# =============================================================================================
# shared helpers
# =============================================================================================
def resolve_device(device: str = "auto", gpu_id: int | None = None) -> torch.device:
    """``auto`` → ``cuda`` if available else ``cpu``; ``--gpu-id N`` → ``cuda:N``.

    Raises:
        ConfigError: a CUDA device was asked for on a machine without one, or the name is invalid.
    """
    if gpu_id is not None:
        device = f"cuda:{gpu_id}"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device name; use auto, cpu or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} was asked for but this machine has no CUDA GPU; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"GPU {dev.index} does not exist (this machine has {torch.cuda.device_count()}); pick a smaller --gpu-id."
            )
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (called by the API at run time, never at import)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _load_index(cfg: TrainConfig, data_dir: str | None = None):
    from medattn.data import load_index

    d = cfg.data
    return load_index(
        d.dataset,
        data_dir or d.data_dir,
        multiclass=d.multiclass,
        uncertain=d.uncertain,
        low_data_regimen=d.low_data_regimen,
        perc_train=d.perc_train,
    )


def build_model(cfg: TrainConfig, num_classes: int, *, pretrained: str | None = None) -> nn.Module:
    """The eager model a config describes (``pretrained`` overrides the config's choice)."""
    from medattn.models import create_model

    m = cfg.model
    return create_model(
        m.model,
        num_classes,
        pretrained=pretrained if pretrained is not None else cfg.pretrained,
        weights=m.weights if pretrained is None else None,
        head=m.head,
        nr_layers=m.nr_layers,
        img_size=cfg.data.img_size,
        init=m.init,
    )


def _loader(index, split: str, cfg: TrainConfig, *, train: bool, batch_size: int | None = None, num_workers=None):
    from medattn.data import build_loader

    return build_loader(
        index,
        split,
        img_size=cfg.data.img_size,
        resize=cfg.data.resize,
        batch_size=batch_size or cfg.optim.batch_size,
        train=train,
        num_workers=cfg.data.num_workers if num_workers is None else num_workers,
        seed=cfg.optim.seed,
    )


def _prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items()}


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow stores NaN fine, but NaN metrics make the UI's charts and sorting misleading: drop them."""
    return {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}


def _select_mode(metric: str) -> str:
    return "min" if metric.endswith("loss") else "max"


def _better(value: float, best: float | None, mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def model_summary(model: nn.Module) -> str:
    """A text summary: parameter counts and the module tree."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"parameters: {total:,}\ntrainable: {trainable:,}\n\n{model}\n"


def _split_manifests(index) -> dict[str, pd.DataFrame]:
    cols = [c for c in ("image_id", "label", "patient_id") if c in index.frame.columns]
    return {s: index.split(s)[cols] for s in ("train", "val", "test")}


# =============================================================================================
# train
# =============================================================================================
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
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not resume:
        return build_train_config(overrides, config_file=config_file)
    tracking.connect(overrides.get("tracking_uri"))
    base = {k: v for k, v in tracking.run_config(resume).items() if k not in ("resume", "ckpt")}
    return build_train_config({**base, **overrides, "resume": resume})


def _experiment_for(cfg: TrainConfig, uri: str) -> str:
    if cfg.tracking.experiment:
        return tracking.ensure_experiment(cfg.tracking.experiment, uri)
    env = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if env:
        return env
    return tracking.ensure_experiment(tracking.experiment_name(cfg.data.dataset), uri)


def train(
    cfg: TrainConfig,
    *,
    parent_run_id: str | None = None,
    epoch_callback: EpochCallback | None = None,
    progress: bool = True,
    extra_tags: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train one model and track everything in MLflow (SPEC §5, "train").

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this function: it joins the process
    group, trains its share of each global batch with DDP, and rank 0 alone logs to MLflow and
    writes checkpoints (:mod:`medattn.distributed`). The other ranks return a result with the same
    ``run_id`` and no ``model_uri``. Arguments and return value are those of :func:`_train`.
    """
    from medattn import distributed

    dctx = distributed.setup(cfg.device)
    try:
        return _train(cfg, dctx, parent_run_id=parent_run_id, epoch_callback=epoch_callback, progress=progress,
                      extra_tags=extra_tags)
    finally:
        distributed.teardown(dctx)


def _train(
    cfg: TrainConfig,
    dctx,
    *,
    parent_run_id: str | None = None,
    epoch_callback: EpochCallback | None = None,
    progress: bool = True,
    extra_tags: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train one model and track everything in MLflow (SPEC §5, "train").

    Args:
        cfg: the resolved config (:func:`resolve_train_config`).
        parent_run_id: make the run a nested child of this run (demo, search).
        epoch_callback: called after each epoch with ``(epoch, metrics)``; may raise (e.g. Optuna's
            ``TrialPruned``), which ends the run as FAILED unless the caller handles status itself.
        progress: show progress bars.
        extra_tags: tags added to the run.

    Returns:
        A :class:`TrainResult`.
    """
    from medattn import distributed, figures
    from medattn.metrics import classification_metrics

    uri = tracking.connect(cfg.tracking.tracking_uri)
    # DDP: each rank on its own GPU; --batch-size is the global batch (checked before any run starts).
    device = resolve_device(distributed.device_for(dctx, cfg.device))
    if dctx.enabled:
        distributed.per_rank_batch(cfg.optim.batch_size, dctx.world_size)
    index = _load_index(cfg)
    num_classes = index.num_classes
    resume_state: dict[str, Any] | None = None
    run_id = None
    if cfg.resume:
        run = tracking.get_run(cfg.resume)
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
        resume_state = ckpt_io.load(tracking.download(run_id, tracking.LAST_CKPT))
    elif cfg.ckpt:
        resume_state = ckpt_io.load(cfg.ckpt)
        experiment_id = _experiment_for(cfg, uri) if dctx.is_main else None  # DDP: rank 0 alone writes
    else:
        env_run = os.environ.get("MLFLOW_RUN_ID")
        if env_run and parent_run_id is None:
            # launched by `mlflow run`: log into the run it created (and its experiment)
            run_id, experiment_id = env_run, tracking.get_run(env_run).info.experiment_id
        else:
            experiment_id = _experiment_for(cfg, uri) if dctx.is_main else None  # DDP: rank 0 alone writes

    seed_everything(cfg.optim.seed)
    model = build_model(cfg, num_classes, pretrained="none" if resume_state else None)
    start_epoch = 0
    history: dict[str, list[float]] = {}
    best_value: float | None = None
    best_epoch = -1
    best_metrics: dict[str, float] = {}
    if resume_state is not None:
        _check_compatible(resume_state, cfg)
        model.load_state_dict(resume_state["model"])
    model.to(device)
    # Issue 8: --data-pipeline gpu|auto: loaders from the uint8 cache with batched augmentation on
    # the device (CNNs go channels_last under --amp on CUDA); None keeps the PIL loaders below.
    from medattn.data.gpu import fast_loaders

    fast, fast_pair = fast_loaders(index, cfg, model, device, distributed=dctx.enabled)
    if cfg.optim.compile:
        model = torch.compile(model)
    model = distributed.wrap_model(model, dctx, device)  # DDP (no-op for one process)

    train_loader, val_loader = fast_pair or (_loader(index, "train", cfg, train=True), _loader(index, "val", cfg, train=False))
    if dctx.enabled:  # DDP: shares of the single-process global batches; val sharded without padding
        seed_fn = lambda e: cfg.optim.seed * 1000 + e  # noqa: E731 - the per-epoch reseed below
        train_loader = distributed.distribute_loader(train_loader, dctx, train=True,
                                                     global_batch=cfg.optim.batch_size, seed_fn=seed_fn)
        val_loader = distributed.distribute_loader(val_loader, dctx, train=False,
                                                   global_batch=cfg.optim.batch_size, seed_fn=seed_fn)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.optim.epochs)
        if cfg.optim.scheduler == "cosine"
        else None
    )
    class_weights = None
    if cfg.optim.class_weights:
        from sklearn.utils.class_weight import compute_class_weight

        y = index.split("train")["label"].to_numpy()
        present = np.unique(y)
        w = np.ones(num_classes)
        w[present] = compute_class_weight("balanced", classes=present, y=y)
        class_weights = torch.tensor(w, dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights)
    scaler_state = torch.amp.GradScaler("cuda", enabled=False).state_dict()

    if resume_state is not None and "optimizer" in resume_state:
        optimizer.load_state_dict(resume_state["optimizer"])
        if scheduler is not None and resume_state.get("scheduler"):
            scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch = int(resume_state["epoch"]) + 1
        history = {k: list(v) for k, v in resume_state.get("history", {}).items()}
        best_value = resume_state.get("best_value")
        best_epoch = int(resume_state.get("best_epoch", -1))
        best_metrics = dict(resume_state.get("best_metrics", {}))
        ckpt_io.set_rng_state(resume_state["rng"])
    if cfg.resume and start_epoch >= cfg.optim.epochs:
        raise ConfigError(
            f"run {cfg.resume} already trained {start_epoch} epochs; pass --epochs larger than {start_epoch} to continue it."
        )

    select, mode = cfg.optim.select_metric, _select_mode(cfg.optim.select_metric)
    flat = cfg.flat()
    flat["pretrained"] = cfg.pretrained
    tags = {
        tracking.TAG_KIND: "train",
        tracking.TAG_DATASET: cfg.data.dataset,
        tracking.TAG_MODEL: cfg.model.model,
        tracking.TAG_PERC_TRAIN: str(cfg.data.perc_train),
        "medattn.data_pipeline": fast.pipeline,  # issue 8: what --data-pipeline auto resolved to
        **dict(extra_tags or {}),
    }
    run_name = cfg.tracking.run_name or f"{cfg.model.model}-{cfg.data.dataset}" + (
        f"-p{cfg.data.perc_train:g}" if cfg.data.perc_train < 1 else ""
    )
    workdir = Path(tempfile.mkdtemp(prefix="medattn-train-"))
    import mlflow

    with tracking.tracked_run(
        experiment_id=experiment_id,
        run_id=run_id,
        run_name=run_name,
        tags=None if cfg.resume else tags,
        parent_run_id=parent_run_id,
        system_metrics=cfg.tracking.system_metrics,
    ) if dctx.is_main else contextlib.nullcontext() as run:  # DDP: other ranks start no MLflow run
        run_id = distributed.broadcast_object(dctx, run.info.run_id if dctx.is_main else None)
        if dctx.is_main and not cfg.resume:
            mlflow.set_tags(tags)
            mlflow.log_params({k: ("None" if v is None else v) for k, v in flat.items() if k not in ("resume",)})
            tracking.log_yaml(flat, tracking.CONFIG_FILE)
            for split, frame in _split_manifests(index).items():
                mlflow.log_text(frame.to_csv(index=False), f"{tracking.SPLITS_DIR}/{split}.csv")
            mlflow.log_text(model_summary(model), tracking.MODEL_SUMMARY)
        elif dctx.is_main:
            mlflow.set_tag("medattn.resumed_to_epochs", str(cfg.optim.epochs))
            tracking.log_yaml(flat, tracking.CONFIG_FILE)
            _log_missing_steps(run_id, history)

        for epoch in range(start_epoch, cfg.optim.epochs):
            # Reseed shuffling and augmentation per epoch, so a resumed run sees exactly the
            # batches an uninterrupted one would.
            torch.manual_seed(cfg.optim.seed * 1000 + epoch)
            if getattr(train_loader, "generator", None) is not None:
                train_loader.generator.manual_seed(cfg.optim.seed * 1000 + epoch)
            if dctx.enabled:
                train_loader.global_batch_sampler.set_epoch(epoch)
            tag = f"epoch {epoch + 1}/{cfg.optim.epochs}"
            tr = _train_epoch(model, train_loader, optimizer, loss_fn, device, cfg, tag, progress and dctx.is_main,
                              dctx=dctx)
            # DDP: evaluate the plain module (no gradient sync), then join every rank's predictions.
            va = _eval_epoch(distributed.unwrap_model(model) if dctx.enabled else model, val_loader, loss_fn, device,
                             cfg, tag, progress and dctx.is_main)
            tr, va = distributed.gather_output(tr, dctx), distributed.gather_output(va, dctx)
            lr_now = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            metrics = {
                **_prefixed("train", {"loss": tr.loss, **classification_metrics(tr.y_true, tr.scores)}),
                **_prefixed("val", {"loss": va.loss, **classification_metrics(va.y_true, va.scores)}),
                "lr": lr_now,
                "epoch_time_s": tr.seconds + va.seconds,
                "train_images_per_s": tr.images_per_s,
            }
            if not dctx.is_main:  # DDP: rank 0 alone logs metrics and writes checkpoints
                continue
            for k, v in metrics.items():
                history.setdefault(k, []).append(v)
            state_dict = _state_dict(model)
            if _better(metrics.get(select, math.nan), best_value, mode):
                best_value, best_epoch, best_metrics = metrics[select], epoch, dict(metrics)
                payload = {"model": state_dict, "config": flat, "epoch": epoch, "metrics": metrics,
                           "num_classes": num_classes, "class_names": list(index.class_names)}
                mlflow.log_artifact(str(ckpt_io.save(workdir / "best.pt", payload)), tracking.CHECKPOINT_DIR)
            last = {
                "model": state_dict,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler_state,
                "epoch": epoch,
                "config": flat,
                "num_classes": num_classes,
                "class_names": list(index.class_names),
                "history": history,
                "best_value": best_value,
                "best_epoch": best_epoch,
                "best_metrics": best_metrics,
                "rng": ckpt_io.rng_state(),
            }
            mlflow.log_artifact(str(ckpt_io.save(workdir / "last.pt", last)), tracking.CHECKPOINT_DIR)
            # Metrics after last.pt: a run killed in between is resumed from this epoch's checkpoint
            # and its missing step is filled in from the checkpoint's history (never logged twice).
            mlflow.log_metrics(_finite(metrics), step=epoch)
            if cfg.tracking.save_freq and (epoch + 1) % cfg.tracking.save_freq == 0:
                path = ckpt_io.save(workdir / Path(tracking.epoch_ckpt(epoch)).name, last)
                mlflow.log_artifact(str(path), tracking.CHECKPOINT_DIR)
            if epoch_callback is not None:
                epoch_callback(epoch, metrics)

        if not dctx.is_main:
            return TrainResult(run_id=run_id, experiment_id=str(experiment_id), tracking_uri=uri, best_epoch=-1,
                               best_metrics={}, history={}, config=flat)
        for key, fig in figures.history_figures(history).items():
            mlflow.log_figure(fig, f"{tracking.HISTORY_DIR}/{key}.png")
        if best_epoch < 0:
            raise MedattnError(
                f"no epoch produced a finite {select}; choose another --select-metric (e.g. val_loss)."
            )
        mlflow.log_metrics(_finite(_prefixed("best", {k: v for k, v in best_metrics.items()
                                                       if k.startswith("val_")})), step=best_epoch)
        mlflow.set_tag("medattn.best_epoch", str(best_epoch))
        best = ckpt_io.load(tracking.download(run_id, tracking.BEST_CKPT, workdir / "dl"))
        eager = build_model(cfg, num_classes, pretrained="none")
        eager.load_state_dict(best["model"])
        model_uri, version = _log_model(eager, cfg, best_metrics)
    return TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        tracking_uri=uri,
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        history=history,
        model_uri=model_uri,
        registered_version=version,
        config=flat,
    )


def _log_missing_steps(run_id: str, history: Mapping[str, Sequence[float]]) -> None:
    """Log the epochs that ``last.pt`` holds but the run's metrics lack (a kill between the two)."""
    import mlflow

    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "val_loss")}
    n = len(history.get("val_loss", []))
    for step in range(n):
        if step not in logged:
            mlflow.log_metrics(_finite({k: v[step] for k, v in history.items() if len(v) > step}), step=step)


def _train_epoch(model, loader, optimizer, loss_fn, device, cfg, tag, progress, dctx=None):
    from medattn import distributed
    from medattn.engine import train_one_epoch

    ddp = dctx is not None and dctx.enabled  # DDP: global-batch loss weights, NaN agreed by all ranks
    return train_one_epoch(model, loader, optimizer, loss_fn, device, amp=cfg.optim.amp, desc=f"{tag} train",
                           progress=progress,
                           loss_scale=loader.global_batch_sampler.loss_scale if ddp else None,
                           finite_check=distributed.all_finite(dctx) if ddp else None)


def _eval_epoch(model, loader, loss_fn, device, cfg, tag, progress):
    from medattn.engine import evaluate

    return evaluate(model, loader, loss_fn, device, amp=cfg.optim.amp, desc=f"{tag} val", progress=progress)


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    from medattn.distributed import unwrap_model

    inner = unwrap_model(model)  # DDP and torch.compile wrap the module
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}


def _check_compatible(state: Mapping[str, Any], cfg: TrainConfig) -> None:
    src = state.get("config", {})
    for key in ("model", "head", "nr_layers"):
        if key in src and str(src[key]) != str(getattr(cfg.model, key)):
            raise ConfigError(
                f"the checkpoint was trained with {key}={src[key]!r} but this run asks for "
                f"{key}={getattr(cfg.model, key)!r}; use the same --{key.replace('_', '-')}."
            )
    if "img_size" in src and int(src["img_size"]) != cfg.data.img_size and cfg.model.head == "flatten":
        raise ConfigError(
            f"the checkpoint's flatten head was trained at --img-size {src['img_size']}; use the same image size."
        )


def _log_model(model: nn.Module, cfg: TrainConfig, best_metrics: Mapping[str, float]) -> tuple[str, str | None]:
    """Log the eager model in MLflow's pytorch flavour (pt2 via torch.export; docs/mlflow-notes.md §2)."""
    import mlflow
    from mlflow.models import infer_signature

    model = model.cpu().eval()
    size = cfg.data.img_size
    example = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, out)
    info = mlflow.pytorch.log_model(
        model,
        name=tracking.MODEL_NAME,
        signature=signature,
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "timm", "numpy"],
        tags={"variant": cfg.model.model, "dataset": cfg.data.dataset},
    )
    mlflow.set_tag(tracking.TAG_MODEL_ID, info.model_id)
    val = {k: v for k, v in best_metrics.items() if k.startswith("val_") and math.isfinite(v)}
    if val:
        mlflow.log_metrics(_prefixed("best", val), model_id=info.model_id)
    version = None
    if cfg.tracking.register:
        mv = mlflow.register_model(info.model_uri, tracking.registered_model_name(cfg.data.dataset))
        version = str(mv.version)
    return info.model_uri, version


# =============================================================================================
# test
# =============================================================================================
@dataclass(frozen=True)
class TestConfig:
    """Options of ``medattn test``; exactly one of ``run_id``, ``model_uri``, ``ckpt``."""

    __test__ = False  # not a pytest class

    run_id: str | None = None
    model_uri: str | None = None
    ckpt: str | None = None
    split: str = "test"
    data_dir: str | None = None
    batch_size: int = 64
    num_workers: int = 0
    device: str = "auto"
    tracking_uri: str | None = None
    experiment: str | None = None
    n_boot: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class TestResult:
    """Outcome of :func:`test`: the new run and its ``test_*`` metrics."""

    __test__ = False  # not a pytest class

    run_id: str
    source_run_id: str | None
    metrics: dict[str, float]
    predictions: pd.DataFrame
    tracking_uri: str




@dataclass(frozen=True)
class LoadedModel:
    """An eager model rebuilt from a run, a registry URI or a checkpoint, with its config."""

    model: nn.Module
    config: TrainConfig
    flat: dict[str, Any]
    num_classes: int
    class_names: tuple[str, ...]
    source_run_id: str | None
    checkpoint: str


def load_trained(run_id: str | None = None, model_uri: str | None = None, ckpt: str | None = None) -> LoadedModel:
    """Rebuild the eager model (for testing and explaining) from exactly one source.

    Args:
        run_id: a training run (its ``checkpoints/best.pt``).
        model_uri: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (resolved to its source run).
        ckpt: a local checkpoint file written by ``medattn train``.

    Raises:
        MedattnError: none or several sources, or a source that does not resolve.
    """
    given = [x for x in (run_id, model_uri, ckpt) if x]
    if len(given) != 1:
        raise ConfigError("give exactly one of --run-id, --model-uri or --ckpt.")
    if model_uri:
        run_id = tracking.resolve_model_uri(model_uri)
    if run_id:
        run = tracking.get_run(run_id)
        if run.data.tags.get(tracking.TAG_KIND, "train") != "train":
            raise MedattnError(
                f"run {run_id!r} is a {run.data.tags[tracking.TAG_KIND]} run, not a training run; pass the id of a medattn train run."
            )
        path = tracking.download(run_id, tracking.BEST_CKPT)
        source = f"runs:/{run_id}/{tracking.BEST_CKPT}"
    else:
        path = Path(ckpt)
        source = str(path)
    state = ckpt_io.load(path)
    flat = dict(state["config"])
    cfg = config_from_flat(flat)
    num_classes = int(state["num_classes"])
    model = build_model(cfg, num_classes, pretrained="none")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise MedattnError(
            f"checkpoint {source!r} does not match a {cfg.model.model} model; it was written by another architecture or version."
        ) from None
    model.eval()
    return LoadedModel(model, cfg, flat, num_classes, tuple(state.get("class_names", [])), run_id, source)


def predictions_frame(ids: Sequence[str], y_true: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """``predictions.csv``: id, label, score (P(class 1) for binary, P(predicted) otherwise), prediction,
    and one ``prob_<k>`` column per class."""
    pred = scores.argmax(1)
    score = scores[:, 1] if scores.shape[1] == 2 else scores[np.arange(len(pred)), pred]
    frame = pd.DataFrame({"id": list(ids), "label": y_true, "score": score, "prediction": pred})
    for k in range(scores.shape[1]):
        frame[f"prob_{k}"] = scores[:, k]
    return frame


def test(cfg: TestConfig, *, parent_run_id: str | None = None, progress: bool = True) -> TestResult:
    """Evaluate a trained model on a split and log a linked test run (SPEC §5, "test")."""
    import mlflow

    from medattn import figures
    from medattn.engine import evaluate
    from medattn.metrics import test_metrics

    uri = tracking.connect(cfg.tracking_uri)
    split = split_name(cfg.split)
    loaded = load_trained(cfg.run_id, cfg.model_uri, cfg.ckpt)
    tcfg = loaded.config
    device = resolve_device(cfg.device)
    index = _load_index(tcfg, cfg.data_dir)
    if index.num_classes != loaded.num_classes:
        raise MedattnError(
            f"the model predicts {loaded.num_classes} classes but the data has {index.num_classes}; "
            "use the same task options (--multiclass) as in training."
        )
    loader = _loader(index, split, tcfg, train=False, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    frame = index.split(split)
    if cfg.experiment:
        experiment_id = tracking.ensure_experiment(cfg.experiment, uri)
    elif loaded.source_run_id:
        experiment_id = tracking.get_run(loaded.source_run_id).info.experiment_id
    else:
        experiment_id = tracking.ensure_experiment(tracking.experiment_name(tcfg.data.dataset), uri)
    tags = {
        tracking.TAG_KIND: "test",
        tracking.TAG_DATASET: tcfg.data.dataset,
        tracking.TAG_MODEL: tcfg.model.model,
        tracking.TAG_SPLIT: split,
        tracking.TAG_PERC_TRAIN: str(tcfg.data.perc_train),
    }
    if loaded.source_run_id:
        tags[tracking.TAG_SOURCE_RUN] = loaded.source_run_id
    env_run = os.environ.get("MLFLOW_RUN_ID") if parent_run_id is None else None
    model = loaded.model.to(device)
    with tracking.tracked_run(
        experiment_id=None if env_run else experiment_id,
        run_id=env_run,
        run_name=f"test-{tcfg.model.model}-{split}",
        tags=tags,
        parent_run_id=parent_run_id,
    ) as run:
        mlflow.set_tags(tags)
        mlflow.log_params({
            "source_run_id": loaded.source_run_id or "None",
            "model_uri": cfg.model_uri or "None",
            "checkpoint": loaded.checkpoint,
            "split": split,
            "model": tcfg.model.model,
            "dataset": tcfg.data.dataset,
            "img_size": tcfg.data.img_size,
            "perc_train": tcfg.data.perc_train,
            "n_boot": cfg.n_boot,
        })
        out = evaluate(model, loader, nn.CrossEntropyLoss(), device, amp=False, desc=f"test {split}",
                       progress=progress)
        metrics = {"loss": out.loss, **test_metrics(out.y_true, out.scores, n_boot=cfg.n_boot, seed=cfg.seed)}
        metrics["n_images"] = float(out.n_images)
        logged = _finite(_prefixed("test", metrics))
        mlflow.log_metrics(logged)
        preds = predictions_frame(frame["image_id"].astype(str).tolist(), out.y_true, out.scores)
        mlflow.log_text(preds.to_csv(index=False), tracking.PREDICTIONS)
        names = list(loaded.class_names) or [str(k) for k in range(loaded.num_classes)]
        mlflow.log_figure(figures.roc_curve_figure(out.y_true, out.scores, title=f"{tcfg.model.model} — {split}",
                                                  class_names=names),
                          f"{tracking.TEST_FIGURES_DIR}/roc_curve.png")
        mlflow.log_figure(
            figures.confusion_matrix_figure(out.y_true, out.scores.argmax(1), names, title=f"{tcfg.model.model} — {split}"),
            f"{tracking.TEST_FIGURES_DIR}/confusion_matrix.png",
        )
        run_id = run.info.run_id
    return TestResult(run_id, loaded.source_run_id, logged, preds, uri)


# =============================================================================================
# demo
# =============================================================================================
# The demo's training settings (experiments/demo.yaml holds the same values for `medattn train`).
DEMO_TRAIN_DEFAULTS: dict[str, Any] = {
    "img_size": 64,
    "epochs": 4,
    "batch_size": 32,
    "lr": 1e-3,
    "select_metric": "val_loss",
    "pretrained": "none",
    "save_freq": 0,
}
# A ViT from scratch needs more (and gentler) steps than the CNNs before its predictions leave
# one class; measured on the demo set at 64 px: 4 epochs at 1e-3 gave balanced accuracy 0.5.
DEMO_MODEL_OVERRIDES: dict[str, dict[str, Any]] = {"deit_tiny": {"epochs": 8, "lr": 5e-4}}
DEMO_MODELS = ("resnet50", "se_resnet50", "cbam_resnet50", "densenet121", "se_densenet121",
               "cbam_densenet121", "deit_tiny")


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``medattn demo`` (defaults sized for a 2-core CPU in a few minutes)."""

    data_dir: str = "demo_data"
    n: int = 400
    synth_size: int = 96
    models: tuple[str, ...] = DEMO_MODELS
    config_file: str | None = None  # a YAML whose values replace DEMO_TRAIN_DEFAULTS
    epochs: int | None = None
    tracking_uri: str | None = None
    experiment: str = "medattn-demo"
    device: str = "auto"
    seed: int = 0
    explain_images: int = 8  # test images explained per model (0: skip interpret)
    explain_steps: int = 8  # deletion/insertion steps in the demo
    promote: bool = True


@dataclass(frozen=True)
class DemoResult:
    """Outcome of :func:`demo`: the parent run and one row per model."""

    parent_run_id: str
    table: pd.DataFrame
    tracking_uri: str
    train_runs: dict[str, str]
    test_runs: dict[str, str]
    xai: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, method, deletion_auc, ...
    interpret_runs: dict[str, str] = field(default_factory=dict)
    promoted: Any = None  # medattn.promote.PromoteResult
    compare_run_id: str | None = None


def demo(cfg: DemoConfig, *, echo: Callable[[str], None] = print, progress: bool = True) -> DemoResult:
    """Synthesise the demo set; per variant train, test, explain and draw figures; promote the best;
    compare the variants.

    Runs nest under one parent run (kind ``demo``) that holds the comparison tables; under
    ``mlflow run`` the project run is that parent. The best variant by ``val_auc`` gets the
    ``champion`` alias of ``medattn-demo``. Last, a top-level ``compare`` run in the same experiment
    holds the comparison table and figures across variants (:func:`compare`).
    """
    import mlflow

    from medattn.data import write_synthetic

    uri = tracking.connect(cfg.tracking_uri)
    models = [_canonical_model(m) for m in cfg.models]
    if cfg.explain_images < 0:
        raise ConfigError(f"--explain-images must be 0 (off) or more, got {cfg.explain_images}.")
    base = {**DEMO_TRAIN_DEFAULTS, **(load_yaml(cfg.config_file) if cfg.config_file else {})}
    base.pop("grid", None)
    data_dir = Path(cfg.data_dir)
    if not (data_dir / "labels.csv").is_file():
        echo(f"writing the synthetic demo set ({cfg.n} images) to {data_dir}")
        write_synthetic(data_dir, n=cfg.n, img_size=cfg.synth_size, seed=cfg.seed)
    env_run = os.environ.pop("MLFLOW_RUN_ID", None)
    experiment_id = None if env_run else tracking.ensure_experiment(cfg.experiment, uri)
    rows, xai_rows, train_runs, test_runs, interpret_runs = [], [], {}, {}, {}
    with tracking.tracked_run(experiment_id=experiment_id, run_id=env_run, run_name="demo",
                              tags={tracking.TAG_KIND: "demo"}) as parent:
        parent_id = parent.info.run_id
        exp_name = mlflow.get_experiment(parent.info.experiment_id).name
        for i, name in enumerate(models):
            echo(f"[{i + 1}/{len(models)}] {name}: train, test" + (", interpret" if cfg.explain_images else ""))
            explicit = {"dataset": "demo", "data_dir": str(data_dir), "model": name, "experiment": exp_name,
                        "epochs": cfg.epochs, "device": cfg.device, "tracking_uri": uri}
            per_model = {} if cfg.config_file else DEMO_MODEL_OVERRIDES.get(name, {})
            tcfg = build_train_config({**base, **per_model, **{k: v for k, v in explicit.items() if v is not None}})
            t0 = time.perf_counter()
            res = train(tcfg, parent_run_id=parent_id, progress=progress)
            seconds = time.perf_counter() - t0
            tres = test(TestConfig(run_id=res.run_id, tracking_uri=uri, device=cfg.device), parent_run_id=parent_id,
                        progress=progress)
            train_runs[name], test_runs[name] = res.run_id, tres.run_id
            m = tres.metrics
            rows.append({
                "model": name,
                "best_epoch": res.best_epoch,
                "val_auc": res.best_metrics.get("val_auc", math.nan),
                "test_auc": m.get("test_auc", math.nan),
                "test_auc_ci": f"[{m.get('test_auc_ci_low', math.nan):.3f}, {m.get('test_auc_ci_high', math.nan):.3f}]",
                "test_balanced_accuracy": m.get("test_balanced_accuracy", math.nan),
                "test_f1": m.get("test_f1", math.nan),
                "train_s": round(seconds, 1),
                "train_run": res.run_id,
            })
            line = (f"    test AUC {m.get('test_auc', math.nan):.3f}, balanced accuracy "
                    f"{m.get('test_balanced_accuracy', math.nan):.3f} (trained in {seconds:.0f} s)")
            if cfg.explain_images:
                ires = interpret(InterpretConfig(run_id=res.run_id, tracking_uri=uri, device=cfg.device,
                                                 max_images=cfg.explain_images, steps=cfg.explain_steps),
                                 parent_run_id=parent_id, progress=progress)
                interpret_runs[name] = ires.run_id
                from medattn.compare import FiguresConfig, make_figures

                make_figures(FiguresConfig(run_id=ires.run_id, tracking_uri=uri))
                for _, r in ires.scores.iterrows():
                    xai_rows.append({"model": name, **r.to_dict()})
                pg = {r["method"]: r.get("pointing_game", math.nan) for _, r in ires.scores.iterrows()}
                line += "; pointing game " + ", ".join(f"{k} {v:.2f}" for k, v in pg.items())
            echo(line)
        table = pd.DataFrame(rows)
        xai = pd.DataFrame(xai_rows)
        mlflow.log_text(table.to_csv(index=False), tracking.COMPARISON_CSV)
        if len(xai):
            mlflow.log_text(xai.to_csv(index=False), tracking.XAI_CSV)
        promoted = None
        if cfg.promote:
            from medattn.promote import PromoteConfig, run_promote

            promoted = run_promote(PromoteConfig(experiment=exp_name, metric="val_auc", tracking_uri=uri))
            mlflow.set_tag("medattn.champion", f"{promoted.model_uri} ({promoted.variant})")
    from medattn.compare import CompareConfig, run_compare

    compared = run_compare(CompareConfig(experiment=exp_name, tracking_uri=uri))
    return DemoResult(parent_id, table, uri, train_runs, test_runs, xai, interpret_runs, promoted, compared.run_id)


def _canonical_model(name: str) -> str:
    from medattn.models import canonical_model_name

    return canonical_model_name(name)






# =============================================================================================
# grid
# =============================================================================================
def grid_cells(config_file: str | Path, overrides: Mapping[str, Any] | None = None) -> list[TrainConfig]:
    """The training configs of every cell of a YAML file's ``grid`` (model × perc_train × ...).

    Args:
        config_file: an ``experiments/*.yaml`` with a ``grid`` mapping of option → list of values.
        overrides: options applied to every cell (e.g. ``data_dir``); a gridded option given here
            pins that axis to the one value.

    Raises:
        ConfigError: the file has no ``grid`` or a grid entry is not a non-empty list.
    """
    import itertools

    raw = load_yaml(config_file)
    grid = raw.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"config file {str(config_file)!r} has no 'grid' mapping of option → list of values.")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid entry {key!r} in {str(config_file)!r} must be a non-empty list.")
        axes[key.replace("-", "_")] = [overrides[key]] if key in overrides else values
    cells = []
    for combo in itertools.product(*axes.values()):
        cell = dict(zip(axes, combo, strict=True))
        if _canonical_model(cell.get("model", overrides.get("model", raw.get("model", "")))) == "deit_tiny":
            # the paper's flatten head belongs to the CNNs; DeiT classifies from its CLS token
            cell["head"] = "pool"
        cells.append(build_train_config({**overrides, **cell}, config_file=config_file))
    return cells


def grid(
    config_file: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> list[TrainResult]:
    """Train every cell of a grid file in turn (each cell is an ordinary training run)."""
    cells = grid_cells(config_file, overrides)
    results = []
    for i, cfg in enumerate(cells):
        echo(f"[{i + 1}/{len(cells)}] {cfg.model.model}, perc_train={cfg.data.perc_train:g}")
        results.append(train(cfg, progress=progress))
    return results


# =============================================================================================
# search / promote (implemented in medattn.search and medattn.promote)
# =============================================================================================


def search(cfg: SearchConfig, *, pruner: Any = None, progress: bool = True) -> SearchResult:
    """Optuna search over lr and batch size, one nested training run per trial (SPEC §5, "search").

    Args:
        cfg: the search options (:class:`medattn.search.SearchConfig`).
        pruner: an ``optuna.pruners.BasePruner`` replacing the default ``MedianPruner``.
        progress: show a progress bar over trials.

    Returns:
        A :class:`medattn.search.SearchResult`: the parent run, the trial runs and the best trial.
    """
    from medattn.search import run_search

    return run_search(cfg, pruner=pruner, progress=progress)


def promote(cfg: PromoteConfig) -> PromoteResult:
    """Move a registry alias (``champion``) to the best finished training run's model version.

    Args:
        cfg: the promote options (:class:`medattn.promote.PromoteConfig`).

    Returns:
        A :class:`medattn.promote.PromoteResult`: name, version, previous version, run id, metric
        value and whether anything changed.
    """
    from medattn.promote import run_promote

    return run_promote(cfg)


# =============================================================================================
# interpret
# =============================================================================================
@dataclass(frozen=True)
class InterpretConfig:
    """Options of ``medattn interpret``; exactly one of ``run_id``, ``model_uri``, ``ckpt``.

    ``methods`` empty means the model's defaults (deeplift + lrp for CNNs, transformer-lrp for DeiT).
    """

    run_id: str | None = None
    model_uri: str | None = None
    ckpt: str | None = None
    split: str = "test"
    methods: tuple[str, ...] = ()
    max_images: int = 16
    target: str = "label"
    batch_size: int = 8
    steps: int = 16
    data_dir: str | None = None
    device: str = "auto"
    tracking_uri: str | None = None
    experiment: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class InterpretResult:
    """Outcome of :func:`interpret`: the new run, mean scores per method, the per-image index."""

    run_id: str
    source_run_id: str | None
    scores: pd.DataFrame  # one row per method (plus "random"): deletion_auc, insertion_auc, ...
    index: pd.DataFrame  # id, label, prediction, score, method, file
    metrics: dict[str, float]
    tracking_uri: str


def _metric_name(method: str) -> str:
    return method.replace("-", "_")


def _denormalize(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) ImageNet-normalised → (B, H, W, 3) uint8."""
    from medattn.data import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (images.detach().cpu().float() * std + mean).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def interpret(cfg: InterpretConfig, *, parent_run_id: str | None = None, progress: bool = True) -> InterpretResult:
    """Explain a trained model's images and score the explanations (SPEC §5, "interpret").

    For each of the first ``max_images`` images of the split (split order) and each method, logs the
    raw map ``saliency/<method>/<image_id>.npy`` and the input ``inputs/<image_id>.png`` (the
    model's view, de-normalised), an index ``saliency/index.csv`` (id, label, prediction, score,
    method, file) and per-image scores ``xai_scores.csv``. Metrics: ``xai_<method>_deletion_auc``
    and ``xai_<method>_insertion_auc`` (means); with ground-truth masks (the demo set) also
    ``xai_<method>_pointing_game`` and ``xai_<method>_mask_mass`` next to
    ``xai_random_pointing_game`` / ``xai_random_mask_mass`` for seeded uniform random maps.
    Method names are written with ``_`` in metric names (``transformer-lrp`` →
    ``xai_transformer_lrp_...``).
    """
    import mlflow
    from PIL import Image
    from tqdm.auto import tqdm

    from medattn.data import load_mask
    from medattn.explain import (EXPLAINERS, attribute, deletion_insertion, mask_relevance_mass, methods_for,
                                 pointing_game, random_baseline_scores)

    uri = tracking.connect(cfg.tracking_uri)
    split = split_name(cfg.split)
    if cfg.target not in ("label", "pred"):
        raise ConfigError(f"--target must be label or pred, got {cfg.target!r}.")
    if cfg.max_images < 1:
        raise ConfigError(f"--max-images must be at least 1, got {cfg.max_images}.")
    if cfg.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {cfg.steps}.")
    loaded = load_trained(cfg.run_id, cfg.model_uri, cfg.ckpt)
    model, tcfg = loaded.model, loaded.config
    methods = [EXPLAINERS.canonical(m) for m in cfg.methods] or methods_for(model)
    device = resolve_device(cfg.device)
    index = _load_index(tcfg, cfg.data_dir)
    frame = index.split(split).iloc[: cfg.max_images].reset_index(drop=True)
    subset = dataclasses.replace(index, frame=frame.assign(split=split))
    loader = _loader(subset, split, tcfg, train=False, batch_size=cfg.batch_size, num_workers=0)
    has_masks = "mask_path" in frame.columns
    model = model.to(device).eval()
    # fail on a method that does not fit the model before any run starts
    probe = next(iter(loader))[0][:1].to(device)
    for method in methods:
        attribute(model, probe, method, torch.zeros(1, dtype=torch.long, device=device))

    if cfg.experiment:
        experiment_id = tracking.ensure_experiment(cfg.experiment, uri)
    elif loaded.source_run_id:
        experiment_id = tracking.get_run(loaded.source_run_id).info.experiment_id
    else:
        experiment_id = tracking.ensure_experiment(tracking.experiment_name(tcfg.data.dataset), uri)
    tags = {tracking.TAG_KIND: "interpret", tracking.TAG_DATASET: tcfg.data.dataset,
            tracking.TAG_MODEL: tcfg.model.model, tracking.TAG_SPLIT: split,
            tracking.TAG_PERC_TRAIN: str(tcfg.data.perc_train)}
    if loaded.source_run_id:
        tags[tracking.TAG_SOURCE_RUN] = loaded.source_run_id
    env_run = os.environ.get("MLFLOW_RUN_ID") if parent_run_id is None else None
    workdir = Path(tempfile.mkdtemp(prefix="medattn-interpret-"))
    gen = torch.Generator().manual_seed(cfg.seed)
    rows, score_rows = [], []
    offset = 0
    with tracking.tracked_run(experiment_id=None if env_run else experiment_id, run_id=env_run,
                              run_name=f"interpret-{tcfg.model.model}-{split}", tags=tags,
                              parent_run_id=parent_run_id) as run:
        mlflow.set_tags(tags)
        mlflow.log_params({"source_run_id": loaded.source_run_id or "None", "checkpoint": loaded.checkpoint,
                           "methods": ",".join(methods), "target": cfg.target, "split": split,
                           "max_images": cfg.max_images, "steps": cfg.steps, "model": tcfg.model.model,
                           "dataset": tcfg.data.dataset, "img_size": tcfg.data.img_size})
        bar = tqdm(total=len(frame) * len(methods), desc="explaining", unit="map", disable=not progress)
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            b = labels.shape[0]
            ids = frame["image_id"].astype(str).iloc[offset : offset + b].tolist()
            with torch.no_grad():
                probs = torch.softmax(model(images).float(), 1)
            preds = probs.argmax(1)
            target = labels if cfg.target == "label" else preds
            pics = _denormalize(images)
            for i, image_id in enumerate(ids):
                path = workdir / tracking.INPUTS_DIR / f"{image_id}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pics[i]).save(path)
            masks = None
            if has_masks:
                paths = frame["mask_path"].iloc[offset : offset + b].tolist()
                masks = torch.from_numpy(np.stack([load_mask(p, tcfg.data.img_size) for p in paths]))
            per_method: dict[str, dict[str, torch.Tensor]] = {}
            for method in methods:
                maps = attribute(model, images, method, target)
                di = deletion_insertion(model, images, maps, target, steps=cfg.steps)
                scores = {"deletion_auc": di.deletion_auc, "insertion_auc": di.insertion_auc}
                if masks is not None:
                    scores["pointing_game"] = pointing_game(maps, masks)
                    scores["mask_mass"] = mask_relevance_mass(maps, masks)
                per_method[method] = scores
                for i, image_id in enumerate(ids):
                    rel = f"{tracking.SALIENCY_DIR}/{method}/{image_id}.npy"
                    (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
                    np.save(workdir / rel, maps[i].detach().cpu().numpy().astype(np.float32))
                    rows.append({"id": image_id, "label": int(labels[i]), "prediction": int(preds[i]),
                                 "score": float(probs[i, 1] if probs.shape[1] == 2 else probs[i, preds[i]]),
                                 "target": int(target[i]), "method": method, "file": rel,
                                 "input": f"{tracking.INPUTS_DIR}/{image_id}.png"})
                bar.update(b)
            if masks is not None:
                rnd = random_baseline_scores(generator=gen, masks=masks, n_draws=8)
                per_method["random"] = {"pointing_game": rnd["pointing_game"], "mask_mass": rnd["relevance_mass"]}
            for method, scores in per_method.items():
                for i, image_id in enumerate(ids):
                    score_rows.append({"id": image_id, "label": int(labels[i]), "method": method,
                                       **{k: float(v[i]) for k, v in scores.items()}})
            offset += b
        bar.close()
        index_df = pd.DataFrame(rows)
        per_image = pd.DataFrame(score_rows)
        index_df.to_csv(workdir / tracking.SALIENCY_INDEX, index=False)
        per_image.to_csv(workdir / tracking.XAI_CSV, index=False)
        mlflow.log_artifacts(str(workdir))
        summary = per_image.drop(columns=["id", "label"]).groupby("method", sort=False).mean(numeric_only=True)
        metrics = {f"xai_{_metric_name(m)}_{k}": float(v) for m, row in summary.iterrows()
                   for k, v in row.items() if np.isfinite(v)}
        mlflow.log_metrics(metrics)
        run_id = run.info.run_id
    return InterpretResult(run_id, loaded.source_run_id, summary.reset_index(), index_df, metrics, uri)


# =============================================================================================
# figures / compare (implemented in medattn.compare)
# =============================================================================================


def figures(cfg: FiguresConfig) -> FiguresResult:
    """Render an interpret run's saliency maps and its training history as figures (SPEC §5, "figures").

    Args:
        cfg: the figures options (:class:`medattn.compare.FiguresConfig`); ``cfg.run_id`` is an
            interpret run, or a training run whose latest finished interpret run is used.

    Returns:
        A :class:`medattn.compare.FiguresResult`: the interpret run the figures were logged to
        (under ``figures/``), its source training run and the artifact paths.
    """
    from medattn.compare import make_figures

    return make_figures(cfg)


def compare(cfg: CompareConfig) -> CompareResult:
    """Compare the variants of an experiment: table, low-data figure, explanation scores, cases.

    Args:
        cfg: the compare options (:class:`medattn.compare.CompareConfig`).

    Returns:
        A :class:`medattn.compare.CompareResult`: the new ``compare`` run, the comparison table,
        the explanation scores, the selected case ids (with ``cfg.cases``) and the artifact paths.
    """
    from medattn.compare import run_compare

    return run_compare(cfg)


# =============================================================================================
# bench (implemented in medattn.bench; issue 8)
# =============================================================================================



def bench(cfg: BenchConfig, *, echo: Callable[[str], None] = print) -> BenchResult:
    """Measure training, inference and explanation throughput (SPEC §6, issue 8).

    Args:
        cfg: the options (:class:`medattn.bench.BenchConfig`; :func:`medattn.bench.quick_config`
            for the tiny CPU run).
        echo: where progress lines and the final markdown table go.

    Returns:
        A :class:`medattn.bench.BenchResult`; its ``out`` is the JSON file written (the markdown
        table lies next to it with the ``.md`` suffix).
    """
    from medattn.bench import run_bench

    return run_bench(cfg, echo=echo)
