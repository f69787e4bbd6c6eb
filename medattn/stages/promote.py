"""The ``promote`` stage: the best trained variant gets a registry alias (``champion`` by default).

Among the FINISHED training runs (tag ``medattn.kind=train``) of an experiment that logged a
model, the best one by a metric is chosen: ``best_<metric>`` (logged at the run's best epoch) when
present, else the run's latest ``<metric>``. Its logged model (``models:/m-...``) is registered as
``medattn-<dataset>`` unless a version from that run already exists, the alias is moved to that
version, and the version is tagged with the metric and the variant. Promotion is idempotent: when
the alias already points at the best run's version, nothing changes (ties keep the current
champion). Everyone then loads ``models:/medattn-<dataset>@champion``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from medattn import tracking
from medattn.config import PromoteConfig, check_mode
from medattn.errors import MedattnError


@dataclass(frozen=True)
class PromoteResult:
    """Outcome of :func:`promote`.

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


def _run_value(run, metric: str) -> tuple[str, float] | None:
    metrics = run.data.metrics
    for key in (f"best_{metric}", metric):
        value = metrics.get(key)
        if value is not None and math.isfinite(value):
            return key, float(value)
    return None


def _candidates(
    exp_id: str, exp_name: str, dataset: str | None, metric: str, mode: str
) -> list[tuple[Any, str, float]]:
    """``(run, metric key, value)`` of every finished training run with a logged model and a finite value.

    Raises:
        MedattnError: there is none.
    """
    filters = [f"tags.`{tracking.TAG_KIND}` = 'train'", "attributes.status = 'FINISHED'"]
    if dataset:
        filters.append(f"tags.`{tracking.TAG_DATASET}` = '{dataset}'")
    direction = "DESC" if mode == "max" else "ASC"
    runs = tracking.search_runs(
        [exp_id],
        " and ".join(filters),
        order_by=[
            f"metrics.`best_{metric}` {direction}",
            f"metrics.`{metric}` {direction}",
            "attributes.start_time ASC",
        ],
    )
    found = [(run, *v) for run in runs if (v := _run_value(run, metric)) and run.data.tags.get(tracking.TAG_MODEL_ID)]
    if not found:
        raise MedattnError(
            f"no FINISHED training run with a logged model and a finite {metric} in experiment {exp_name!r}; "
            "train one first (medattn train) or check --experiment and --metric."
        )
    return found


def promote(cfg: PromoteConfig) -> PromoteResult:
    """Point ``cfg.alias`` of ``medattn-<dataset>`` at the best finished training run's model.

    Returns:
        A :class:`PromoteResult` saying what changed.

    Raises:
        MedattnError: the experiment does not exist or holds no finished training run with a
            logged model and a finite value of the metric.
    """
    metric = cfg.base_metric
    mode = check_mode(cfg.mode, metric)
    uri = tracking.connect(cfg.tracking_uri)
    exp_name = cfg.experiment or tracking.experiment_name(cfg.dataset or "demo")
    exp_id = tracking.active_experiment_id(exp_name)
    if exp_id is None:
        raise MedattnError(
            f"experiment {exp_name!r} does not exist in {uri!r}; train a model first or pass --experiment."
        )
    candidates = _candidates(exp_id, exp_name, cfg.dataset, metric, mode)
    sign = 1.0 if mode == "max" else -1.0
    best_score = max(sign * value for _, _, value in candidates)
    best_run, key, value = next(c for c in candidates if sign * c[2] == best_score)
    run_dataset = best_run.data.tags.get(tracking.TAG_DATASET) or cfg.dataset or "demo"
    name = tracking.registered_model_name(run_dataset)
    previous, previous_run = tracking.alias_target(name, cfg.alias)
    # ties keep the current champion, so promoting twice never flips between equal runs
    for run, k, v in candidates:
        if run.info.run_id == previous_run and sign * v == best_score:
            best_run, key, value = run, k, v
            break
    run_id = best_run.info.run_id
    version, registered = tracking.version_for_run(name, run_id, best_run.data.tags[tracking.TAG_MODEL_ID])
    changed = previous != version
    if changed:
        tracking.set_alias(name, cfg.alias, version)
    variant = best_run.data.tags.get(tracking.TAG_MODEL) or best_run.data.params.get("model", "")
    tracking.set_version_tags(
        name,
        version,
        {
            tracking.VTAG_METRIC: key,
            tracking.VTAG_METRIC_VALUE: f"{value:.6g}",
            tracking.VTAG_VARIANT: variant,
            tracking.VTAG_DATASET: run_dataset,
            tracking.VTAG_RUN: run_id,
        },
    )
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
