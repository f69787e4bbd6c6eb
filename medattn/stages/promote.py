"""The ``promote`` stage: the best trained variant gets a registry alias (``champion`` by default).

Among the FINISHED training runs (tag ``medattn.kind=train``) of an experiment that logged a
model, the best one by a metric is chosen: ``best_<metric>`` (logged at the run's best epoch) when
present, else the run's latest ``<metric>``. Its logged model (``models:/m-...``) is registered as
``medattn-<dataset>`` unless a version from that run already exists, the alias is moved to that
version, and the version is tagged with the metric and the variant. Promotion is idempotent: when
the alias already points at the best run's version, nothing changes. Everyone then loads
``models:/medattn-<dataset>@champion``.

Ties: runs with the same value of the metric (several variants at AUC 1.000 on an easy
split) are not decided by the order of the search. The stated secondary metric
(:func:`tie_break_metric`: the lowest ``val_loss``; the highest ``val_auc`` when ranking by
``val_loss``) decides among them; runs still tied keep the current champion, else the earliest run
wins. :attr:`PromoteResult.tie_break` says so in one sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from medattn import registry, tracking
from medattn.config import TrackingPart, check_metric, check_mode, set_field
from medattn.errors import ConfigError, MedattnError
from medattn.metrics import metric_mode


@dataclass(frozen=True, kw_only=True)
class PromoteConfig(TrackingPart):
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

    def __post_init__(self) -> None:  # noqa: D105
        base = self.metric[len("best_") :] if self.metric.startswith("best_") else self.metric
        check_metric(base, shown=self.metric)
        check_mode(self.mode, base)
        alias = self.alias.strip()
        if (
            not alias
            or not all(c.isalnum() or c in "_-" for c in alias)
            or alias.lower() == "latest"
            or (alias[0] in "vV" and alias[1:].isdigit())
        ):
            raise ConfigError(
                f"--alias {self.alias!r} is not a valid registry alias; use letters, digits, '-' or '_' "
                "(not 'latest' or v<number>), e.g. champion."
            )
        if self.dataset:
            set_field(self, "dataset", registry.canonical("dataset", self.dataset))

    @property
    def base_metric(self) -> str:
        """The per-epoch metric compared (``best_`` prefix removed)."""
        return self.metric[len("best_") :] if self.metric.startswith("best_") else self.metric


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
        tie_break: how a tie on ``metric`` was broken (``None``: no tie), one sentence.
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
    tie_break: str | None = None

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


def tie_break_metric(metric: str) -> str:
    """The secondary metric that breaks a tie on ``metric``: ``val_loss`` (lowest), or ``val_auc``
    (highest) when ``metric`` is ``val_loss`` itself."""
    return "val_auc" if metric == "val_loss" else "val_loss"


def choose(
    candidates: list[tuple[Any, str, float]], metric: str, mode: str, current_run: str | None
) -> tuple[tuple[Any, str, float], str | None]:
    """The winning ``(run, key, value)`` and, when several runs tie on ``metric``, the sentence saying how
    the tie was broken (:func:`tie_break_metric`, then the current champion, then the earliest run).

    Args:
        candidates: ``(run, metric key, value)`` in search order (best first, earliest first among equals).
        metric: the base metric (``val_auc``).
        mode: ``max`` or ``min``.
        current_run: the training run the alias points at now (``None``: unset).
    """
    sign = 1.0 if mode == "max" else -1.0
    best = max(sign * value for _, _, value in candidates)
    tied = [c for c in candidates if sign * c[2] == best]
    if len(tied) == 1:
        return tied[0], None
    second = tie_break_metric(metric)
    sign2 = 1.0 if metric_mode(second) == "max" else -1.0
    seconds = {c[0].info.run_id: _run_value(c[0], second) for c in tied}
    known = [c for c in tied if seconds[c[0].info.run_id] is not None]
    still = tied
    if known:
        best2 = max(sign2 * seconds[c[0].info.run_id][1] for c in known)
        still = [c for c in known if sign2 * seconds[c[0].info.run_id][1] == best2]
    chosen = next((c for c in still if c[0].info.run_id == current_run), still[0])
    note = f"{len(tied)} runs tie at {tied[0][1]} = {tied[0][2]:.4g}; "
    if known:
        key2, value2 = seconds[chosen[0].info.run_id]
        note += f"the tie is broken by the {'lowest' if sign2 < 0 else 'highest'} {key2} ({value2:.4g})"
    else:
        note += f"no run logged {second} to break the tie"
    if len(still) > 1:
        note += (
            ", then by keeping the current champion"
            if chosen[0].info.run_id == current_run
            else ", then by the earliest run"
        )
    return chosen, note + "."


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
    first = candidates[0][0]
    run_dataset = first.data.tags.get(tracking.TAG_DATASET) or cfg.dataset or "demo"
    name = tracking.registered_model_name(run_dataset)
    previous, previous_run = tracking.alias_target(name, cfg.alias)
    (best_run, key, value), tie_break = choose(candidates, metric, mode, previous_run)
    run_dataset = best_run.data.tags.get(tracking.TAG_DATASET) or cfg.dataset or "demo"
    if tracking.registered_model_name(run_dataset) != name:  # an experiment that mixes data sets
        name = tracking.registered_model_name(run_dataset)
        previous, _ = tracking.alias_target(name, cfg.alias)
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
        tie_break=tie_break,
    )
