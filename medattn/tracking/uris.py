"""Model URIs → the training run behind them, for every form MLflow 3 hands out.

``test``, ``interpret`` and ``figures`` rebuild a model from its training run (its checkpoint and
config), so a URI is only ever resolved to that run id:

| URI | where it comes from | resolved through |
|---|---|---|
| ``models:/NAME@ALIAS`` | ``medattn promote`` (``champion``) | the alias's model version |
| ``models:/NAME/VERSION`` | the registry page | that model version |
| ``models:/NAME/latest`` | MLflow's spelling of the newest version | the highest version number |
| ``models:/m-<id>`` | a logged model (``tracking.log_model(...)`` (a pyfunc), the run's ``medattn.logged_model_id``) | the logged model's source run |
| ``runs:/<run_id>/<path>`` | a run's artifacts | the run id itself |
"""

from __future__ import annotations

from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException

from medattn.errors import MedattnError

FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-<model id> or runs:/RUN_ID/model"
"""The URI forms, as error messages name them."""


def _not_resolved(model_uri: str) -> MedattnError:
    return MedattnError(
        f"model URI {model_uri!r} does not resolve in {mlflow.get_tracking_uri()!r}: the registered model, "
        "alias, version or logged model is not set; run medattn promote or check the name."
    )


def _version(name: str, suffix: str):
    """The model version ``models:/NAME/<suffix>`` names (a number or ``latest``)."""
    client = mlflow.MlflowClient()
    if suffix.isdigit():
        return client.get_model_version(name, suffix)
    if suffix.lower() == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise MlflowException(f"no versions of {name}")
        return max(versions, key=lambda v: int(v.version))
    raise MedattnError(
        f"model URI 'models:/{name}/{suffix}' names a stage, which MLflow 3 replaced by aliases; "
        f"use models:/{name}@champion or a version number."
    )


def _logged_model_run(model_id: str) -> str | None:
    """The source run of the logged model ``model_id``."""
    return mlflow.get_logged_model(model_id).source_run_id


def _run_of_models_uri(model_uri: str) -> str | None:
    rest = model_uri[len("models:/") :].strip("/")
    if not rest:
        raise MedattnError(f"model URI {model_uri!r} names no model; use {FORMS}.")
    name, slash, suffix = rest.partition("/")
    if "@" in rest and not slash:
        name, alias = rest.rsplit("@", 1)
        mv = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    elif slash:
        mv = _version(name, suffix)
    else:
        return _logged_model_run(rest)  # models:/m-<id>: MLflow 3's logged-model URI
    if mv.run_id:
        return mv.run_id
    return _logged_model_run(mv.model_id) if getattr(mv, "model_id", None) else None


def source_run_of(model_uri: str) -> str:
    """The training run id behind a model URI (any form in the module docstring).

    Raises:
        MedattnError: an unknown form, or a name, alias, version or logged model that does not
            exist, or one that records no source run.
    """
    uri = model_uri.strip()
    scheme = urlparse(uri).scheme
    if scheme == "runs":
        run_id = uri[len("runs:/") :].strip("/").split("/")[0]
        if not run_id:
            raise MedattnError(f"model URI {model_uri!r} names no run; use runs:/RUN_ID/model.")
        return run_id
    if scheme != "models":
        raise MedattnError(f"model URI {model_uri!r} is not understood; use {FORMS}.")
    try:
        run_id = _run_of_models_uri(uri)
    except MlflowException:
        raise _not_resolved(model_uri) from None
    if not run_id:
        raise MedattnError(f"model {model_uri!r} has no source run, so medattn cannot rebuild it.")
    return run_id
