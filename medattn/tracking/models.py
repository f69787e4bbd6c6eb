"""Logged models and the model registry: log, resolve a model URI, register, move an alias."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import requests
import torch
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from medattn import checkpoint as ckpt_io
from medattn.errors import MedattnError
from medattn.tracking.auth import refused
from medattn.tracking.checkpoints import read_manifest
from medattn.tracking.logs import log_metrics
from medattn.tracking.names import (
    BEST_CKPT,
    CHECKPOINT_DIR,
    CHECKPOINT_MANIFEST,
    MODEL_NAME,
    TAG_MODEL_ID,
)
from medattn.tracking.pyfunc import (
    MODEL_CODE,
    WEIGHTS_ARTIFACT,
    WEIGHTS_FILE,
    ServingSpec,
    input_example,
    signature,
)
from medattn.tracking.runs import active_run_id, download

MODEL_WEIGHTS_PATH = f"artifacts/{WEIGHTS_FILE}"
"""Where the pyfunc keeps its ``weights`` artifact inside the logged model (MLflow copies artifacts there)."""


@dataclass(frozen=True)
class LoggedModel:
    """What :func:`log_model` logged: the model URI and the registry version (when registered)."""

    model_uri: str
    model_id: str
    version: str | None


def log_model(
    weights: str | Path,
    *,
    tags: Mapping[str, str],
    metrics: Mapping[str, float] | None = None,
    register_as: str | None = None,
) -> LoggedModel:
    """Log a checkpoint to the active run as the servable pyfunc of :mod:`medattn.tracking.pyfunc`.

    The model takes images (PNG/JPEG bytes, paths or uint8 arrays) and answers class probabilities
    with class names; it carries a signature, a PNG input example under 1 KB and metadata
    (class names, image size, resize mode, normalisation, source run). The checkpoint itself is its
    ``weights`` artifact, which :func:`model_weights` downloads to rebuild the torch module.

    Args:
        weights: a medattn checkpoint holding the model (``best.pt``: state_dict, config, class names).
        tags: tags of the logged model (variant, dataset).
        metrics: metrics attached to the logged model (e.g. ``best_val_auc``).
        register_as: also register it under this name.
    """
    spec = ServingSpec.from_payload(ckpt_io.load(weights), source_run=active_run_id())
    with tempfile.TemporaryDirectory(prefix="medattn-pyfunc-") as tmp:
        code = Path(tmp) / "medattn_pyfunc.py"
        code.write_text(MODEL_CODE)
        # Under its own name: MLflow keeps an artifact's file name, and model_weights() looks for this one.
        shutil.copyfile(weights, Path(tmp) / WEIGHTS_FILE)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(code),
            artifacts={WEIGHTS_ARTIFACT: str(Path(tmp) / WEIGHTS_FILE)},
            signature=signature(spec),
            input_example=input_example(),
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                "torchvision",
                "timm",
                "numpy",
                "pandas",
                "pillow",
            ],
            metadata=spec.metadata(),
            tags=dict(tags),
        )
    mlflow.set_tag(TAG_MODEL_ID, info.model_id)
    if metrics:
        log_metrics(metrics, model_id=info.model_id)
    version = None
    if register_as:
        version = str(mlflow.register_model(info.model_uri, register_as).version)
    return LoggedModel(info.model_uri, info.model_id, version)


def model_weights(run_id: str, dst: str | Path) -> Path:
    """Download the checkpoint behind a training run's logged model into ``dst`` (torch module, config).

    Runs logged before the pyfunc (a ``pt2`` model), or without a model (search trials), still have
    ``checkpoints/best.pt``, which is returned instead.

    Raises:
        MedattnError: the run has neither a pyfunc model with weights nor ``checkpoints/best.pt``.
    """
    model_id = mlflow.MlflowClient().get_run(run_id).data.tags.get(TAG_MODEL_ID)
    if model_id:
        try:
            location = mlflow.MlflowClient().get_logged_model(model_id).artifact_location
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/{MODEL_WEIGHTS_PATH}", dst_path=str(dst)
            )
            return Path(local)
        except (MlflowException, OSError):
            pass  # an older pt2 model: its run kept best.pt
    return download(run_id, BEST_CKPT, dst)


def best_weights(run_id: str, dst: str | Path) -> Path:
    """The best checkpoint of a run that just finished training, downloaded into ``dst``.

    ``checkpoints/best.pt`` while there is one (a resumed run that improved wrote a newer one than
    the model logged before), otherwise the weights of the model the run logged earlier.

    Raises:
        MedattnError: the run has neither.
    """
    try:
        return download(run_id, BEST_CKPT, dst)
    except MedattnError:
        return model_weights(run_id, dst)


def _delete_artifacts(repo, path: str) -> bool:
    """Delete ``path``; ``False`` (it stays) when the server refuses: with MLflow's authentication app
    only MANAGE rights delete artifacts, and an EDIT user's run keeps its copy (``docs/team-server.md``)."""
    try:
        repo.delete_artifacts(path)
    except (MlflowException, requests.HTTPError) as exc:
        if not refused(exc):
            raise
        return False
    return True


def prune_checkpoints(run_id: str, *, keep_resume: bool = True) -> list[str]:
    """Delete the weights a finished run no longer needs once its model is logged (``docs/storage.md``).

    ``checkpoints/best.pt`` now is the logged model's ``weights`` artifact, so it goes and the checksum
    manifest is rewritten without it. ``checkpoints/last.pt`` (what ``--resume`` continues from) stays,
    and so do the ``epoch_XXXX.pt`` snapshots a user asked for with ``--save-freq``, unless
    ``keep_resume`` is off (the demo's showcase runs): then the whole ``checkpoints/`` folder goes.

    Returns:
        The artifact paths deleted.
    """
    client = mlflow.MlflowClient()
    names = sorted(Path(a.path).name for a in client.list_artifacts(run_id, CHECKPOINT_DIR))
    best = Path(BEST_CKPT).name
    repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
    if not keep_resume:
        if names and not _delete_artifacts(repo, CHECKPOINT_DIR):
            return []
        return [f"{CHECKPOINT_DIR}/{n}" for n in names]
    if best not in names or not _delete_artifacts(repo, BEST_CKPT):
        return []
    manifest = read_manifest(run_id)
    if manifest is not None and manifest.files.pop(best, None) is not None:
        client.log_text(run_id, manifest.to_json(), CHECKPOINT_MANIFEST)
    return [BEST_CKPT]


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
