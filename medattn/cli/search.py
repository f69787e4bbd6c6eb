"""``medattn search``: an Optuna study over learning rate and batch size, one MLflow run per trial."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer

from medattn.cli.options import (
    SLURM_LOGS,
    AccountOpt,
    CpusPerCellOpt,
    DeviceOpt,
    DuplicatesOpt,
    GpusPerCellOpt,
    LauncherOpt,
    MemOpt,
    ModeOpt,
    PartitionOpt,
    QuietOpt,
    SlurmExtraOpt,
    SlurmLogsOpt,
    TimeOpt,
    TrackingUriOpt,
    choices,
    from_table,
    registry_choices,
    slurm_options,
)
from medattn.config import parse_batch_sizes
from medattn.metrics import EPOCH_METRIC_NAMES
from medattn.stages.search import SearchConfig

C = SearchConfig  # every default below is the config class's
BATCH_SIZES = ",".join(str(b) for b in C.batch_sizes)  # --batch-sizes as typed


#: The help text of each option, by its flag.
HELP = {
    "--dataset": "Data set (seed spellings accepted).",
    "--model": "Architecture every trial trains (seed spellings accepted).",
    "--data-dir": "Folder with the data set. (default: the config file's, else demo_data)",
    "--n-trials": "Trials this invocation adds to the study (at least 1).",
    "--storage": (
        "Optuna storage URL: sqlite:///optuna.db (in the working directory) or any RDB URL such as "
        "postgresql://user@host/db; an existing study is resumed. Keep passwords out of it: without --storage, "
        "$OPTUNA_STORAGE is used. (default: $OPTUNA_STORAGE, else sqlite:///optuna.db)"
    ),
    "--study-name": "Optuna study name; reuse it to add trials. (default: medattn-<dataset>-<model>-<metric>)",
    "--n-jobs": (
        "Trials run in parallel threads of this process (for more, start several processes on one RDB storage)."
    ),
    "--metric": (
        "Per-epoch metric that ranks and prunes trials, e.g. val_auc or val_loss; each trial's best checkpoint "
        "is chosen by it too."
    ),
    "--epochs": "Epochs per trial. (default: the config file's, else 10)",
    "--config": "YAML experiment file with the fixed training options (experiments/*.yaml).",
    "--lr-min": "Lower end of the log-uniform learning-rate range.",
    "--lr-max": "Upper end of the log-uniform learning-rate range.",
    "--batch-sizes": "Comma-separated batch sizes the search chooses from.",
    "--img-size": "Image side in pixels. (default: the config file's, else 224)",
    "--prune-startup-trials": "MedianPruner: no pruning until this many trials have completed.",
    "--prune-warmup-epochs": "MedianPruner: no trial is pruned during its first N epochs.",
    "--experiment": "MLflow experiment of the search and its trial runs. (default: medattn-<dataset>)",
    "--seed": "Seed of the TPE sampler (a resumed study adds its trial count to it).",
    "--heartbeat-s": (
        "Seconds between a running trial's heartbeats in the storage; a trial silent for twice that (its worker "
        "died) is marked failed and retried by the next worker. 0: no heartbeat."
    ),
    "--trial-retries": "How often a trial whose worker died is retried with the same parameters.",
    "--workers": (
        "Search workers on the one study, sharing --n-trials: processes here, or Slurm jobs with --launcher "
        "slurm (the storage must be shared: PostgreSQL, journal:PATH on a shared file system, or sqlite when all "
        "run on one host)."
    ),
    "--log-models": "Log each trial's MLflow model (checkpoints are always logged).",
}
_opt = partial(from_table, HELP)

DatasetOpt = _opt(str, "--dataset", **registry_choices("dataset"))
ModelOpt = _opt(str, "--model", **registry_choices("model"))
DataDirOpt = _opt(str | None, "--data-dir")
NTrialsOpt = _opt(int, "--n-trials")
StorageOpt = _opt(str | None, "--storage")
StudyNameOpt = _opt(str | None, "--study-name")
NJobsOpt = _opt(int, "--n-jobs")
MetricOpt = _opt(str, "--metric", **choices(EPOCH_METRIC_NAMES))
EpochsOpt = _opt(int | None, "--epochs")
ConfigOpt = _opt(Path | None, "--config")
LrMinOpt = _opt(float, "--lr-min")
LrMaxOpt = _opt(float, "--lr-max")
BatchSizesOpt = _opt(str, "--batch-sizes")
ImgSizeOpt = _opt(int | None, "--img-size")
PruneStartupTrialsOpt = _opt(int, "--prune-startup-trials")
PruneWarmupEpochsOpt = _opt(int, "--prune-warmup-epochs")
ExperimentOpt = _opt(str | None, "--experiment")
SeedOpt = _opt(int, "--seed")
HeartbeatSOpt = _opt(int, "--heartbeat-s")
TrialRetriesOpt = _opt(int, "--trial-retries")
WorkersOpt = _opt(int, "--workers")
LogModelsOpt = _opt(bool, "--log-models/--no-log-models")


def command(
    dataset: DatasetOpt = C.dataset,
    model: ModelOpt = C.model,
    data_dir: DataDirOpt = C.data_dir,
    n_trials: NTrialsOpt = C.n_trials,
    storage: StorageOpt = C.storage,
    study_name: StudyNameOpt = C.study_name,
    n_jobs: NJobsOpt = C.n_jobs,
    metric: MetricOpt = C.metric,
    mode: ModeOpt = C.mode,
    epochs: EpochsOpt = C.epochs,
    config: ConfigOpt = None,
    lr_min: LrMinOpt = C.lr_min,
    lr_max: LrMaxOpt = C.lr_max,
    batch_sizes: BatchSizesOpt = BATCH_SIZES,
    img_size: ImgSizeOpt = C.img_size,
    prune_startup_trials: PruneStartupTrialsOpt = C.prune_startup_trials,
    prune_warmup_epochs: PruneWarmupEpochsOpt = C.prune_warmup_epochs,
    experiment: ExperimentOpt = C.experiment,
    device: DeviceOpt = C.device,
    seed: SeedOpt = C.seed,
    tracking_uri: TrackingUriOpt = C.tracking_uri,
    quiet: QuietOpt = False,
    duplicates: DuplicatesOpt = None,
    heartbeat_s: HeartbeatSOpt = C.heartbeat_s,
    trial_retries: TrialRetriesOpt = C.trial_retries,
    log_models: LogModelsOpt = C.log_models,
    launcher: LauncherOpt = "local",
    workers: WorkersOpt = 1,
    partition: PartitionOpt = None,
    gpus_per_cell: GpusPerCellOpt = 0,
    cpus_per_cell: CpusPerCellOpt = None,
    mem: MemOpt = None,
    time: TimeOpt = None,
    account: AccountOpt = None,
    slurm: SlurmExtraOpt = None,
    slurm_logs: SlurmLogsOpt = SLURM_LOGS,
) -> None:
    """Optuna search over learning rate (log-uniform) and batch size (categorical): TPE sampler,
    median pruning per epoch, one parent MLflow run with one nested training run per trial; several
    workers on one study with --workers (locally or as Slurm jobs, --launcher slurm)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    cfg = SearchConfig(
        dataset=dataset,
        model=model,
        data_dir=data_dir,
        n_trials=n_trials,
        storage=storage,
        study_name=study_name,
        n_jobs=n_jobs,
        metric=metric,
        mode=mode,
        epochs=epochs,
        config_file=str(config) if config else None,
        lr_min=lr_min,
        lr_max=lr_max,
        batch_sizes=parse_batch_sizes(batch_sizes),
        img_size=img_size,
        device=device,
        experiment=experiment,
        tracking_uri=tracking_uri,
        seed=seed,
        prune_startup_trials=prune_startup_trials,
        prune_warmup_epochs=prune_warmup_epochs,
        heartbeat_s=heartbeat_s,
        trial_retries=trial_retries,
        log_models=log_models,
        train_overrides={"duplicates": duplicates} if duplicates is not None else {},
    )
    slurm_opts = slurm_options(partition, gpus_per_cell, cpus_per_cell, mem, time, account, slurm, slurm_logs)
    results = api.search_workers(
        cfg, workers=workers, launcher=launcher, slurm_options=slurm_opts, echo=typer.echo, progress=not quiet
    )
    _report(results, metric)


