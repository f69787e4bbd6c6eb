"""``medattn compare``: compare the variants' test runs of an experiment."""

from __future__ import annotations

from typing import Annotated

import typer

from medattn.cli.options import QuietOpt, TrackingUriOpt, choices, done, given, option
from medattn.metrics import CLASSIFICATION_KEYS
from medattn.stages.compare import CASES, CompareConfig

C = CompareConfig


def command(
    experiment: Annotated[
        str | None,
        option(
            "--experiment",
            help="Experiment whose finished test runs (split test) are compared. (default: under mlflow run the "
            f"project run's experiment, else {C.experiment})",
        ),
    ] = None,
    metric: Annotated[
        str,
        option(
            "--metric",
            help="Test metric of the low-data-regimen figure and the table's first column.",
            **choices([f"test_{k}" for k in CLASSIFICATION_KEYS]),
        ),
    ] = C.metric,
    cases: Annotated[
        str | None,
        option(
            "--cases",
            help="List (and draw) the test images where all models share that outcome (tp, tn, fp, fn), all agree, "
            "or disagree.",
            **choices(CASES),
        ),
    ] = C.cases,
    max_images: Annotated[int, option("--max-images", help="Images per saliency grid (rows).")] = C.max_images,
    alpha_overlay: Annotated[
        float, option("--alpha-overlay", help="Opacity of the heat maps in the grids, in [0, 1].")
    ] = C.alpha_overlay,
    tracking_uri: TrackingUriOpt = C.tracking_uri,
    quiet: QuietOpt = False,
) -> None:
    """Comparison table of test metrics with CIs per variant and training-data fraction, each attention
    variant's ΔAUC against its plain backbone (paired bootstrap CI, p-value, forest plot, one verdict
    sentence each), the low-data-regimen figure, explanation scores and a models × methods grid,
    logged to a new compare run; --cases selects images by the models' shared outcome."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api, tracking

    cfg = CompareConfig(
        experiment=given(experiment) or tracking.project_experiment_name(tracking_uri) or C.experiment,
        metric=metric,
        cases=cases,
        max_images=max_images,
        alpha_overlay=alpha_overlay,
        tracking_uri=tracking_uri,
    )
    result = api.compare(cfg)
    shown = [c for c in result.table.columns if c not in ("run_id", "source_run")]
    typer.echo(api.to_markdown(result.table[shown]))
    if result.cases is not None:
        n = len(result.cases)
        typer.echo(
            f"{n} image{'' if n == 1 else 's'} where the models are '{cases}': "
            + (", ".join(result.cases) if result.cases else "none")
        )
    for sentence in result.verdicts:
        typer.echo(sentence)
    if result.paper:
        typer.echo(result.paper)
    done("compare", result.run_id, result.tracking_uri, tracking.get_run(result.run_id).info.experiment_id)
