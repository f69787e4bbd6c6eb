"""Optuna search over learning rate and batch size, every trial a tracked training run.

One *study* lives in an Optuna storage (default ``sqlite:///optuna.db`` in the working directory;
any RDB URL such as ``postgresql://...`` works, so several workers can share one study). Each
invocation of :func:`run_search` loads the study if it exists (``load_if_exists``) and adds
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

Each trial's ``checkpoints/best.pt`` (and its logged model) is selected by the searched metric,
so the trial's value is the value of the model it logged.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from medattn import tracking
from medattn.errors import ConfigError, MedattnError

if TYPE_CHECKING:
    import optuna

TAG_TRIAL_NUMBER = "medattn.trial_number"
TAG_STUDY = "medattn.study"
TAG_TRIAL_STATE = "medattn.trial_state"
TAG_BEST_TRIAL_RUN = "best_trial_run_id"
TAG_BEST_TRIAL_NUMBER = "best_trial_number"
TRIAL_ATTR_RUN_ID = "mlflow_run_id"
TRIAL_ATTR_PARENT_RUN_ID = "mlflow_parent_run_id"
SEARCH_SPACE_FILE = "search_space.yaml"
TRIALS_FILE = "trials.csv"

DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_BATCH_SIZES = (8, 16, 32, 64)
METRIC_NAMES = tuple(
    f"{split}_{key}"
    for split in ("val", "train")
    for key in (
        "loss", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc", "sensitivity", "specificity"
    )
)


def natural_mode(metric: str) -> str:
    """``min`` for losses, ``max`` for every other metric."""
    return "min" if metric.endswith("loss") else "max"


def check_metric(metric: str) -> str:
    """The metric name if it is one that training logs per epoch; ConfigError otherwise."""
    if metric not in METRIC_NAMES:
        close = difflib.get_close_matches(metric, METRIC_NAMES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "use e.g. val_auc or val_loss."
        raise ConfigError(f"--metric {metric!r} is not a metric medattn train logs per epoch; {hint}")
    return metric


def parse_batch_sizes(text: str | int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``"8,16,32"`` → ``(8, 16, 32)`` (sorted, duplicates removed).

    Raises:
        ConfigError: no entry is a positive integer, or some entry is not one.
    """
    items = text.split(",") if isinstance(text, str) else list(text if not isinstance(text, int) else [text])
    sizes: set[int] = set()
    for item in items:
        raw = str(item).strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"--batch-sizes entry {raw!r} is not an integer; give e.g. 8,16,32,64.") from None
        if value <= 0:
            raise ConfigError(f"--batch-sizes entry {value} is not positive; give e.g. 8,16,32,64.")
        sizes.add(value)
    if not sizes:
        raise ConfigError("--batch-sizes holds no valid batch size; give e.g. 8,16,32,64.")
    return tuple(sorted(sizes))


def redact_url(url: str) -> str:
    """The storage URL without its password (it is logged as a param)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def absolute_storage(url: str) -> str:
    """``sqlite:///optuna.db`` → ``sqlite:////<cwd>/optuna.db``, so logs say where the study is."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url[len(prefix):] not in ("", ":memory:"):
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


