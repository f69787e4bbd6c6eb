"""``medattn promote``: move the registry alias to the best finished training run's model."""

from __future__ import annotations

from typing import Annotated

import typer

from medattn.cli.options import ModeOpt, TrackingUriOpt, choices, given, option, registry_choices
from medattn.metrics import EPOCH_METRIC_NAMES
from medattn.stages.promote import PromoteConfig

C = PromoteConfig


def command(
    experiment: Annotated[
        str | None,
        option(
            "--experiment",
            help="Experiment whose finished training runs compete. (default: under mlflow run the project run's "
            "experiment, else medattn-<dataset>)",
        ),
    ] = C.experiment,
    dataset: Annotated[
        str | None,
        option(
            "--dataset",
            help="Only runs of this data set compete; names the default experiment. (default: demo)",
            **registry_choices("dataset"),
        ),
    ] = C.dataset,
    metric: Annotated[
        str,
        option(
            "--metric",
            help="Metric that ranks the runs: best_<metric> when logged, else its last value.",
            **choices(EPOCH_METRIC_NAMES),
        ),
    ] = C.metric,
    mode: ModeOpt = C.mode,
    alias: Annotated[str, option("--alias", help="Registry alias moved to the best run's model version.")] = C.alias,
    tracking_uri: TrackingUriOpt = C.tracking_uri,
) -> None:
    """Register the best finished training run's model as medattn-<dataset> (if not yet) and move
    the alias (champion) to that version; idempotent."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api, tracking

    cfg = PromoteConfig(
        experiment=given(experiment) or tracking.project_experiment_name(tracking_uri),
        dataset=dataset,
        metric=metric,
        mode=mode,
        alias=alias,
        tracking_uri=tracking_uri,
    )
    result = api.promote(cfg)
    typer.echo(result.describe())
    if result.tie_break:
        typer.echo(result.tie_break)
    typer.echo(
        f"best run {result.run_id} ({result.variant}, {result.metric}={result.value:.4f}) in experiment "
        f"{result.experiment!r}" + (f"; registered as version {result.version}" if result.registered else "")
    )
    what = "Set" if result.changed else "Kept"
    typer.echo(
        tracking.redact_secrets(
            f"{what} alias {result.alias!r} of registered model {result.name!r} on version {result.version} in "
            f"{result.tracking_uri}; load it with {result.model_uri}; view it with: "
            f"{tracking.ui_command(result.tracking_uri)}"
        )
    )
