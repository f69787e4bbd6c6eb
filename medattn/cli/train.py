"""``medattn train``: train one model (or one per seed), optionally under DDP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import typer

from medattn.cli import ARGV_KEY
from medattn.cli.options import (
    SEEDS_HELP,
    DeviceOpt,
    DuplicatesOpt,
    GpuIdOpt,
    QuietOpt,
    TrackingUriOpt,
    choices,
    default,
    device_of,
    done,
    from_table,
    given,
    registry_choices,
)
from medattn.config import (
    DATA_PIPELINES,
    HEADS,
    INITS,
    PRETRAINED,
    RESIZE_MODES,
    SCHEDULERS,
    UNCERTAIN,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
    TrainConfig,
    data_config,
    model_config,
    optim_config,
    pick,
    tracking_config,
)
from medattn.errors import MedattnError
from medattn.metrics import EPOCH_METRIC_NAMES

#: The help text of each option, by its flag (:func:`_opt` appends the config class's default).
HELP = {
    "--dataset": "Data set (the seed's APTOS, ISIC2020, MIMICCXR accepted).",
    "--data-dir": "Folder with the data set in its on-disk layout.",
    "--model": "Architecture (seed spellings such as SEResNet50 or DeiT-T-LRP accepted).",
    "--low-data-regimen": (
        "Train on a stratified subsample of the training split (see --perc-train); val/test unchanged."
    ),
    "--perc-train": "Fraction of the training split used in the low-data regimen, in (0, 1].",
    "--batch-size": "Batch size for training and validation.",
    "--img-size": "Image side after the transforms, in pixels (a multiple of 16 for deit_tiny).",
    "--resize": "Resize transform.",
    "--class-weights": "Weight the loss by balanced class weights of the training split.",
    "--epochs": "Number of training epochs (with --resume: the new total).",
    "--lr": "Adam learning rate.",
    "--weight-decay": "Adam weight decay.",
    "--scheduler": "Learning-rate schedule.",
    "--select-metric": (
        "Metric that picks the epoch whose weights become the logged model: val_loss (lowest, as in the paper) "
        "or e.g. val_auc (highest)."
    ),
    "--num-workers": "DataLoader worker processes.",
    "--data-pipeline": (
        "auto (uint8 cache + batched augmentation on the GPU when the cache of `medattn data prepare` exists and "
        "the device is CUDA) | gpu (force it, also on CPU) | cpu (PIL per image)."
    ),
    "--save-freq": "Also keep checkpoints/epoch_XXXX.pt every N epochs (0: off).",
    "--resume": "Continue this MLflow run from its checkpoints/last.pt (same run, no duplicate steps).",
    "--ckpt": "Start from a local checkpoint file (weights, optimiser and epoch) in a new run.",
    "--nr-layers": "Transformer blocks of deit_tiny.",
    "--pretrained": "Initial weights. (default: imagenet for real data sets, none for demo)",
    "--weights": "Local ImageNet state_dict/checkpoint for the backbone (machines without network).",
    "--head": (
        "pool (global average pool + linear) | flatten (the original project's linear over the flattened feature "
        "map) | paper (the original's head per family)."
    ),
    "--init": (
        "fair (ImageNet backbone for every variant) | paper (SE/CBAM-DenseNet121 and CBAM-ResNet50 from scratch, "
        "as the original)."
    ),
    "--zero-init-residual": (
        "ResNet variants: start every bottleneck's residual branch at zero (its last BatchNorm's gamma = 0), a "
        "control for the attention gates' down-scaling of that branch when training from scratch. (default: off)"
    ),
    "--multiclass": "APTOS: 5-grade task instead of referable DR (diagnosis > 0).",
    "--uncertain": "MIMIC-CXR uncertain labels: ignore (drop) | zeros | ones.",
    "--seed": "Seed of initialisation, shuffling and augmentation (splits always use 42).",
    "--seeds": SEEDS_HELP,
    "--amp": "bf16 autocast on CUDA (ignored on CPU). (default: amp)",
    "--compile": "torch.compile the model.",
    "--config": "YAML experiment file (experiments/*.yaml); command-line options override it.",
    "--experiment": "MLflow experiment. (default: medattn-<dataset>)",
    "--run-name": "MLflow run name. (default: <model>-<dataset>)",
    "--register": "Register the model as medattn-<dataset> in the model registry.",
    "--system-metrics": "Log CPU/GPU/memory system metrics. (default: on)",
    "--nproc": (
        "Train with PyTorch DDP on N local processes (one per GPU, or gloo on CPU): re-launches itself under "
        "torchrun --nproc-per-node N. --batch-size is then the global batch, split evenly over the processes."
    ),
}


def _opt(typ: type, flag: str, shown: Any = None, **kwargs: Any) -> Any:
    """The option ``flag`` of type ``typ | None``, its help :data:`HELP`'s text plus `` (default: shown)``.

    Every option defaults to None, "not given", so that a --config file's value wins over the config
    class's default and the command line wins over both; ``shown`` is that class default.
    """
    return from_table(HELP, typ | None, flag, "" if shown is None else default(shown), **kwargs)


DatasetOpt = _opt(str, "--dataset", DataConfig.dataset, **registry_choices("dataset"))
DataDirOpt = _opt(str, "--data-dir", DataConfig.data_dir)
ModelOpt = _opt(str, "--model", ModelConfig.model, **registry_choices("model"))
LowDataRegimenOpt = _opt(bool, "--low-data-regimen/--no-low-data-regimen", show_default=False)
PercTrainOpt = _opt(float, "--perc-train", DataConfig.perc_train)
BatchSizeOpt = _opt(int, "--batch-size", OptimConfig.batch_size)
ImgSizeOpt = _opt(int, "--img-size", DataConfig.img_size)
ResizeOpt = _opt(str, "--resize", DataConfig.resize, **choices(RESIZE_MODES))
ClassWeightsOpt = _opt(bool, "--class-weights/--no-class-weights", show_default=False)
EpochsOpt = _opt(int, "--epochs", OptimConfig.epochs)
LrOpt = _opt(float, "--lr", OptimConfig.lr)
WeightDecayOpt = _opt(float, "--weight-decay", OptimConfig.weight_decay)
SchedulerOpt = _opt(str, "--scheduler", OptimConfig.scheduler, **choices(SCHEDULERS))
SelectMetricOpt = _opt(str, "--select-metric", OptimConfig.select_metric, **choices(EPOCH_METRIC_NAMES))
NumWorkersOpt = _opt(int, "--num-workers", DataConfig.num_workers)
DataPipelineOpt = _opt(str, "--data-pipeline", DataConfig.data_pipeline, **choices(DATA_PIPELINES))
SaveFreqOpt = _opt(int, "--save-freq", TrackingConfig.save_freq)
ResumeOpt = _opt(str, "--resume")
CkptOpt = _opt(str, "--ckpt")
NrLayersOpt = _opt(int, "--nr-layers", ModelConfig.nr_layers)
PretrainedOpt = _opt(str, "--pretrained", **choices(PRETRAINED))
WeightsOpt = _opt(str, "--weights")
HeadOpt = _opt(str, "--head", ModelConfig.head, **choices(HEADS))
InitOpt = _opt(str, "--init", ModelConfig.init, **choices(INITS))
ZeroInitOpt = _opt(bool, "--zero-init-residual/--no-zero-init-residual", show_default=False)
MulticlassOpt = _opt(bool, "--multiclass/--binary", show_default=False)
UncertainOpt = _opt(str, "--uncertain", DataConfig.uncertain, **choices(UNCERTAIN))
SeedOpt = _opt(int, "--seed", OptimConfig.seed)
SeedsOpt = _opt(str, "--seeds")
AmpOpt = _opt(bool, "--amp/--no-amp", show_default=False)
CompileOpt = _opt(bool, "--compile/--no-compile", show_default=False)
ConfigOpt = _opt(Path, "--config")
ExperimentOpt = _opt(str, "--experiment")
RunNameOpt = _opt(str, "--run-name")
RegisterOpt = _opt(bool, "--register/--no-register", show_default=False)
SystemMetricsOpt = _opt(bool, "--system-metrics/--no-system-metrics", show_default=False)
NprocOpt = _opt(int, "--nproc")


def command(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    low_data_regimen: LowDataRegimenOpt = None,
    perc_train: PercTrainOpt = None,
    batch_size: BatchSizeOpt = None,
    img_size: ImgSizeOpt = None,
    resize: ResizeOpt = None,
    class_weights: ClassWeightsOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    weight_decay: WeightDecayOpt = None,
    scheduler: SchedulerOpt = None,
    select_metric: SelectMetricOpt = None,
    num_workers: NumWorkersOpt = None,
    data_pipeline: DataPipelineOpt = None,
    device: DeviceOpt = None,
    gpu_id: GpuIdOpt = None,
    save_freq: SaveFreqOpt = None,
    resume: ResumeOpt = None,
    ckpt: CkptOpt = None,
    nr_layers: NrLayersOpt = None,
    pretrained: PretrainedOpt = None,
    weights: WeightsOpt = None,
    head: HeadOpt = None,
    init: InitOpt = None,
    zero_init_residual: ZeroInitOpt = None,
    multiclass: MulticlassOpt = None,
    uncertain: UncertainOpt = None,
    duplicates: DuplicatesOpt = None,
    seed: SeedOpt = None,
    seeds: SeedsOpt = None,
    amp: AmpOpt = None,
    compile: CompileOpt = None,
    config: ConfigOpt = None,
    experiment: ExperimentOpt = None,
    run_name: RunNameOpt = None,
    register: RegisterOpt = None,
    system_metrics: SystemMetricsOpt = None,
    tracking_uri: TrackingUriOpt = None,
    nproc: NprocOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train one model; log params, per-epoch metrics, checkpoints, splits and the model to MLflow.

    Under torchrun (or with --nproc N) every process trains its share of each global batch and
    rank 0 alone logs to MLflow and writes checkpoints. With --seeds every seed is its own run.
    """
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    seed_list = api.parse_seeds(given(seeds))
    if seed_list and seed is not None:
        raise MedattnError("give either --seed or --seeds, not both.")
    # Each option by name into its config part; one not given (None) takes the --config file's value
    # (with --resume: the resumed run's), else the config class's default.
    under = api.values_under_options(config, resume=resume, tracking_uri=tracking_uri)
    # fmt: off
    cfg = TrainConfig(
        data=data_config(under, dataset=dataset, data_dir=data_dir, img_size=img_size, resize=resize,
            low_data_regimen=low_data_regimen, perc_train=perc_train, multiclass=multiclass, uncertain=uncertain,
            num_workers=num_workers, data_pipeline=data_pipeline, duplicates=duplicates),
        model=model_config(under, model=model, pretrained=pretrained, weights=weights, head=head,
            nr_layers=nr_layers, init=init, zero_init_residual=zero_init_residual),
        optim=optim_config(under, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            scheduler=scheduler, class_weights=class_weights, select_metric=select_metric, seed=seed, amp=amp,
            compile=compile),
        tracking=tracking_config(under, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
            register=register, save_freq=save_freq, system_metrics=system_metrics),
        device=pick(under, "device", device_of(device, gpu_id), TrainConfig.device),
        resume=pick(under, "resume", resume, TrainConfig.resume), ckpt=pick(under, "ckpt", ckpt, TrainConfig.ckpt),
    )
    # fmt: on
    cfgs = api.seed_configs(cfg, seed_list)  # one run per seed of --seeds
    if not _relaunched(ctx, nproc, cfg.optim.batch_size):
        _train_each(cfgs, seeds_given=bool(seed_list), progress=not quiet)


