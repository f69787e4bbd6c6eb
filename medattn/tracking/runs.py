"""The tracking store and the runs of every stage: connect, start / resume / nest, log, read back.

Default store: ``sqlite:///<cwd>/mlflow.db`` with artifacts under ``<cwd>/mlruns``;
experiments are created with an explicit artifact location next to the database, because MLflow
fixes it at creation time from whatever the working directory was (a store created from another
directory would put later artifacts there).
``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` point anywhere else.

``MLFLOW_RUN_ID`` (set by ``mlflow run``) is read in one place, :func:`project_run_id`: a
top-level stage logs into that run instead of starting its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import pandas as pd
import yaml
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from medattn.errors import MedattnError
from medattn.tracking.auth import auth_error, check_uri_has_no_secret, redact_secrets, redact_url, redact_value
from medattn.tracking.names import (
    CONFIG_FILE,
    ENV_EXPERIMENT_ID,
    ENV_RUN_ID,
    TAG_DESCRIPTION,
    TAG_KIND,
    describe_run,
    experiment_name,
    resolved_param,
)
from medattn.tracking.store import open_store, retry_locked

HTTP_PROBE_TIMEOUT_S = 5.0
"""Seconds ``connect`` waits for an http(s) tracking server to answer before giving up."""


# ---- store ----------------------------------------------------------------------------------
def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def artifact_root(uri: str) -> Path | None:
    """Local artifact root for a sqlite store (``mlruns`` beside the database), else ``None``."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = unquote(uri[len("sqlite:///") :])
        if db in ("", ":memory:"):
            return Path.cwd().resolve() / "mlruns"
        return Path(db).resolve().parent / "mlruns"
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path)).resolve()
    return None


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI over this store."""
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def _probe_http(uri: str, timeout: float = HTTP_PROBE_TIMEOUT_S) -> None:
    """Fail fast when an http(s) tracking server does not answer at all.

    Any HTTP response (even 401 or 404) counts as reachable; only a refused, unresolvable or
    silent server is an error here, so that authentication and API errors still come from MLflow.

    Raises:
        MedattnError: no answer within ``timeout`` seconds.
    """
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the user's own tracking URI
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MedattnError(
            f"cannot reach the MLflow tracking server {redact_url(uri)!r} ({str(reason)[:120] or type(exc).__name__}); "
            "start it or check --tracking-uri and MLFLOW_TRACKING_URI."
        ) from None


DB_PROBE_TIMEOUT_S = 5
"""Seconds ``connect`` waits for a database tracking store to accept a connection."""


def _probe_database(uri: str) -> None:
    """Fail fast when a database tracking store (PostgreSQL, MySQL, ...) does not accept a connection.

    MLflow retries an unreachable database with exponential backoff for about 100 s before raising;
    one direct connection attempt here turns that into one sentence at once.

    Raises:
        MedattnError: the driver is missing or the database refuses or does not answer.
    """
    import sqlalchemy  # MLflow's own dependency; imported here only for database stores

    args = {"connect_timeout": DB_PROBE_TIMEOUT_S} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except (SQLAlchemyError, ImportError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (install the database driver the URI names)" if isinstance(exc, ImportError) else ""
        raise MedattnError(
            redact_secrets(
                f"cannot reach the MLflow tracking store {redact_url(uri)!r} ({first[:160]}){hint}; check "
                "--tracking-uri or MLFLOW_TRACKING_URI."
            )
        ) from None


def connect(uri: str | None = None) -> str:
    """Point MLflow at the store and check that it answers.

    Returns:
        The resolved tracking URI.

    Raises:
        MedattnError: the store cannot be reached or opened.
    """
    resolved = resolve_tracking_uri(uri)
    check_uri_has_no_secret(resolved)  # credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD, never the URI
    scheme = urlparse(resolved).scheme
    if scheme in ("http", "https"):
        _probe_http(resolved)  # MLflow itself retries an unreachable server for minutes
    elif scheme not in ("", "file", "sqlite", "databricks", "databricks-uc", "uc"):
        _probe_database(resolved)  # and an unreachable database for about 100 s
    try:
        open_store(resolved)  # of many processes, one at a time creates or repairs a sqlite store
    except (MlflowException, OSError, ConnectionError, SQLAlchemyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (install the database driver the URI names)" if isinstance(exc, ImportError) else ""
        raise auth_error(exc, resolved) or MedattnError(
            redact_secrets(
                f"cannot reach the MLflow tracking store {redact_url(resolved)!r} ({first[:160]}){hint}; check "
                "--tracking-uri or MLFLOW_TRACKING_URI."
            )
        ) from None
    return resolved


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
            set_tags(tags)
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


# ---- logging (to the active run, or to ``run_id``) ------------------------------------------
def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow stores NaN fine, but NaN metrics make the UI's charts and sorting misleading: drop them."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


@retry_locked
def log_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Log params to the active run (``None`` written as ``"None"``), never changing a logged one.

    ``mlflow run`` logs every ``-P`` value as typed (``model=SEResNet50``, ``lr=1e-3``,
    ``split=validation``, a relative storage path) before medattn starts, and MLflow refuses to
    change a param. A key already logged with the same string is left alone; one logged with
    another string keeps it, and medattn's normalised value goes under ``resolved.<key>``
    (the resolved config is also the run's ``config.yaml``).

    Returns:
        What was logged now, ``{key: value as a string}``.
    """
    run = mlflow.active_run()
    have = mlflow.MlflowClient().get_run(run.info.run_id).data.params if run is not None else {}
    fresh: dict[str, str] = {}
    for key, value in params.items():
        if value is None and have.get(key) == "":
            continue  # an MLproject parameter left at its empty default: "not given" already
        text = "None" if value is None else redact_secrets(str(value))  # no password is ever logged
        if have.get(key, text) != text:
            key = resolved_param(key)
        if key not in have:
            fresh[key] = text
    if fresh:
        mlflow.log_params(fresh)
    return fresh


