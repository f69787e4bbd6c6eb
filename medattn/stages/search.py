"""The ``search`` stage: Optuna search over learning rate and batch size, every trial a tracked training run.

One *study* lives in an Optuna storage (default ``sqlite:///optuna.db`` in the working directory;
any RDB URL such as ``postgresql://...`` works, so several workers can share one study). Each
invocation of :func:`search` loads the study if it exists (``load_if_exists``) and adds
``n_trials`` trials to it, under **one parent MLflow run** (tag ``medattn.kind=search``). Each trial
**is** a ``medattn train`` run, nested under that parent and tagged ``medattn.trial_number``:

* completed trials end FINISHED, pruned trials KILLED, failed trials FAILED;
* the parent gets params ``best_lr`` / ``best_batch_size``, metric ``best_value`` and tag
  ``best_trial_run_id`` (the best trial of the whole study, earlier invocations included).

Search space (defaults; both configurable):

* ``lr``: log-uniform in ``[1e-6, 1e-2]`` (Adam; the paper used 1e-4 by hand);
* ``batch_size``: categorical over ``8, 16, 32, 64``.

Sampler: TPE seeded with ``seed + number of trials already in the study``, so a run is
reproducible (with ``n_jobs=1``) yet a resumed study does not replay the first invocation's random
start-up points. Pruner: :class:`optuna.pruners.MedianPruner` with ``n_startup_trials=5`` (no
pruning until five trials have completed) and ``n_warmup_steps=1`` (a trial is never pruned at
the end of its first epoch), fed one ``trial.report(value, epoch)`` per epoch.

Each trial's ``checkpoints/best.pt`` is selected by the searched metric, so the trial's value is
the value of its checkpoint. Trials log no MLflow model unless ``log_models`` is set (a search
writes many runs; ``medattn train --register`` or ``promote`` is how a model reaches the registry).

Workers that die (a preempted node, the OOM killer, ``kill -9``): the storage records a heartbeat
of every running trial every ``heartbeat_s`` seconds. A trial whose heartbeat is older than twice that is *stale*: the next
worker that asks the study for a trial marks it FAIL, queues a retry with the same parameters
(:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, at most ``trial_retries`` times) and
ends the dead worker's MLflow runs (the trial's and its parent) FAILED. Each trial records its
MLflow run id (user attribute ``mlflow_run_id``) as soon as that run starts, so even a killed
trial names its run. The parent run gets Optuna's optimisation history and parameter importance
plots (``figures/``).

The storage URL comes from ``--storage``, else from ``$OPTUNA_STORAGE`` (so credentials never
pass through ``mlflow run -P``, which logs every parameter), else ``sqlite:///optuna.db``; its
password is never logged. Besides RDB URLs, ``journal:PATH`` (``journal:///shared/study.journal``)
is Optuna's journal file, which needs no database server, only a file system every worker sees.
Optuna keeps no heartbeat in a journal: instead, each worker starting on it fails the RUNNING
trials whose worker process (host and pid, or Slurm job) is gone and retries them as above.

Several workers (:func:`search_workers`): ``workers`` processes on this machine, or Slurm jobs
through submitit (:mod:`medattn.stages.slurm`), each adding its share of ``n_trials`` to the one
study in the shared storage (PostgreSQL, a journal file on a shared file system, or a sqlite file
when every job runs on one host). A Slurm worker requeued after its time limit or a preemption
starts again; the trial it was running is failed and retried as for a dead worker.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import optuna
import torch
from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

from medattn import tracking
from medattn.config import (
    TrackingPart,
    TrainConfig,
    at_least,
    build_train_config,
    check_metric,
    check_mode,
    parse_batch_sizes,
    set_field,
)
from medattn.errors import ConfigError, MedattnError
from medattn.metrics import metric_mode
from medattn.stages import cells, slurm
from medattn.stages.common import data_index
from medattn.stages.search_storage import (
    JOURNAL_PREFIX,
    TRIAL_ATTR_PARENT_RUN_ID,
    TRIAL_ATTR_RUN_ID,
    TRIAL_ATTR_WORKER,
    _fail_dead_trials,
    _open_study,
    _quiet_optuna,
    resolve_storage,
)
from medattn.stages.train import train
from medattn.tracking import (
    TAG_BEST_TRIAL_NUMBER,
    TAG_BEST_TRIAL_RUN,
    TAG_RETRY_OF,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
    redact_url,
)

DEFAULT_BATCH_SIZES = (8, 16, 32, 64)


@dataclass(frozen=True, kw_only=True)
class SearchConfig(TrackingPart):
    """Options of ``medattn search``.

    Attributes:
        dataset: data set id (aliases accepted).
        model: architecture (seed spellings accepted).
        data_dir: data folder (default: the config file's or ``demo_data``).
        n_trials: trials added by this invocation (at least 1).
        storage: Optuna storage URL; a relative sqlite path is relative to the working directory.
            ``None`` or empty: ``$OPTUNA_STORAGE``, else
            :data:`~medattn.stages.search_storage.DEFAULT_STORAGE` (so that a database password
            need not be passed through ``mlflow run -P``, which logs it).
        study_name: default ``medattn-<dataset>-<model>-<metric>``.
        n_jobs: parallel trials in threads of this process (more: several processes, one RDB storage).
        metric: per-epoch metric the trials are ranked and pruned by.
        mode: ``max`` or ``min``; default from the metric (``min`` for losses).
        epochs: epochs per trial (default: the config file's, else the train default).
        config_file: an ``experiments/*.yaml`` file with the fixed training options.
        lr_min, lr_max: the ends of the log-uniform learning-rate range.
        batch_sizes: categorical batch-size choices (sorted, duplicates removed).
        img_size: image side (default: the config file's, else the train default).
        device: ``auto``, ``cpu`` or ``cuda:N`` (default: the config file's, else auto).
        experiment: MLflow experiment (default ``medattn-<dataset>``).
        tracking_uri: MLflow tracking URI.
        seed: seed of the TPE sampler (training seeds come from the config).
        prune_startup_trials, prune_warmup_epochs: MedianPruner ``n_startup_trials``, ``n_warmup_steps`` (epochs).
        heartbeat_s: seconds between the heartbeats of a running trial in the storage; a trial
            silent for twice that is failed and retried by the next worker (0: no heartbeat).
        trial_retries: how often a trial whose worker died is retried.
        log_models: log each trial's model to MLflow (checkpoints are always logged).
        train_overrides: ``medattn train`` options fixed for every trial (``{"nr_layers": 1}``), over the config file.
    """

    dataset: str = "demo"
    model: str = "resnet50"
    data_dir: str | None = None
    n_trials: int = 20
    storage: str | None = None
    study_name: str | None = None
    n_jobs: int = 1
    metric: str = "val_auc"
    mode: str | None = None
    epochs: int | None = None
    config_file: str | None = None
    lr_min: float = 1e-6
    lr_max: float = 1e-2
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    img_size: int | None = None
    device: str | None = None
    experiment: str | None = None
    seed: int = 0
    prune_startup_trials: int = 5
    prune_warmup_epochs: int = 1
    heartbeat_s: int = 60
    trial_retries: int = 1
    log_models: bool = False
    train_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # noqa: D105
        metric = check_metric(self.metric)
        mode = check_mode(self.mode, metric)
        if mode != metric_mode(metric):
            verb = "minimised" if metric_mode(metric) == "min" else "maximised"
            raise ConfigError(f"--mode {mode} contradicts {metric}, which is always {verb}; leave --mode out.")
        at_least("n_trials", self.n_trials, 1, "at least 1")
        at_least("n_jobs", self.n_jobs, 1, "at least 1")
        if not (math.isfinite(self.lr_min) and math.isfinite(self.lr_max)) or self.lr_min <= 0:
            raise ConfigError(f"--lr-min must be a positive number, got {self.lr_min}.")
        if self.lr_min >= self.lr_max:
            raise ConfigError(f"--lr-min ({self.lr_min:g}) must be smaller than --lr-max ({self.lr_max:g}).")
        if self.prune_startup_trials < 0 or self.prune_warmup_epochs < 0:
            raise ConfigError("--prune-startup-trials and --prune-warmup-epochs must be 0 or more.")
        at_least("heartbeat_s", self.heartbeat_s, 0, "0 (no heartbeat) or more seconds")
        at_least("trial_retries", self.trial_retries, 0, "0 or more")
        set_field(self, "batch_sizes", parse_batch_sizes(self.batch_sizes))
        set_field(self, "mode", mode)


__all__ = [
    "TAG_BEST_TRIAL_NUMBER",
    "TAG_BEST_TRIAL_RUN",
    "TAG_STUDY",
    "TAG_TRIAL_NUMBER",
    "TAG_TRIAL_STATE",
    "SearchConfig",
    "SearchResult",
    "parse_batch_sizes",
    "redact_url",
    "search",
]


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`search`.

    Attributes:
        parent_run_id: the search's parent MLflow run.
        experiment_id: its experiment.
        tracking_uri: the MLflow store.
        study_name: the Optuna study.
        storage: its storage URL (password redacted).
        trial_run_ids: trial number → MLflow run id, for this invocation's trials.
        states: trial number → ``COMPLETE`` | ``PRUNED`` | ``FAIL``, for this invocation's trials.
        n_study_trials: trials in the study after this invocation (earlier ones included).
        best_value: best metric value of the study (``None`` when no trial completed).
        best_params: its ``lr`` and ``batch_size``.
        best_trial_run_id: the MLflow run of the best trial.
    """

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    study_name: str
    storage: str
    trial_run_ids: dict[int, str]
    states: dict[int, str]
    n_study_trials: int
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_trial_run_id: str | None = None


def _train_overrides(cfg: SearchConfig, metric: str, experiment: str | None) -> dict[str, Any]:
    base = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "data_dir": cfg.data_dir,
        "epochs": cfg.epochs,
        "img_size": cfg.img_size,
        "device": cfg.device,
        "tracking_uri": cfg.tracking_uri,
        **dict(cfg.train_overrides),
        # the checkpoint (and logged model) of a trial is the best one by the searched metric
        "select_metric": metric,
    }
    if experiment is not None:
        base["experiment"] = experiment
    return {k: v for k, v in base.items() if v is not None}


def _build_trial_config(cfg: SearchConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    return build_train_config(overrides, config_file=cfg.config_file)


def _pruner_name(pruner, cfg: SearchConfig) -> str:
    if isinstance(pruner, optuna.pruners.MedianPruner):
        return (
            f"{type(pruner).__name__}(n_startup_trials={cfg.prune_startup_trials}, "
            f"n_warmup_steps={cfg.prune_warmup_epochs})"
        )
    return type(pruner).__name__


def _retried_trial_number(trial: optuna.Trial) -> int | None:
    """The number of the (first) trial that ``trial`` retries after its worker died, else ``None``."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    with _quiet_optuna():
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)


def _objective(cfg: SearchConfig, overrides: Mapping[str, Any], parent_id: str, trial_runs: dict[int, str], model: str):
    """The Optuna objective: one nested training run per trial, reported and pruned per epoch."""
    metric = cfg.metric

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", cfg.lr_min, cfg.lr_max, log=True)
        batch_size = trial.suggest_categorical("batch_size", list(cfg.batch_sizes))
        trial.set_user_attr(TRIAL_ATTR_PARENT_RUN_ID, parent_id)
        trial.set_user_attr(TRIAL_ATTR_WORKER, cells.process_tags(slurm.current_job_id()))
        tcfg = _build_trial_config(
            cfg, {**overrides, "lr": lr, "batch_size": batch_size, "run_name": f"trial-{trial.number}-{model}"}
        )
        tags = {TAG_TRIAL_NUMBER: str(trial.number), TAG_STUDY: trial.study.study_name}
        retry_of = _retried_trial_number(trial)
        if retry_of is not None:  # a retry inherits the dead trial's user attributes: forget its run
            tags[TAG_RETRY_OF] = str(retry_of)
            trial.set_user_attr(TRIAL_ATTR_RUN_ID, None)

        def on_run_start(run_id: str) -> None:  # recorded before any epoch: a killed trial still names its run
            trial.set_user_attr(TRIAL_ATTR_RUN_ID, run_id)
            trial_runs[trial.number] = run_id

        def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
            value = metrics.get(metric, math.nan)
            if value is not None and math.isfinite(value):
                trial.report(float(value), epoch)
            if trial.should_prune():
                tracking.set_tags({TAG_TRIAL_STATE: "PRUNED"})
                raise optuna.TrialPruned(f"pruned after epoch {epoch} with {metric}={value:.4g}")

        try:
            result = train(
                tcfg,
                parent_run_id=parent_id,
                epoch_callback=on_epoch,
                on_run_start=on_run_start,
                log_model=cfg.log_models,
                progress=False,
                extra_tags=tags,
            )
        except optuna.TrialPruned:
            if trial.number in trial_runs:  # the run ended FAILED on the way out; a pruned trial is KILLED
                tracking.set_terminated(trial_runs[trial.number], "KILLED")
            raise
        tracking.set_tags({TAG_TRIAL_STATE: "COMPLETE"}, run_id=result.run_id)
        trial.set_user_attr(TRIAL_ATTR_RUN_ID, result.run_id)
        trial_runs[trial.number] = result.run_id
        return float(result.best_metrics[metric])

    return objective


def _summarise(study: optuna.Study, n_before: int, parent_id: str) -> tuple[list, dict[int, str]]:
    """Log the trial counts, the trials table and the best trial to the parent run.

    Returns:
        The study's trials and the states of this invocation's trials.

    Raises:
        MedattnError: every trial of this invocation failed.
    """
    trials = study.get_trials(deepcopy=False)
    mine = [t for t in trials if t.number >= n_before and t.user_attrs.get(TRIAL_ATTR_PARENT_RUN_ID) == parent_id]
    states = {t.number: t.state.name for t in mine}
    for t in mine:
        if t.user_attrs.get(TRIAL_ATTR_RUN_ID) and t.state.name == "FAIL":
            tracking.set_tags({TAG_TRIAL_STATE: "FAIL"}, run_id=t.user_attrs[TRIAL_ATTR_RUN_ID])
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    tracking.log_metrics(
        {
            "n_trials_complete": counts["COMPLETE"],
            "n_trials_pruned": counts["PRUNED"],
            "n_trials_failed": counts["FAIL"],
            "study_n_trials": len(trials),
        }
    )
    tracking.log_text(study.trials_dataframe().to_csv(index=False), tracking.TRIALS_FILE)
    if mine and counts["FAIL"] == len(mine):
        reason = mine[0].system_attrs.get("fail_reason", "see the trial runs")
        raise MedattnError(
            f"all {len(mine)} trials of study {study.study_name!r} failed; the first: {str(reason).splitlines()[0][:200]}"
        )
    if any(t.state.name == "COMPLETE" for t in trials):
        best = study.best_trial
        tracking.log_params({f"best_{k}": v for k, v in best.params.items()})
        tracking.log_metrics({"best_value": float(best.value)})
        tracking.set_tags({TAG_BEST_TRIAL_NUMBER: str(best.number)})
        if best.user_attrs.get(TRIAL_ATTR_RUN_ID):
            tracking.set_tags({TAG_BEST_TRIAL_RUN: best.user_attrs[TRIAL_ATTR_RUN_ID]})
    return trials, states


def _log_study_figures(study: optuna.Study) -> None:
    """Optuna's optimisation history (one completed trial or more) and parameter importances (two or more)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return
    with _quiet_optuna():
        axes = {tracking.SEARCH_HISTORY_FIGURE: plot_optimization_history(study)}
        if len(complete) >= 2:
            axes[tracking.SEARCH_IMPORTANCE_FIGURE] = plot_param_importances(study)
    for path, ax in axes.items():
        tracking.log_figure(ax.figure, path)
        plt.close(ax.figure)


def _log_setup(cfg: SearchConfig, base: TrainConfig, name: str, pruner, n_before: int) -> None:
    tracking.log_params(
        {
            "study_name": name,
            "storage": redact_url(cfg.storage),
            "n_trials": cfg.n_trials,
            "n_jobs": cfg.n_jobs,
            "metric": cfg.metric,
            "mode": cfg.mode,
            "lr_min": cfg.lr_min,
            "lr_max": cfg.lr_max,
            "batch_sizes": ",".join(map(str, cfg.batch_sizes)),
            "epochs": base.optim.epochs,
            "dataset": base.data.dataset,
            "model": base.model.model,
            "sampler": f"TPESampler(seed={cfg.seed + n_before})",
            "pruner": _pruner_name(pruner, cfg),
            "heartbeat_s": cfg.heartbeat_s,
            "trial_retries": cfg.trial_retries,
            "log_models": cfg.log_models,
            "study_trials_before": n_before,
        }
    )
    tracking.log_yaml(
        {
            "lr": {"distribution": "log-uniform", "low": cfg.lr_min, "high": cfg.lr_max},
            "batch_size": {"distribution": "categorical", "choices": list(cfg.batch_sizes)},
        },
        tracking.SEARCH_SPACE_FILE,
    )


def search(
    cfg: SearchConfig, *, pruner: optuna.pruners.BasePruner | None = None, progress: bool = True
) -> SearchResult:
    """Run ``cfg.n_trials`` more trials of an Optuna study, each a nested MLflow training run.

    Args:
        cfg: the search options.
        pruner: replaces the default ``MedianPruner`` (tests use one that always prunes).
        progress: show a progress bar over trials (per-epoch bars of the trials are off).

    Returns:
        A :class:`SearchResult`.

    Raises:
        ConfigError: a storage that does not open, or a data set that does not load (before any
            MLflow run starts).
        MedattnError: every trial of this invocation failed.
    """
    cfg = replace(cfg, storage=resolve_storage(cfg.storage))
    uri = tracking.connect(cfg.tracking_uri)
    base = _build_trial_config(cfg, _train_overrides(cfg, cfg.metric, cfg.experiment))
    data_index(base)  # a data set that does not load is bad input: fail before any run starts
    dataset, model = base.data.dataset, base.model.model
    name = cfg.study_name or f"medattn-{dataset}-{model}-{cfg.metric}"
    pruner = pruner or optuna.pruners.MedianPruner(
        n_startup_trials=cfg.prune_startup_trials, n_warmup_steps=cfg.prune_warmup_epochs
    )
    study, n_before = _open_study(cfg, name, cfg.mode, cfg.batch_sizes, pruner)
    if cfg.storage.startswith(JOURNAL_PREFIX):
        _fail_dead_trials(study, cfg)
    project = tracking.project_run_id()
    experiment_id = (
        None
        if project
        else tracking.ensure_experiment(base.tracking.experiment or tracking.experiment_name(dataset), uri)
    )
    tags = {tracking.TAG_KIND: "search", tracking.TAG_DATASET: dataset, tracking.TAG_MODEL: model, TAG_STUDY: name}
    trial_runs: dict[int, str] = {}
    with tracking.stage_run(
        experiment_id=experiment_id, run_id=project, run_name=f"search-{name}", tags=tags
    ) as parent_id:
        experiment_id = tracking.get_run(parent_id).info.experiment_id
        _log_setup(cfg, base, name, pruner, n_before)
        overrides = _train_overrides(cfg, cfg.metric, tracking.experiment_name_of(experiment_id))
        with tracking.quiet_artifact_downloads(), _quiet_optuna():
            study.optimize(
                _objective(cfg, overrides, parent_id, trial_runs, model),
                n_trials=cfg.n_trials,
                n_jobs=cfg.n_jobs,
                catch=(MedattnError, torch.OutOfMemoryError),
                show_progress_bar=progress,
                gc_after_trial=True,
            )
        trials, states = _summarise(study, n_before, parent_id)
        _log_study_figures(study)
    completed = any(t.state.name == "COMPLETE" for t in trials)
    best = study.best_trial if completed else None
    return SearchResult(
        parent_run_id=parent_id,
        experiment_id=experiment_id,
        tracking_uri=uri,
        study_name=name,
        storage=redact_url(cfg.storage),
        trial_run_ids=dict(sorted(trial_runs.items())),
        states=states,
        n_study_trials=len(trials),
        best_value=float(best.value) if best else None,
        best_params=dict(best.params) if best else {},
        best_trial_run_id=best.user_attrs.get(TRIAL_ATTR_RUN_ID) if best else None,
    )


# =============================================================================================
# several workers: local processes or Slurm jobs on one study
# =============================================================================================
def search_worker(cfg: SearchConfig) -> SearchResult:
    """One worker of :func:`search_workers` (a module-level function: it pickles into a process or job)."""
    return search(cfg, progress=False)


def _shares(n_trials: int, workers: int) -> list[int]:
    return [n_trials // workers + (1 if i < n_trials % workers else 0) for i in range(workers)]


def search_workers(
    cfg: SearchConfig,
    *,
    workers: int,
    launcher: str = "local",
    slurm_options: slurm.SlurmOptions | None = None,
    echo=print,
    progress: bool = True,
) -> list[SearchResult]:
    """``workers`` searches on one study, together adding ``cfg.n_trials`` trials.

    With one local worker this is :func:`search` in this process. Otherwise each worker is a fresh
    process (``launcher="local"``) or a Slurm job (``"slurm"``, one job array), with its own parent
    MLflow run and its own sampler seed (``seed + 1000 × worker``), so workers do not propose the
    same start-up points. The storage is opened (and the study created) here first, so a storage
    that does not open is one sentence before anything starts.

    Raises:
        ConfigError: bad launcher, workers, Slurm options, storage, or no ``sbatch`` (nothing submitted).
        MedattnError: every worker failed.
    """
    opts = slurm_options or slurm.SlurmOptions()
    if launcher not in ("local", "slurm"):
        raise ConfigError(f"--launcher must be one of local, slurm, got {launcher!r}.")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}.")
    if workers > cfg.n_trials:
        raise ConfigError(f"--workers {workers} is more than --n-trials {cfg.n_trials}; every worker needs a trial.")
    if launcher != "slurm" and opts.given():
        raise ConfigError(
            f"{', '.join(opts.given())} only apply to Slurm jobs; add --launcher slurm or leave them out."
        )
    if launcher == "slurm":
        slurm.require_sbatch()
    elif workers == 1:
        return [search(cfg, progress=progress)]
    uri = tracking.connect(cfg.tracking_uri)
    cfg = replace(cfg, storage=resolve_storage(cfg.storage), tracking_uri=uri)
    if cfg.data_dir:
        cfg = replace(cfg, data_dir=str(Path(cfg.data_dir).expanduser().resolve()))
    base = _build_trial_config(cfg, _train_overrides(cfg, cfg.metric, cfg.experiment))
    data_index(base)
    name = cfg.study_name or f"medattn-{base.data.dataset}-{base.model.model}-{cfg.metric}"
    cfg = replace(cfg, study_name=name)
    _open_study(cfg, name, cfg.mode, cfg.batch_sizes, None)  # creates the study once, before the workers race
    if launcher == "slurm" and cfg.storage.startswith("sqlite:"):
        echo(
            f"The Optuna storage {cfg.storage} is a sqlite file, which the Slurm jobs share only when they all run "
            "on this host; on a cluster use PostgreSQL or journal:PATH on a shared file system."
        )
    parts = [replace(cfg, n_trials=n, seed=cfg.seed + 1000 * i) for i, n in enumerate(_shares(cfg.n_trials, workers))]
    if launcher == "slurm":
        jobs = slurm.submit_array(search_worker, parts, opts, name="medattn-search", concurrency=None)
        echo(
            f"submitted {workers} search workers as Slurm job array {str(jobs[0].job_id).split('_')[0]}; "
            f"job logs under {Path(opts.log_folder).expanduser().resolve()}/<job id>/"
        )
        ends = slurm.wait(jobs)
        results = [e.result for e in ends if e.error is None]
        errors = [e.error for e in ends if e.error is not None]
    else:
        results, errors = [], []
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for fut in [pool.submit(search_worker, p) for p in parts]:
                try:
                    results.append(fut.result())
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append((str(exc).strip().splitlines() or [type(exc).__name__])[0][:200])
    for err in errors:
        echo(f"a search worker failed: {err}")
    if not results:
        raise MedattnError(f"all {workers} search workers failed; the first: {errors[0]}")
    return results
