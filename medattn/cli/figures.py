"""``medattn figures``: draw an interpret run's heat maps, grid and training-history curves."""

from __future__ import annotations

from typing import Annotated

import typer

from medattn.cli.options import QuietOpt, TrackingUriOpt, choices, done, given, option, registry_names
from medattn.stages.figures import FiguresConfig

C = FiguresConfig


def command(
    run_id: Annotated[
        str | None,
        option(
            "--run-id",
            help="Interpret run to draw; or a training run, whose latest finished interpret run (tag "
            "medattn.source_run) is used.",
        ),
    ] = C.run_id,
    model_uri: Annotated[
        str | None,
        option(
            "--model-uri",
            help="Instead of --run-id: a training run's model URI (models:/NAME@ALIAS, models:/NAME/VERSION, "
            "models:/m-<id>, runs:/RUN_ID/model); its latest interpret run is drawn.",
        ),
    ] = C.model_uri,
    saliency_maps: Annotated[
        str,
        option(
            "--saliency-maps",
            help="Which methods' maps to draw (any case).",
            **choices(["ALL", *(m.upper() for m in registry_names("explanation method"))]),
        ),
    ] = C.saliency_maps.upper(),
    alpha_overlay: Annotated[
        float, option("--alpha-overlay", help="Opacity of the heat map over the greyscale image, in [0, 1].")
    ] = C.alpha_overlay,
    max_images: Annotated[
        int,
        option(
            "--max-images",
            help="Draw the first N explained images (their heat maps and grid rows); 0: every explained image.",
        ),
    ] = C.max_images or 0,
    tracking_uri: TrackingUriOpt = C.tracking_uri,
    quiet: QuietOpt = False,
) -> None:
    """Blended heat maps (captum style, bwr) per image and method, the original images, an images ×
    methods grid and the training-history curves, logged to the interpret run under figures/."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    cfg = FiguresConfig(
        run_id=given(run_id),
        model_uri=given(model_uri),
        saliency_maps=saliency_maps,
        alpha_overlay=alpha_overlay,
        max_images=max_images,
        tracking_uri=tracking_uri,
    )
    result = api.figures(cfg)
    typer.echo(
        f"{len(result.artifacts)} figures under figures/ (grid: figures/grid.png"
        + (", history: figures/history/*.png)" if result.history else "; no training history)")
    )
    done("interpret", result.run_id, result.tracking_uri)
