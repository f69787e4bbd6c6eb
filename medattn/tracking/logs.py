"""Logging to the active run, or to ``run_id``: params (with medattn's resolved values), finite
metrics, the data set a run used, tables, texts, YAML, figures and artifacts, tags and the
description.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from matplotlib.figure import Figure

from medattn.tracking.auth import redact_secrets, redact_value
from medattn.tracking.names import TAG_DESCRIPTION, resolved_param
from medattn.tracking.store import retry_dataset, retry_locked


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
        retry_dataset(mlflow.log_input)(dataset, context=context)
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