@contextlib.contextmanager
def _quiet_artifact_downloads() -> Iterator[None]:
    """Hide MLflow's per-download bars inside trials (the trial bar is the one to watch)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


@dataclass(frozen=True)
class SearchConfig:
    """Options of ``medattn search``.

    Attributes:
        dataset: data set id (aliases accepted).
        model: architecture (seed spellings accepted).
        data_dir: data folder (default: the config file's or ``demo_data``).
        n_trials: trials added by this invocation (at least 1).
        storage: Optuna storage URL; a relative sqlite path is relative to the working directory.
        study_name: default ``medattn-<dataset>-<model>-<metric>``.
        n_jobs: parallel trials in threads of this process (use an RDB storage and several
            processes for more workers).
        metric: per-epoch metric the trials are ranked and pruned by.
        mode: ``max`` or ``min``; default from the metric (``min`` for losses).
        epochs: epochs per trial (default: the config file's, else the train default).
        config_file: an ``experiments/*.yaml`` file with the fixed training options.
        lr_min: lower end of the log-uniform learning-rate range.
        lr_max: upper end of the log-uniform learning-rate range.
        batch_sizes: categorical batch-size choices.
        img_size: image side (default: the config file's, else the train default).
        device: ``auto``, ``cpu`` or ``cuda:N``.
        experiment: MLflow experiment (default ``medattn-<dataset>``).
        tracking_uri: MLflow tracking URI.
        seed: seed of the TPE sampler (training seeds come from the config).
        prune_startup_trials: MedianPruner ``n_startup_trials``.
        prune_warmup_epochs: MedianPruner ``n_warmup_steps`` (epochs before pruning may happen).
        train_overrides: further ``medattn train`` options fixed for every trial (e.g.
            ``{"nr_layers": 1}``); they win over the config file.
    """

    dataset: str = "demo"
    model: str = "resnet50"
    data_dir: str | None = None
    n_trials: int = 20
    storage: str = DEFAULT_STORAGE
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
    tracking_uri: str | None = None
    seed: int = 0
    prune_startup_trials: int = 5
    prune_warmup_epochs: int = 1
    train_overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`run_search`.

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


def _validate(cfg: SearchConfig) -> tuple[str, str, tuple[int, ...]]:
    """Check the search options; returns ``(metric, mode, batch_sizes)``."""
    metric = check_metric(cfg.metric)
    mode = cfg.mode or natural_mode(metric)
    if mode not in ("max", "min"):
        raise ConfigError(f"--mode must be max or min, got {mode!r}.")
    if mode != natural_mode(metric):
        raise ConfigError(
            f"--mode {mode} contradicts {metric}, which is always {'minimised' if natural_mode(metric) == 'min' else 'maximised'}; "
            "leave --mode out."
        )
    if cfg.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1, got {cfg.n_trials}.")
    if cfg.n_jobs < 1:
        raise ConfigError(f"--n-jobs must be at least 1, got {cfg.n_jobs}.")
    if not (math.isfinite(cfg.lr_min) and math.isfinite(cfg.lr_max)) or cfg.lr_min <= 0:
        raise ConfigError(f"--lr-min must be a positive number, got {cfg.lr_min}.")
    if cfg.lr_min >= cfg.lr_max:
        raise ConfigError(f"--lr-min ({cfg.lr_min:g}) must be smaller than --lr-max ({cfg.lr_max:g}).")
    if cfg.prune_startup_trials < 0 or cfg.prune_warmup_epochs < 0:
        raise ConfigError("--prune-startup-trials and --prune-warmup-epochs must be 0 or more.")
    if not cfg.storage.strip():
        raise ConfigError("--storage is empty; give an Optuna storage URL such as sqlite:///optuna.db.")
    return metric, mode, parse_batch_sizes(cfg.batch_sizes)


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


def _build_trial_config(cfg: SearchConfig, overrides: Mapping[str, Any]):
    from medattn.config import build_train_config

    return build_train_config(overrides, config_file=cfg.config_file)


def _get_storage(url: str, attempts: int = 5):
    """Optuna's RDB storage, retrying the schema-creation race of workers that start together.

    Two workers opening a fresh database at the same moment both try to create Optuna's tables;
    one of them fails with a unique-constraint violation (PostgreSQL's ``pg_type`` index). The
    tables exist by then, so opening again succeeds.
    """
    import time

    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts - 1):
        try:
            return optuna.storages.get_storage(url)
        except sqlalchemy.exc.IntegrityError:
            time.sleep(0.5 * (attempt + 1))
    return optuna.storages.get_storage(url)


def _open_study(cfg: SearchConfig, name: str, mode: str, batch_sizes: tuple[int, ...], pruner):
    """Create or load the study; ConfigError for a storage that does not open or a study that clashes."""
    import optuna
    import sqlalchemy.exc

    direction = "maximize" if mode == "max" else "minimize"
    try:
        storage = _get_storage(cfg.storage)
        existing = sum(1 for s in storage.get_all_studies() if s.study_name == name)
    except (ValueError, ImportError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"cannot open the Optuna storage {redact_url(cfg.storage)!r} ({first[:160]}); give an RDB URL such as sqlite:///optuna.db."
        ) from None
    n_before = 0
    if existing:
        old = optuna.load_study(study_name=name, storage=storage)
        if len(old.directions) != 1 or old.direction.name.lower() != direction:
            raise ConfigError(
                f"study {name!r} in {redact_url(cfg.storage)!r} already exists with direction "
                f"{', '.join(d.name.lower() for d in old.directions)}; use another --study-name for --mode {mode}."
            )
        for t in old.get_trials(deepcopy=False):
            dist = t.distributions.get("batch_size")
            if dist is not None and tuple(dist.choices) != batch_sizes:
                raise ConfigError(
                    f"study {name!r} searched batch sizes {','.join(map(str, dist.choices))}; use the same "
                    "--batch-sizes to add trials to it, or another --study-name."
                )
        n_before = len(old.get_trials(deepcopy=False))
    sampler = optuna.samplers.TPESampler(seed=cfg.seed + n_before)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction=direction, load_if_exists=True
    )
    return study, n_before


def run_search(
    cfg: SearchConfig,
    *,
    pruner: optuna.pruners.BasePruner | None = None,
    progress: bool = True,
) -> SearchResult:
    """Run ``cfg.n_trials`` more trials of an Optuna study, each a nested MLflow training run.

    Args:
        cfg: the search options.
        pruner: replaces the default ``MedianPruner`` (tests use one that always prunes).
        progress: show a progress bar over trials (per-epoch bars of the trials are off).

    Returns:
        A :class:`SearchResult`.

    Raises:
        ConfigError: bad options, a storage that does not open, or a data set that does not load
            (all before any MLflow run starts).
        MedattnError: every trial of this invocation failed.
    """
    import mlflow
    import optuna
    import torch

    from medattn import api

    metric, mode, batch_sizes = _validate(cfg)
    cfg = replace(cfg, storage=absolute_storage(cfg.storage.strip()))
    uri = tracking.connect(cfg.tracking_uri)
    env_run = os.environ.get("MLFLOW_RUN_ID")
    base = _build_trial_config(cfg, _train_overrides(cfg, metric, cfg.experiment))
    api._load_index(base)  # a data set that does not load is bad input: fail before any run starts
    dataset, model = base.data.dataset, base.model.model
    name = cfg.study_name or f"medattn-{dataset}-{model}-{metric}"
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=cfg.prune_startup_trials, n_warmup_steps=cfg.prune_warmup_epochs
        )
    study, n_before = _open_study(cfg, name, mode, batch_sizes, pruner)
    if env_run:
        experiment_id = None
    else:
        experiment_id = tracking.ensure_experiment(base.tracking.experiment or tracking.experiment_name(dataset), uri)
    space = {
        "lr": {"distribution": "log-uniform", "low": cfg.lr_min, "high": cfg.lr_max},
        "batch_size": {"distribution": "categorical", "choices": list(batch_sizes)},
    }
    tags = {tracking.TAG_KIND: "search", tracking.TAG_DATASET: dataset, tracking.TAG_MODEL: model, TAG_STUDY: name}
    trial_runs: dict[int, str] = {}

    with tracking.tracked_run(experiment_id=experiment_id, run_id=env_run, run_name=f"search-{name}", tags=tags) as parent:
        parent_id = parent.info.run_id
        experiment_id = parent.info.experiment_id
        exp_name = mlflow.get_experiment(experiment_id).name
        mlflow.set_tags(tags)
        mlflow.log_params({
            "study_name": name,
            "storage": redact_url(cfg.storage),
            "n_trials": cfg.n_trials,
            "n_jobs": cfg.n_jobs,
            "metric": metric,
            "mode": mode,
            "lr_min": cfg.lr_min,
            "lr_max": cfg.lr_max,
            "batch_sizes": ",".join(map(str, batch_sizes)),
            "epochs": base.optim.epochs,
            "dataset": dataset,
            "model": model,
            "sampler": f"TPESampler(seed={cfg.seed + n_before})",
            "pruner": type(pruner).__name__
            + (
                f"(n_startup_trials={cfg.prune_startup_trials}, n_warmup_steps={cfg.prune_warmup_epochs})"
                if isinstance(pruner, optuna.pruners.MedianPruner)
                else ""
            ),
            "study_trials_before": n_before,
        })
        tracking.log_yaml(space, SEARCH_SPACE_FILE)
        overrides = _train_overrides(cfg, metric, exp_name)

        def objective(trial: optuna.Trial) -> float:
            lr = trial.suggest_float("lr", cfg.lr_min, cfg.lr_max, log=True)
            batch_size = trial.suggest_categorical("batch_size", list(batch_sizes))
            trial.set_user_attr(TRIAL_ATTR_PARENT_RUN_ID, parent_id)
            tcfg = _build_trial_config(
                cfg,
                {**overrides, "lr": lr, "batch_size": batch_size, "run_name": f"trial-{trial.number}-{model}"},
            )
            run_box: list[str] = []

            def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
                if not run_box:
                    run_box.append(mlflow.active_run().info.run_id)
                    trial.set_user_attr(TRIAL_ATTR_RUN_ID, run_box[0])
                    trial_runs[trial.number] = run_box[0]
                value = metrics.get(metric, math.nan)
                if value is not None and math.isfinite(value):
                    trial.report(float(value), epoch)
                if trial.should_prune():
                    mlflow.set_tag(TAG_TRIAL_STATE, "PRUNED")
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} with {metric}={value:.4g}")

            extra = {TAG_TRIAL_NUMBER: str(trial.number), TAG_STUDY: name}
            try:
                result = api.train(tcfg, parent_run_id=parent_id, epoch_callback=on_epoch, progress=False,
                                   extra_tags=extra)
            except optuna.TrialPruned:
                # tracked_run ended the run FAILED on the way out; a pruned trial is KILLED
                if run_box:
                    mlflow.MlflowClient().set_terminated(run_box[0], "KILLED")
                raise
            mlflow.MlflowClient().set_tag(result.run_id, TAG_TRIAL_STATE, "COMPLETE")
            trial.set_user_attr(TRIAL_ATTR_RUN_ID, result.run_id)
            trial_runs[trial.number] = result.run_id
            return float(result.best_metrics[metric])

        catch: tuple[type[BaseException], ...] = (MedattnError, torch.OutOfMemoryError)
        with _quiet_artifact_downloads():
            study.optimize(objective, n_trials=cfg.n_trials, n_jobs=cfg.n_jobs, catch=catch,
                           show_progress_bar=progress, gc_after_trial=True)

        trials = study.get_trials(deepcopy=False)
        mine = [t for t in trials if t.number >= n_before and t.user_attrs.get(TRIAL_ATTR_PARENT_RUN_ID) == parent_id]
        states = {t.number: t.state.name for t in mine}
        client = mlflow.MlflowClient()
        for t in mine:
            run_id = t.user_attrs.get(TRIAL_ATTR_RUN_ID)
            if run_id and t.state.name == "FAIL":
                client.set_tag(run_id, TAG_TRIAL_STATE, "FAIL")
        counts = {s: sum(1 for v in states.values() if v == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
        mlflow.log_metrics({
            "n_trials_complete": counts["COMPLETE"],
            "n_trials_pruned": counts["PRUNED"],
            "n_trials_failed": counts["FAIL"],
            "study_n_trials": len(trials),
        })
        frame = study.trials_dataframe()
        mlflow.log_text(frame.to_csv(index=False), TRIALS_FILE)
        if mine and counts["FAIL"] == len(mine):
            reason = mine[0].system_attrs.get("fail_reason", "see the trial runs")
            raise MedattnError(
                f"all {len(mine)} trials of study {name!r} failed; the first: {str(reason).splitlines()[0][:200]}"
            )
        best_value, best_params, best_run = None, {}, None
        completed = [t for t in trials if t.state.name == "COMPLETE"]
        if completed:
            best = study.best_trial
            best_value, best_params = float(best.value), dict(best.params)
            best_run = best.user_attrs.get(TRIAL_ATTR_RUN_ID)
            mlflow.log_params({f"best_{k}": v for k, v in best_params.items()})
            mlflow.log_metric("best_value", best_value)
            mlflow.set_tag(TAG_BEST_TRIAL_NUMBER, str(best.number))
            if best_run:
                mlflow.set_tag(TAG_BEST_TRIAL_RUN, best_run)

    return SearchResult(
        parent_run_id=parent_id,
        experiment_id=experiment_id,
        tracking_uri=uri,
        study_name=name,
        storage=redact_url(cfg.storage),
        trial_run_ids=dict(sorted(trial_runs.items())),
        states=states,
        n_study_trials=len(trials),
        best_value=best_value,
        best_params=best_params,
        best_trial_run_id=best_run,
    )
