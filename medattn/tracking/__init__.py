"""MLflow I/O, the only package of medattn that imports ``mlflow``.

* :mod:`.names` — every tag, param prefix and artifact path;
* :mod:`.connection` — the store: where it is and whether it answers;
* :mod:`.runs` — experiments, stage runs (``MLFLOW_RUN_ID`` handled once), reading back;
* :mod:`.logs` — logging params, metrics, tables, figures and artifacts into a run;
* :mod:`.models` — logged models, the registry and aliases;
* :mod:`.pyfunc` — the registered model as a pyfunc: images in, class probabilities out;
* :mod:`.saliency` — the one writer and the one reader of the interpret artifacts;
* :mod:`.uris` — every model URI form MLflow 3 hands out, resolved to its training run.

The names are re-exported here, so ``from medattn import tracking; tracking.BEST_CKPT`` works.
* :mod:`.store` — one store shared by many processes: serialised creation, ``database is locked`` retries;
* :mod:`.checkpoints` — checkpoints uploaded with a checksum manifest, resumed from the newest complete one.
* :mod:`.auth` — a server with MLflow's authentication app: 401 / 403 as one sentence, no secret in URIs.

"""

from __future__ import annotations

import importlib
from typing import Any

from medattn.tracking.auth import (
    LoginError,
    PermissionDeniedError,
    auth_error,
    auth_errors,
    check_uri_has_no_secret,
    redact_secrets,
    redact_url,
    refused,
)
from medattn.tracking.names import *  # noqa: F403 - the names are this package's vocabulary
from medattn.tracking.names import (
    cases_csv,
    cases_figure,
    epoch_ckpt,
    experiment_name,
    heat_map_artifact,
    original_artifact,
    registered_model_name,
)

#: Public names of the submodules that import MLflow (and torch, pandas, matplotlib), by submodule.
#: They load on first use (:func:`__getattr__`), so that importing this package (every stage module
#: does, and the command line imports stage modules for their configs) costs no MLflow.
_LAZY_NAMES: dict[str, tuple[str, ...]] = {
    "checkpoints": (
        "Resumable",
        "log_checkpoints",
        "newest_complete_checkpoint",
        "read_manifest",
    ),
    "connection": (
        "HTTP_PROBE_TIMEOUT_S",
        "artifact_root",
        "connect",
        "resolve_tracking_uri",
        "run_url",
        "ui_command",
    ),
    "logs": (
        "finite",
        "ids_digest",
        "log_artifact",
        "log_artifacts",
        "log_dataset",
        "log_figure",
        "log_metrics",
        "log_missing_steps",
        "log_params",
        "log_table",
        "log_text",
        "log_yaml",
        "set_description",
        "set_tags",
    ),
    "models": (
        "LoggedModel",
        "alias_target",
        "best_weights",
        "log_model",
        "model_weights",
        "prune_checkpoints",
        "resolve_model_uri",
        "set_alias",
        "set_version_tags",
        "version_for_run",
    ),
    "runs": (
        "active_experiment_id",
        "active_run_id",
        "default_train_experiment",
        "download",
        "ensure_experiment",
        "environment_tags",
        "experiment_name_of",
        "finished_filter",
        "get_run",
        "metric_history",
        "project_experiment_name",
        "project_run_id",
        "quiet_artifact_downloads",
        "run_config",
        "run_kind",
        "search_runs",
        "set_terminated",
        "stage_experiment",
        "stage_run",
        "tracked_run",
    ),
    "saliency": (
        "SaliencyReader",
        "SaliencyWriter",
        "read_csv",
    ),
    "uris": ("source_run_of",),
}
_SUBMODULE_OF = {name: sub for sub, names in _LAZY_NAMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """A name of :data:`_LAZY_NAMES`: import its submodule, keep the name here, return it."""
    sub = _SUBMODULE_OF.get(name)
    if sub is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{sub}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The package's names, the lazily loaded ones included."""
    return sorted(set(globals()) | set(_SUBMODULE_OF))


__all__ = [  # noqa: RUF022 - grouped by submodule
    "LoginError",
    "PermissionDeniedError",
    "auth_error",
    "auth_errors",
    "check_uri_has_no_secret",
    "redact_secrets",
    "redact_url",
    "refused",
    "cases_csv",
    "cases_figure",
    "epoch_ckpt",
    "experiment_name",
    "heat_map_artifact",
    "original_artifact",
    "registered_model_name",
    *_SUBMODULE_OF,
]
