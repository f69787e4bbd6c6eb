"""Where a search's study lives: the Optuna storage (an RDB URL, or ``journal:PATH``) and the trials of
workers that died.

:func:`resolve_storage` picks the URL (``--storage``, else ``$OPTUNA_STORAGE``, else
``sqlite:///optuna.db``); :func:`_open_study` creates or loads the study on it (retrying the
schema-creation race of workers that start together) and refuses a study of the other direction or
other batch sizes. A trial whose worker died is failed, retried with the same parameters and its
MLflow runs ended FAILED: through the RDB storage's heartbeat (:class:`StaleTrialCallback`), or, on
a journal file that keeps no heartbeat, when a worker finds the trial's process (host and pid, or
Slurm job) gone. The trial's user attributes (``TRIAL_ATTR_*``) name its MLflow runs and its worker.
:mod:`medattn.stages.search` describes the whole stage.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import optuna
import sqlalchemy.exc

from medattn import tracking
from medattn.errors import ConfigError, MedattnError
from medattn.stages import cells, slurm
from medattn.tracking import TAG_TRIAL_STATE, redact_url

TRIAL_ATTR_RUN_ID = "mlflow_run_id"
TRIAL_ATTR_PARENT_RUN_ID = "mlflow_parent_run_id"
TRIAL_ATTR_WORKER = "medattn_worker"  # the process that runs the trial (host + pid, or Slurm job)
JOURNAL_PREFIX = "journal:"
ENV_STORAGE = "OPTUNA_STORAGE"
"""Environment variable with the Optuna storage URL (credentials included) when ``--storage`` is not given."""
#: ``search --storage`` default (relative to the working directory).
DEFAULT_STORAGE = "sqlite:///optuna.db"


class StorageOptions(Protocol):
    """What the storage needs of a :class:`~medattn.stages.search.SearchConfig` (named here, not
    imported: the search stage imports this module)."""

    storage: str
    seed: int
    heartbeat_s: int
    trial_retries: int


def resolve_storage(storage: str | None) -> str:
    """``storage``, else ``$OPTUNA_STORAGE``, else ``sqlite:///optuna.db``; relative sqlite paths made absolute."""
    url = (storage or "").strip() or os.environ.get(ENV_STORAGE, "").strip() or DEFAULT_STORAGE
    return absolute_storage(url)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Hide Optuna's ExperimentalWarning (heartbeat, retry callback, matplotlib plots): the features are used on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def absolute_storage(url: str) -> str:
    """``sqlite:///optuna.db`` → ``sqlite:////<cwd>/optuna.db``, so logs say where the study is."""
    if url.startswith(JOURNAL_PREFIX):
        return JOURNAL_PREFIX + "///" + str(Path(journal_path(url)).resolve()).lstrip("/")
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url[len(prefix) :] not in ("", ":memory:"):
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def _end_dead_run(run_id: str, tags: Mapping[str, str] | None = None) -> None:
    """End a dead worker's run FAILED if it is still RUNNING.

    A run in another tracking store, or one this user may not edit on a team server, is left alone:
    cleaning up after another worker must never stop this one.
    """
    try:
        with tracking.auth_errors():
            if tracking.get_run(run_id).info.status != "RUNNING":
                return
            if tags:
                tracking.set_tags(tags, run_id=run_id)
            tracking.set_terminated(run_id, "FAILED")
    except MedattnError:
        return


class StaleTrialCallback:
    """Optuna's ``heartbeat_stale_trial_callback``: a trial whose worker died is retried, and the
    worker's MLflow runs (the trial's and the search's parent) end FAILED instead of RUNNING forever."""

    def __init__(self, max_retry: int) -> None:
        """Wrap Optuna's retry callback.

        Args:
            max_retry: retries of one trial (a retry that dies too counts).
        """
        with _quiet_optuna():
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Queue the retry, then close the dead worker's runs."""
        self.retry(study, trial)
        if trial.user_attrs.get(TRIAL_ATTR_RUN_ID):
            _end_dead_run(trial.user_attrs[TRIAL_ATTR_RUN_ID], {TAG_TRIAL_STATE: "FAIL"})
        if trial.user_attrs.get(TRIAL_ATTR_PARENT_RUN_ID):
            _end_dead_run(trial.user_attrs[TRIAL_ATTR_PARENT_RUN_ID])


