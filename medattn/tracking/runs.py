"""Experiments and the runs of every stage: start / resume / nest, end, read back.

The store itself (where it is, :func:`~medattn.tracking.connection.connect`) is in
:mod:`medattn.tracking.connection`; logging into a run in :mod:`medattn.tracking.logs`.
Experiments are created with an explicit artifact location next to the database, because MLflow
fixes it at creation time from whatever the working directory was (a store created from another
directory would put later artifacts there).

``MLFLOW_RUN_ID`` (set by ``mlflow run``) is read in one place, :func:`project_run_id`: a
top-level stage logs into that run instead of starting its own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import torch
import yaml
from mlflow.exceptions import MlflowException

import medattn
from medattn.errors import MedattnError
from medattn.tracking.auth import auth_error
from medattn.tracking.connection import artifact_root, connect
from medattn.tracking.logs import set_tags
from medattn.tracking.names import (
    CONFIG_FILE,
    ENV_EXPERIMENT_ID,
    ENV_RUN_ID,
    TAG_DESCRIPTION,
    TAG_GIT_COMMIT,
    TAG_KIND,
    TAG_MEDATTN_VERSION,
    TAG_MLFLOW_VERSION,
    TAG_TORCH_VERSION,
    describe_run,
    experiment_name,
)
from medattn.tracking.store import retry_locked


@functools.cache
def _git_commit() -> str | None:
    """The commit of medattn's source checkout (``+dirty`` with uncommitted changes); ``None`` when
    medattn is not run from a git checkout or git is missing."""
    folder = Path(medattn.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def environment_tags() -> dict[str, str]:
    """Tags naming what produced a run: medattn's, torch's and MLflow's versions and, where medattn
    runs from a git checkout, its commit (every stage run carries them; the report lists them)."""
    tags = {
        TAG_MEDATTN_VERSION: medattn.__version__,
        TAG_TORCH_VERSION: torch.__version__,
        TAG_MLFLOW_VERSION: mlflow.__version__,
    }
    commit = _git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    return tags


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment ``name``, created with an artifact location beside a local store."""
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    root = artifact_root(uri)
    location = (root / name).as_uri() if root is not None else None
    try:
        return retry_locked(client.create_experiment)(name, artifact_location=location)
    except MlflowException as exc:  # parallel runs in a fresh store create it together
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def active_experiment_id(name: str) -> str | None:
    """The id of the active experiment ``name``, or ``None`` when it does not exist (or is deleted)."""
    exp = mlflow.MlflowClient().get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        return None
    return exp.experiment_id


def experiment_name_of(experiment_id: str) -> str:
    """The name of experiment ``experiment_id``."""
    return mlflow.get_experiment(experiment_id).name


def stage_experiment(name: str | None, dataset: str, uri: str, source_run_id: str | None = None) -> str:
    """The experiment a stage logs to: ``name``, else its source run's, else ``MLFLOW_EXPERIMENT_ID``
    (training only, no source run), else ``medattn-<dataset>``."""
    if name:
        return ensure_experiment(name, uri)
    if source_run_id:
        return get_run(source_run_id).info.experiment_id
    return ensure_experiment(experiment_name(dataset), uri)


def default_train_experiment(name: str | None, dataset: str, uri: str) -> str:
    """``name``, else ``$MLFLOW_EXPERIMENT_ID`` (``mlflow run --experiment-name``), else ``medattn-<dataset>``."""
    if name:
        return ensure_experiment(name, uri)
    return os.environ.get(ENV_EXPERIMENT_ID) or ensure_experiment(experiment_name(dataset), uri)


def get_run(run_id: str):
    """The MLflow run ``run_id``; :class:`MedattnError` if it does not exist."""
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException as exc:
        raise auth_error(exc) or MedattnError(
            f"run {run_id!r} does not exist in the tracking store {mlflow.get_tracking_uri()!r}; "
            "check the run id (mlflow ui lists them) or --tracking-uri."
        ) from None


def run_kind(run_id: str, default: str | None = None) -> str | None:
    """The ``medattn.kind`` tag of ``run_id`` (``default`` when it has none)."""
    return get_run(run_id).data.tags.get(TAG_KIND, default)


# ---- runs -----------------------------------------------------------------------------------
def project_run_id(parent_run_id: str | None = None, *, claim: bool = False) -> str | None:
    """The run ``mlflow run`` created for this process (``MLFLOW_RUN_ID``), which a top-level stage logs into.

    Args:
        parent_run_id: a nested stage never logs into the project run: ``None`` is returned.
        claim: also remove the variable, so that later stages of this process start their own runs
            (the demo makes the project run its parent and then runs other stages).
    """
    if parent_run_id is not None:
        return None
    return os.environ.pop(ENV_RUN_ID, None) if claim else os.environ.get(ENV_RUN_ID)


def project_experiment_name(uri: str | None = None) -> str | None:
    """Under ``mlflow run``: the name of the experiment the project run is in, else ``None``.

    ``mlflow run`` without ``--experiment-name`` puts its run in the Default experiment; the
    ``promote`` and ``compare`` entry points then look there, where the project's training runs
    went, instead of in ``medattn-demo``.
    """
    run_id = os.environ.get(ENV_RUN_ID)
    if not run_id:
        return None
    connect(uri)
    return experiment_name_of(get_run(run_id).info.experiment_id)


