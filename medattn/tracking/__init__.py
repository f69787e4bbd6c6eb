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

from medattn.tracking import models
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
from medattn.tracking.checkpoints import Resumable, log_checkpoints, newest_complete_checkpoint, read_manifest
from medattn.tracking.connection import (
    HTTP_PROBE_TIMEOUT_S,
    artifact_root,
    connect,
    resolve_tracking_uri,
    run_url,
    ui_command,
)
from medattn.tracking.logs import (
    finite,
    ids_digest,
    log_artifact,
    log_artifacts,
    log_dataset,
    log_figure,
    log_metrics,
    log_missing_steps,
    log_params,
    log_table,
    log_text,
    log_yaml,
    set_description,
    set_tags,
)
from medattn.tracking.models import *  # noqa: F403 - its __all__ is the one list of the model functions
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
from medattn.tracking.runs import (
    active_experiment_id,
    active_run_id,
    default_train_experiment,
    download,
    ensure_experiment,
    environment_tags,
    experiment_name_of,
    finished_filter,
    get_run,
    metric_history,
    project_experiment_name,
    project_run_id,
    quiet_artifact_downloads,
    run_config,
    run_kind,
    search_runs,
    set_terminated,
    stage_experiment,
    stage_run,
    tracked_run,
)
from medattn.tracking.saliency import SaliencyReader, SaliencyWriter, read_csv
from medattn.tracking.uris import source_run_of

__all__ = [  # noqa: RUF022 - grouped by submodule
    "LoginError",
    "PermissionDeniedError",
    "auth_error",
    "auth_errors",
    "check_uri_has_no_secret",
    "redact_secrets",
    "redact_url",
    "refused",
    "Resumable",
    "log_checkpoints",
    "newest_complete_checkpoint",
    "read_manifest",
    *models.__all__,
    "cases_csv",
    "cases_figure",
    "epoch_ckpt",
    "experiment_name",
    "heat_map_artifact",
    "original_artifact",
    "registered_model_name",
    "HTTP_PROBE_TIMEOUT_S",
    "artifact_root",
    "connect",
    "resolve_tracking_uri",
    "run_url",
    "ui_command",
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
    "SaliencyReader",
    "SaliencyWriter",
    "read_csv",
    "source_run_of",
]