@retry_locked
def log_metrics(metrics: Mapping[str, float], step: int | None = None, *, model_id: str | None = None) -> None:
    """Log the finite ``metrics`` to the active run (and to a logged model when ``model_id`` is given).

    With ``model_id``, a metric the run already holds with the same value (``best_val_*``, logged at
    the best epoch) is attached to the model at that point's step and time, which the store keeps
    once: the run's history shows it once, not again at step 0.
    """
    values = finite(metrics)
    if model_id is None:
        mlflow.log_metrics(values, step=step)
        return
    run = mlflow.active_run()
    client = mlflow.MlflowClient()
    fresh = {}
    for key, value in values.items():
        same = [m for m in client.get_metric_history(run.info.run_id, key) if m.value == value] if run else []
        if not same:
            fresh[key] = value
            continue
        point = max(same, key=lambda m: (m.timestamp, m.step))
        mlflow.log_metrics({key: value}, step=point.step, timestamp=point.timestamp, model_id=model_id)
    if fresh:
        mlflow.log_metrics(fresh, step=step, model_id=model_id)


def ids_digest(ids: Sequence[str]) -> str:
    """Digest of a set of image ids (order-free): the same split gives the same MLflow Dataset digest."""
    text = "\n".join(sorted(str(i) for i in ids))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def log_dataset(
    frame: pd.DataFrame, *, name: str, context: str, source: str, id_column: str = "image_id", target: str = "label"
) -> str:
    """Log a split manifest as an MLflow Dataset input of the active run (the UI's Datasets column).

    Args:
        frame: one row per image (``image_id``, ``label``, ...).
        name: the dataset's name, e.g. ``demo-train`` (:func:`~medattn.tracking.names.dataset_name`).
        context: its role in the run: ``train``, ``val`` or ``test``.
        source: where the images are (the data folder).
        id_column: the column whose values the digest is computed from.
        target: the label column (declared as the dataset's targets when present).

    Returns:
        The digest (of the ids, :func:`ids_digest`).
    """
    digest = ids_digest(frame[id_column].astype(str).tolist())
    with warnings.catch_warnings():
        # MLflow warns that a local path matches its local source type twice, and that integer
        # label columns cannot hold missing values; neither applies to a manifest of ids.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            frame.reset_index(drop=True),
            source=source,
            targets=target if target in frame.columns else None,
            name=name,
            digest=digest,
        )
        mlflow.log_input(dataset, context=context)
    return digest


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    """Log a DataFrame as an MLflow table (a ``.json`` artifact the UI shows as a table) of the active run."""
    with warnings.catch_warnings():
        # MLflow's image-column check uses a select_dtypes spelling pandas 3 deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        mlflow.log_table(data=frame, artifact_file=artifact_file)


def set_description(text: str, run_id: str | None = None) -> None:
    """Set the description the MLflow UI shows on a run (its ``mlflow.note.content`` tag)."""
    set_tags({TAG_DESCRIPTION: text}, run_id=run_id)


@retry_locked
def set_tags(tags: Mapping[str, str], run_id: str | None = None) -> None:
    """Set tags on the active run, or on ``run_id``."""
    tags = {k: redact_secrets(str(v)) for k, v in tags.items()}  # no password is ever logged
    if run_id is None:
        mlflow.set_tags(tags)
        return
    client = mlflow.MlflowClient()
    for k, v in tags.items():
        client.set_tag(run_id, k, v)


def log_text(text: str, artifact_file: str) -> None:
    """Log ``text`` as an artifact of the active run (passwords in URIs redacted)."""
    mlflow.log_text(redact_secrets(text), artifact_file)


def log_yaml(data: Mapping[str, Any], artifact_file: str) -> None:
    """Log a mapping as a YAML artifact of the active run (passwords in URIs redacted)."""
    mlflow.log_text(yaml.safe_dump(redact_value(dict(data)), sort_keys=True), artifact_file)


def log_figure(fig: Figure, artifact_file: str, *, run_id: str | None = None) -> None:
    """Log a Figure to the active run, or to ``run_id`` (a finished run) through the client."""
    if run_id is None:
        mlflow.log_figure(fig, artifact_file)
    else:
        mlflow.MlflowClient().log_figure(run_id, fig, artifact_file)


def log_artifact(path: str | Path, artifact_dir: str | None = None) -> None:
    """Log one local file to the active run (under ``artifact_dir``)."""
    mlflow.log_artifact(str(path), artifact_dir)


def log_artifacts(folder: str | Path) -> None:
    """Log every file under ``folder`` to the active run, keeping relative paths."""
    mlflow.log_artifacts(str(folder))


def log_missing_steps(run_id: str, history: Mapping[str, Sequence[float]]) -> None:
    """Log the epochs that ``last.pt`` holds but the run's metrics lack (a kill between the two)."""
    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "val_loss")}
    for step in range(len(history.get("val_loss", []))):
        if step not in logged:
            log_metrics({k: v[step] for k, v in history.items() if len(v) > step}, step=step)


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