def _rdb_storage(cfg: StorageOptions) -> optuna.storages.BaseStorage:
    """The RDB storage of ``cfg.storage``, with a heartbeat and a retry of stale trials unless ``heartbeat_s`` is 0."""
    heartbeat: dict[str, Any] = {}
    if cfg.heartbeat_s:
        heartbeat = dict(
            heartbeat_interval=cfg.heartbeat_s,
            heartbeat_stale_trial_callback=StaleTrialCallback(cfg.trial_retries),
        )
    with _quiet_optuna():
        return optuna.storages.get_storage(optuna.storages.RDBStorage(cfg.storage, **heartbeat))


def journal_path(url: str) -> str:
    """The file of a ``journal:PATH`` storage (``journal:///abs/path`` or ``journal:rel/path``)."""
    rest = url[len(JOURNAL_PREFIX) :]
    return "/" + rest[3:] if rest.startswith("///") else rest.removeprefix("//")


def _journal_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's journal file (file locks that work on network file systems)."""
    path = journal_path(url)
    if not path:
        raise ValueError("the journal storage names no file")
    with _quiet_optuna():
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def _fail_dead_trials(study: optuna.Study, cfg: StorageOptions) -> int:
    """Journal storage (no heartbeat): fail and retry the RUNNING trials whose worker is gone.

    Returns:
        How many trials were failed.
    """
    queued = slurm.queued_jobs()
    own = slurm.current_job_id()
    callback = StaleTrialCallback(cfg.trial_retries)
    n = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get(TRIAL_ATTR_WORKER)
        if not isinstance(worker, dict) or cells.run_alive(worker, queued, own):
            continue
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        callback(study, study._storage.get_trial(trial._trial_id))
        n += 1
    return n


def _get_storage(cfg: StorageOptions, attempts: int = 5) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage, retrying the schema-creation race of workers that start together.

    Two workers opening a fresh database at the same moment both try to create Optuna's tables;
    one of them fails, on PostgreSQL with a unique-constraint violation (the ``pg_type`` index) or
    with ``type "studydirection" already exists`` / ``relation ... already exists``. The tables
    exist by then, so opening again succeeds.
    """
    if cfg.storage.startswith(JOURNAL_PREFIX):
        return _journal_storage(cfg.storage)
    for attempt in range(attempts - 1):
        try:
            return _rdb_storage(cfg)
        except sqlalchemy.exc.DBAPIError as exc:
            if not _lost_schema_race(exc):
                raise
            time.sleep(0.5 * (attempt + 1))
    return _rdb_storage(cfg)


def _lost_schema_race(exc: sqlalchemy.exc.DBAPIError) -> bool:
    """Whether ``exc`` is another process creating the same schema object first."""
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc.orig)


def _open_study(cfg: StorageOptions, name: str, mode: str, batch_sizes: tuple[int, ...], pruner):
    """Create or load the study; ConfigError for a storage that does not open or a study that clashes."""
    direction = "maximize" if mode == "max" else "minimize"
    try:
        storage = _get_storage(cfg)
        existing = sum(1 for s in storage.get_all_studies() if s.study_name == name)
    except (ValueError, ImportError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        password = urlsplit(cfg.storage).password
        if password:  # a driver may quote the URL back
            first = first.replace(password, "***")
        raise ConfigError(
            f"cannot open the Optuna storage {redact_url(cfg.storage)!r} ({first[:160]}); give an RDB URL such as "
            "sqlite:///optuna.db, or journal:PATH for a journal file."
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
