"""MLflow I/O: the tracking store, runs, artifacts, logged models, the registry and aliases.

Every artifact name and tag medattn writes is a constant here, so that the stages hand over MLflow
identifiers (run ids, ``models:/NAME@ALIAS``) rather than local paths (STYLE habit 10).

Default store (SPEC §1): ``sqlite:///<cwd>/mlflow.db`` with artifacts under ``<cwd>/mlruns``;
experiments are created with an explicit artifact location next to the database, because MLflow
fixes it at creation time from whatever the working directory was (docs/mlflow-notes.md §1).
``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` point anywhere else.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from medattn.errors import MedattnError

# ---- artifact names -------------------------------------------------------------------------
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
BEST_CKPT = "checkpoints/best.pt"
LAST_CKPT = "checkpoints/last.pt"
SPLITS_DIR = "splits"
MODEL_SUMMARY = "model_summary.txt"
HISTORY_DIR = "history"
PREDICTIONS = "predictions.csv"
TEST_FIGURES_DIR = "figures"
MODEL_NAME = "model"
# interpret / figures / compare
SALIENCY_DIR = "saliency"  # saliency/<method>/<image_id>.npy
INPUTS_DIR = "inputs"  # inputs/<image_id>.png (the model's view of the image)
SALIENCY_INDEX = "saliency/index.csv"
FIGURES_DIR = "figures"
ORIGINAL_DIR = "figures/original"  # figures/original/<image_id>.png
GRID_FIGURE = "figures/grid.png"
FIGURES_HISTORY_DIR = "figures/history"  # figures/history/<metric>.png
COMPARISON_CSV = "comparison.csv"
XAI_CSV = "xai_scores.csv"
LOW_DATA_FIGURE = "figures/low_data.png"
XAI_FIGURE = "figures/xai_scores.png"
COMPARE_GRID_FIGURE = "figures/saliency_grid.png"
TAG_FIGURES = "medattn.figures"  # set on an interpret run once `medattn figures` logged to it

# ---- tags -----------------------------------------------------------------------------------
TAG_KIND = "medattn.kind"  # train | test | interpret | figures | compare | search | demo
TAG_SOURCE_RUN = "medattn.source_run"
TAG_DATASET = "medattn.dataset"
TAG_MODEL = "medattn.model"
TAG_SPLIT = "medattn.split"
TAG_MODEL_ID = "medattn.logged_model_id"
TAG_PERC_TRAIN = "medattn.perc_train"


def epoch_ckpt(epoch: int) -> str:
    """Artifact path of the periodic checkpoint after 0-based ``epoch``."""
    return f"{CHECKPOINT_DIR}/epoch_{epoch:04d}.pt"


def registered_model_name(dataset: str) -> str:
    """Registry name of a data set's models, ``medattn-<dataset>``."""
    return f"medattn-{dataset}"


def experiment_name(dataset: str) -> str:
    """Default experiment of a data set, ``medattn-<dataset>``."""
    return f"medattn-{dataset}"


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


HTTP_PROBE_TIMEOUT_S = 5.0
"""Seconds ``connect`` waits for an http(s) tracking server to answer before giving up."""


def _probe_http(uri: str, timeout: float = HTTP_PROBE_TIMEOUT_S) -> None:
    """Fail fast when an http(s) tracking server does not answer at all.

    Any HTTP response (even 401 or 404) counts as reachable; only a refused, unresolvable or
    silent server is an error here, so that authentication and API errors still come from MLflow.

    Raises:
        MedattnError: no answer within ``timeout`` seconds.
    """
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the user's own tracking URI
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MedattnError(
            f"cannot reach the MLflow tracking server {uri!r} ({str(reason)[:120] or type(exc).__name__}); "
            "start it or check --tracking-uri and MLFLOW_TRACKING_URI."
        ) from None


def connect(uri: str | None = None) -> str:
    """Point MLflow at the store and check that it answers.

    Returns:
        The resolved tracking URI.

    Raises:
        MedattnError: the store cannot be reached or opened.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    resolved = resolve_tracking_uri(uri)
    if urlparse(resolved).scheme in ("http", "https"):
        _probe_http(resolved)  # MLflow itself retries an unreachable server for minutes
    mlflow.set_tracking_uri(resolved)
    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except (MlflowException, OSError, ConnectionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedattnError(
            f"cannot reach the MLflow tracking store {resolved!r} ({first[:160]}); check --tracking-uri "
            "or MLFLOW_TRACKING_URI."
        ) from None
    return resolved


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment ``name``, created with an artifact location beside a local store."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    root = artifact_root(uri)
    location = (root / name).as_uri() if root is not None else None
    return client.create_experiment(name, artifact_location=location)


def get_run(run_id: str):
    """The MLflow run ``run_id``; :class:`MedattnError` if it does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        raise MedattnError(
            f"run {run_id!r} does not exist in the tracking store {mlflow.get_tracking_uri()!r}; "
            "check the run id (mlflow ui lists them) or --tracking-uri."
        ) from None


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
    import mlflow

    kwargs: dict[str, Any] = dict(run_id=run_id, run_name=None if run_id else run_name, tags=dict(tags or {}))
    if experiment_id is not None and run_id is None:
        kwargs["experiment_id"] = experiment_id
    if parent_run_id is not None:
        kwargs.update(nested=True, parent_run_id=parent_run_id)
    if system_metrics:
        kwargs["log_system_metrics"] = True
    run = mlflow.start_run(**kwargs)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


# ---- artifacts ------------------------------------------------------------------------------
def log_yaml(data: Mapping[str, Any], artifact_file: str) -> None:
    """Log a mapping as a YAML artifact of the active run."""
    import mlflow

    mlflow.log_text(yaml.safe_dump(dict(data), sort_keys=True), artifact_file)


def download(run_id: str, artifact_path: str, dst: str | Path | None = None) -> Path:
    """Download one artifact of a run; :class:`MedattnError` naming it if it is missing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="medattn-"))
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst))
    except (MlflowException, OSError):
        raise MedattnError(
            f"run {run_id!r} has no artifact {artifact_path!r}; is it a finished medattn training run?"
        ) from None
    return Path(local)


def run_config(run_id: str) -> dict[str, Any]:
    """The resolved flat config a training run logged as ``config.yaml``."""
    get_run(run_id)
    path = download(run_id, CONFIG_FILE)
    return yaml.safe_load(path.read_text()) or {}


def resolve_model_uri(model_uri: str) -> str:
    """The training run id behind ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/ID/...``.

    Raises:
        MedattnError: the name, alias or version does not exist.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    parsed = urlparse(model_uri)
    client = mlflow.MlflowClient()
    if parsed.scheme == "runs":
        return parsed.netloc or model_uri[len("runs:/") :].split("/")[0]
    if parsed.scheme != "models":
        raise MedattnError(
            f"model URI {model_uri!r} is not understood; use models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model."
        )
    rest = model_uri[len("models:/") :]
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, version = rest.partition("/")
            if not version:
                raise MedattnError(f"model URI {model_uri!r} names no version or alias; use models:/{rest}@champion.")
            mv = client.get_model_version(name, version)
    except MlflowException:
        raise MedattnError(
            f"model URI {model_uri!r} does not resolve in {mlflow.get_tracking_uri()!r}: the registered model, "
            "alias or version is not set; run medattn promote or check the name."
        ) from None
    if not mv.run_id:
        raise MedattnError(f"model version {model_uri!r} has no source run, so medattn cannot rebuild it.")
    return mv.run_id