@contextlib.contextmanager
def tracked_run(
    *,
    experiment_id: str | None = None,
    run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[Any]:
    """Start (or continue) a run and always end it with the right status.

    The run ends FINISHED on success, KILLED on Ctrl-C and FAILED on any other exception, which is
    re-raised — no run is ever left RUNNING.
    """
    kwargs: dict[str, Any] = dict(run_id=run_id, run_name=None if run_id else run_name, tags=dict(tags or {}))
    if experiment_id is not None and run_id is None:
        kwargs["experiment_id"] = experiment_id
    if parent_run_id is not None:
        kwargs.update(nested=True, parent_run_id=parent_run_id)
    if system_metrics:
        kwargs["log_system_metrics"] = True
    run = retry_locked(mlflow.start_run)(**kwargs)
    try:
        yield run
    except KeyboardInterrupt:
        _end_run(run.info.run_id, "KILLED")
        raise
    except BaseException:
        _end_run(run.info.run_id, "FAILED")
        raise
    else:
        _end_run(run.info.run_id, "FINISHED")


def _end_run(run_id: str, status: str) -> None:
    """End the active run; its status is written first (retried), because ``mlflow.end_run`` pops the
    run before writing it and a refused write would leave the run RUNNING."""
    set_terminated(run_id, status)
    retry_locked(mlflow.end_run)(status)


@contextlib.contextmanager
def stage_run(
    *,
    experiment_id: str | None,
    run_name: str,
    tags: Mapping[str, str] | None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    system_metrics: bool = False,
    description: str | None = None,
) -> Iterator[str]:
    """The run of one stage, yielding its id: ``run_id`` when given (a resumed run, or the project
    run of ``mlflow run``: :func:`project_run_id`), else a new run in ``experiment_id`` (nested under
    ``parent_run_id`` when given). ``tags`` (``None``: leave an existing run's tags) are set in every case.

    A run without a description gets ``description``, else the sentence its tags give
    (:func:`~medattn.tracking.names.describe_run`): the MLflow UI shows it on the run page.
    """
    with tracked_run(
        experiment_id=None if run_id else experiment_id,
        run_id=run_id,
        run_name=run_name,
        tags=tags,
        parent_run_id=parent_run_id,
        system_metrics=system_metrics,
    ) as run:
        if tags:
            set_tags({**environment_tags(), **tags})
        text = description or (describe_run(tags) if tags else None)
        if text and not run.data.tags.get(TAG_DESCRIPTION):
            set_tags({TAG_DESCRIPTION: text})
        yield run.info.run_id


def active_run_id() -> str | None:
    """The id of the run active in this thread, if any."""
    run = mlflow.active_run()
    return run.info.run_id if run is not None else None


@retry_locked
def set_terminated(run_id: str, status: str) -> None:
    """Set a finished run's status (e.g. ``KILLED`` for a pruned trial)."""
    mlflow.MlflowClient().set_terminated(run_id, status)


# ---- reading back ---------------------------------------------------------------------------
def download(run_id: str, artifact_path: str, dst: str | Path) -> Path:
    """Download one artifact of a run into the folder ``dst`` (the caller owns it, so nothing is left
    in the temp folder); :class:`MedattnError` naming the artifact if it is missing."""
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(Path(dst)))
    except (MlflowException, OSError):
        raise MedattnError(
            f"run {run_id!r} has no artifact {artifact_path!r}; is it a finished medattn training run?"
        ) from None
    return Path(local)


def run_config(run_id: str) -> dict[str, Any]:
    """The resolved flat config a training run logged as ``config.yaml``."""
    get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="medattn-config-") as tmp:  # nothing left in TMPDIR
        return yaml.safe_load(download(run_id, CONFIG_FILE, tmp).read_text()) or {}


def search_runs(
    experiment_ids: Sequence[str] | None, filter_string: str, order_by: Sequence[str] | None = None
) -> list[Any]:
    """All runs matching ``filter_string`` (every page; all experiments when ``None``), newest first
    unless ``order_by`` says otherwise.

    Returns:
        ``mlflow.entities.Run`` objects.
    """
    client = mlflow.MlflowClient()
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    order = list(order_by or ["attributes.start_time DESC"])
    runs, token = [], None
    while True:
        page = client.search_runs(
            list(experiment_ids), filter_string, max_results=1000, order_by=order, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_filter(kind: str) -> str:
    """Search filter of the FINISHED runs of one medattn kind."""
    return f"tags.`{TAG_KIND}` = '{kind}' and attributes.status = 'FINISHED'"


def metric_history(run_id: str, keys: Sequence[str]) -> dict[str, list[float]]:
    """Per-epoch values of ``keys`` logged to ``run_id``, in step order (absent keys left out)."""
    client = mlflow.MlflowClient()
    out = {}
    for key in keys:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if points:
            out[key] = [float(m.value) for m in points]
    return out


@contextlib.contextmanager
def quiet_artifact_downloads() -> Iterator[None]:
    """Hide MLflow's per-download progress bars (e.g. inside search trials)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)