def _report(results: list, metric: str) -> None:
    """The lines ``medattn search`` prints (for the :class:`medattn.api.SearchResult` of each worker)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import tracking

    result = max(results, key=lambda r: r.n_study_trials)  # the last worker to end saw the whole study
    states = [v for r in results for v in r.states.values()]
    counts = {s: sum(1 for v in states if v == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    n = len(states)
    typer.echo(
        f"{n} trial{'' if n == 1 else 's'}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
        f"{counts['FAIL']} failed; the study now holds {result.n_study_trials}."
    )
    for other in (r for r in results if r is not result):
        typer.echo(f"worker search run {other.parent_run_id} ({len(other.trial_run_ids)} trial runs)")
    if result.best_value is not None:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items()
        )
        typer.echo(f"best {metric} {result.best_value:.4f} with {params} (run {result.best_trial_run_id})")
    else:
        typer.echo("no trial of the study has completed yet.")
    exp = tracking.experiment_name_of(result.experiment_id)
    trials = len(result.trial_run_ids)
    typer.echo(
        tracking.redact_secrets(
            f"Logged search run {result.parent_run_id} with {trials} nested trial run{'' if trials == 1 else 's'} "
            f"in experiment {exp!r} to {result.tracking_uri} and study {result.study_name!r} to {result.storage}; "
            f"view it with: {tracking.ui_command(result.tracking_uri)}"
        )
    )
