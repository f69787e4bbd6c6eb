"""Logged models and the model registry: log, resolve a model URI, register, move an alias."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from torch import nn

from medattn.errors import MedattnError
from medattn.tracking.names import MODEL_NAME, TAG_MODEL_ID, registered_model_name
from medattn.tracking.runs import log_metrics


@dataclass(frozen=True)
class LoggedModel:
    """What :func:`log_model` logged: the model URI and the registry version (when registered)."""

    model_uri: str
    model_id: str
    version: str | None


def log_model(
    model: nn.Module,
    *,
    img_size: int,
    tags: Mapping[str, str],
    metrics: Mapping[str, float] | None = None,
    register_as: str | None = None,
) -> LoggedModel:
    """Log the eager model to the active run in MLflow's pytorch flavour (docs/mlflow-notes.md §2).

    Args:
        model: the eager classifier (moved to the CPU and put in eval mode).
        img_size: side of the example input ``(2, 3, img_size, img_size)``.
        tags: tags of the logged model (variant, dataset).
        metrics: metrics attached to the logged model (e.g. ``best_val_auc``).
        register_as: also register it under this name.
    """
    model = model.cpu().eval()
    example = np.random.default_rng(0).standard_normal((2, 3, img_size, img_size)).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name=MODEL_NAME,
        signature=infer_signature(example, out),
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "timm", "numpy"],
        tags=dict(tags),
    )
    mlflow.set_tag(TAG_MODEL_ID, info.model_id)
    if metrics:
        log_metrics(metrics, model_id=info.model_id)
    version = None
    if register_as:
        version = str(mlflow.register_model(info.model_uri, register_as).version)
    return LoggedModel(info.model_uri, info.model_id, version)


def resolve_model_uri(model_uri: str) -> str:
    """The training run id behind ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/ID/...``.

    Raises:
        MedattnError: the name, alias or version does not exist.
    """
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


def alias_target(name: str, alias: str) -> tuple[str, str] | tuple[None, None]:
    """``(version, run_id)`` that ``name@alias`` points at, or ``(None, None)`` when it is not set."""
    try:
        current = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, None
    return str(current.version), current.run_id


def version_for_run(name: str, run_id: str, model_id: str) -> tuple[str, bool]:
    """The (oldest) version of ``name`` made from ``run_id``, registering ``models:/<model_id>`` if none.

    Returns:
        ``(version, registered)``: ``registered`` says whether a new version was created.
    """
    try:
        versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        versions = []
    if versions:
        return str(min(int(v.version) for v in versions)), False
    return str(mlflow.register_model(f"models:/{model_id}", name).version), True


def set_alias(name: str, alias: str, version: str) -> None:
    """Point ``name@alias`` at ``version``."""
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)


def set_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    """Set the tags of a model version that differ from ``tags`` (so repeating it changes nothing)."""
    client = mlflow.MlflowClient()
    have = client.get_model_version(name, version).tags
    for k, v in tags.items():
        if have.get(k) != v:
            client.set_model_version_tag(name, version, k, v)


__all__ = [
    "LoggedModel",
    "alias_target",
    "log_model",
    "registered_model_name",
    "resolve_model_uri",
    "set_alias",
    "set_version_tags",
    "version_for_run",
]
