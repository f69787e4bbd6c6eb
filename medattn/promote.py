"""Promote the best trained variant in the model registry (alias ``champion`` by default).

Among the FINISHED training runs (tag ``medattn.kind=train``) of an experiment that logged a
model, the best one by a metric is chosen: ``best_<metric>`` (logged at the run's best epoch) when
present, else the run's latest ``<metric>``. Its logged model (``models:/m-...``) is registered as
``medattn-<dataset>`` unless a version from that run already exists, the alias is moved to that
version, and the version is tagged with the metric and the variant. Promotion is idempotent: when
the alias already points at the best run's version, nothing changes (ties keep the current
champion). Everyone then loads ``models:/medattn-<dataset>@champion``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from medattn import tracking
from medattn.errors import ConfigError, MedattnError
from medattn.search import METRIC_NAMES, natural_mode

VTAG_METRIC = "medattn.metric"
VTAG_METRIC_VALUE = "medattn.metric_value"
VTAG_VARIANT = "medattn.variant"
VTAG_DATASET = "medattn.dataset"
VTAG_RUN = "medattn.source_run"


@dataclass(frozen=True)
class PromoteConfig:
    """Options of ``medattn promote``.

    Attributes:
        experiment: MLflow experiment whose training runs compete (default ``medattn-<dataset>``).
        dataset: only runs of this data set compete; also names the default experiment
            (``demo`` when neither is given).
        metric: per-epoch metric name, e.g. ``val_auc`` (``best_val_auc`` is used when logged).
        mode: ``max`` or ``min``; default ``min`` for losses, ``max`` otherwise.
        alias: registry alias to move.
        tracking_uri: MLflow tracking URI.
    """

    experiment: str | None = None
    dataset: str | None = None
    metric: str = "val_auc"
    mode: str | None = None
    alias: str = "champion"
    tracking_uri: str | None = None


@dataclass(frozen=True)
class PromoteResult:
    """Outcome of :func:`run_promote`.

    Attributes:
        name: registered model name (``medattn-<dataset>``).
        alias: the alias that was set.
        version: the version the alias points at now.
        previous_version: the version it pointed at before (``None``: it was not set).
        run_id: the training run of that version.
        metric: the metric compared (``best_val_auc`` or ``val_auc``, as found on the run).
        value: the run's value of it.
        variant: the model (architecture) of that run.
        changed: whether the alias moved.
        registered: whether a new model version was created.
        experiment: the experiment searched.
        tracking_uri: the MLflow store.
    """

    name: str
    alias: str
    version: str
    previous_version: str | None
    run_id: str
    metric: str
    value: float
    variant: str
    changed: bool
    registered: bool
    experiment: str
    tracking_uri: str

    @property
    def model_uri(self) -> str:
        """``models:/<name>@<alias>``."""
        return f"models:/{self.name}@{self.alias}"

    def describe(self) -> str:
        """``champion: version 1 → 2`` or ``champion: version 2 (unchanged)``."""
        if not self.changed:
            return f"{self.alias}: version {self.version} (unchanged)"
        if not self.previous_version:
            return f"{self.alias}: (not set) → version {self.version}"
        return f"{self.alias}: version {self.previous_version} → {self.version}"


def _check(cfg: PromoteConfig) -> tuple[str, str]:
    metric = cfg.metric[len("best_"):] if cfg.metric.startswith("best_") else cfg.metric
    if metric not in METRIC_NAMES:
        close = difflib.get_close_matches(metric, METRIC_NAMES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "use e.g. val_auc or val_loss."
        raise ConfigError(f"--metric {cfg.metric!r} is not a metric medattn train logs; {hint}")
    mode = cfg.mode or natural_mode(metric)
    if mode not in ("max", "min"):
        raise ConfigError(f"--mode must be max or min, got {mode!r}.")
    alias = cfg.alias.strip()
    if not alias or not all(c.isalnum() or c in "_-" for c in alias) or alias.lower() == "latest" or (
        alias[0] in "vV" and alias[1:].isdigit()
    ):
        raise ConfigError(
            f"--alias {cfg.alias!r} is not a valid registry alias; use letters, digits, '-' or '_' "
            "(not 'latest' or v<number>), e.g. champion."
        )
    return metric, mode


def _run_value(run, metric: str) -> tuple[str, float] | None:
    metrics = run.data.metrics
    for key in (f"best_{metric}", metric):
        value = metrics.get(key)
        if value is not None and math.isfinite(value):
            return key, float(value)
    return None


def run_promote(cfg: PromoteConfig) -> PromoteResult:
    """Point ``cfg.alias`` of ``medattn-<dataset>`` at the best finished training run's model.

    Args:
        cfg: the promote options.

    Returns:
        A :class:`PromoteResult` saying what changed.

    Raises:
        ConfigError: a bad metric, mode or alias.
        MedattnError: the experiment does not exist or holds no finished training run with a
            logged model and a finite value of the metric.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    metric, mode = _check(cfg)
    uri = tracking.connect(cfg.tracking_uri)
    dataset = None
    if cfg.dataset:
        from medattn.data import DATASETS

        dataset = DATASETS.canonical(cfg.dataset)
    exp_name = cfg.experiment or tracking.experiment_name(dataset or "demo")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(exp_name)
    if exp is None or exp.lifecycle_stage == "deleted":
        raise MedattnError(
            f"experiment {exp_name!r} does not exist in {uri!r}; train a model first or pass --experiment."
        )
    filters = [f"tags.`{tracking.TAG_KIND}` = 'train'", "attributes.status = 'FINISHED'"]
    if dataset:
        filters.append(f"tags.`{tracking.TAG_DATASET}` = '{dataset}'")
    direction = "DESC" if mode == "max" else "ASC"
    runs = mlflow.search_runs(
        experiment_ids=[exp.experiment_id],
        filter_string=" and ".join(filters),
        order_by=[f"metrics.`best_{metric}` {direction}", f"metrics.`{metric}` {direction}", "attributes.start_time ASC"],
        output_format="list",
    )
    candidates = []
    for run in runs:
        found = _run_value(run, metric)
        if found is not None and run.data.tags.get(tracking.TAG_MODEL_ID):
            candidates.append((run, *found))
    if not candidates:
        raise MedattnError(
            f"no FINISHED training run with a logged model and a finite {metric} in experiment {exp_name!r}; "
            "train one first (medattn train) or check --experiment and --metric."
        )
    sign = 1.0 if mode == "max" else -1.0
    best_score = max(sign * value for _, _, value in candidates)
    best_run, key, value = next(c for c in candidates if sign * c[2] == best_score)
    run_dataset = best_run.data.tags.get(tracking.TAG_DATASET) or dataset or "demo"
    name = tracking.registered_model_name(run_dataset)

    previous = None
    previous_run = None
    try:
        current = client.get_model_version_by_alias(name, cfg.alias)
        previous, previous_run = str(current.version), current.run_id
    except MlflowException:
        previous = None
    # ties keep the current champion, so promoting twice never flips between equal runs
    for run, k, v in candidates:
        if run.info.run_id == previous_run and sign * v == best_score:
            best_run, key, value = run, k, v
            break
    run_id = best_run.info.run_id
    model_id = best_run.data.tags[tracking.TAG_MODEL_ID]

    registered = False
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        versions = []
    if versions:
        version = str(min(int(v.version) for v in versions))
    else:
        mv = mlflow.register_model(f"models:/{model_id}", name)
        version, registered = str(mv.version), True

    changed = previous != version
    if changed:
        client.set_registered_model_alias(name, cfg.alias, version)
    variant = best_run.data.tags.get(tracking.TAG_MODEL) or best_run.data.params.get("model", "")
    wanted = {
        VTAG_METRIC: key,
        VTAG_METRIC_VALUE: f"{value:.6g}",
        VTAG_VARIANT: variant,
        VTAG_DATASET: run_dataset,
        VTAG_RUN: run_id,
    }
    have = client.get_model_version(name, version).tags
    for k, v in wanted.items():
        if have.get(k) != v:
            client.set_model_version_tag(name, version, k, v)
    return PromoteResult(
        name=name,
        alias=cfg.alias,
        version=version,
        previous_version=previous,
        run_id=run_id,
        metric=key,
        value=value,
        variant=variant,
        changed=changed,
        registered=registered,
        experiment=exp_name,
        tracking_uri=uri,
    )