def _train_each(cfgs, *, seeds_given: bool, progress: bool) -> None:
    """Train one run per config (one per seed of --seeds); under DDP rank 0 alone prints the outcome."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api, distributed

    main_rank = distributed.is_main_process()
    for i, run_cfg in enumerate(cfgs):
        if seeds_given and main_rank:
            typer.echo(f"[{i + 1}/{len(cfgs)}] {run_cfg.model.model}, seed={run_cfg.optim.seed}")
        result = api.train(run_cfg, progress=progress)
        if main_rank:
            _train_outcome(result)


def _train_outcome(result) -> None:
    """The lines ``medattn train`` prints for one training run (an :class:`medattn.api.TrainResult`)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import tracking

    best = result.best_metrics
    typer.echo(
        f"best epoch {result.best_epoch}: "
        + ", ".join(f"{k}={best[k]:.4f}" for k in ("val_loss", "val_auc", "val_balanced_accuracy") if k in best)
    )
    if result.registered_version:
        name = tracking.registered_model_name(result.config["dataset"])
        typer.echo(f"registered as {name} version {result.registered_version}")
    done("train", result.run_id, result.tracking_uri, result.experiment_id)


def _relaunched(ctx: click.Context, nproc: int | None, batch_size: int) -> bool:
    """With ``--nproc N > 1`` outside torchrun: run this command again under torchrun (returns True).

    Raises:
        MedattnError: ``--nproc`` below 1, contradicting torchrun, or not dividing the global batch.
    """
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import distributed

    world = distributed.env_world_size()
    if nproc is not None and nproc < 1:
        raise MedattnError(f"--nproc must be at least 1, got {nproc}.")
    if nproc is not None and world > 1 and nproc != world:
        raise MedattnError(f"--nproc {nproc} contradicts torchrun's {world} processes; drop --nproc under torchrun.")
    if nproc is None or nproc <= 1 or world != 1:
        return False
    # Validate here, so that bad input is one sentence and exit 2 rather than N worker tracebacks.
    distributed.per_rank_batch(batch_size, nproc)
    _relaunch_under_torchrun(ctx, nproc)
    return True


def _relaunch_under_torchrun(ctx: click.Context, nproc: int) -> None:
    """Run this very ``medattn train`` command again under ``torchrun`` and exit with its status."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import distributed

    argv = ctx.find_root().meta.get(ARGV_KEY) or sys.argv[1:]
    cmd = distributed.torchrun_command(nproc, distributed.strip_nproc(argv))
    typer.echo(f"Launching {nproc} DDP processes: {' '.join(cmd[1:])}", err=True)
    code = subprocess.call(cmd)
    if code:
        raise typer.Exit(2 if code == 2 else 1)
