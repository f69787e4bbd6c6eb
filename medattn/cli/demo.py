"""``medattn demo``: the whole platform end to end on the synthetic demo set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medattn.cli.options import (
    DeviceOpt,
    QuietOpt,
    TrackingUriOpt,
    choices,
    done,
    given,
    option,
    registry_names,
    split_list,
)
from medattn.config import TARGETS
from medattn.stages.demo import DemoConfig

C = DemoConfig

# options declared here to keep the command's signature readable
TestExtraOpt = Annotated[
    int,
    option(
        "--test-extra",
        help="Further synthetic images that only the test split receives (the demo split: a test split of "
        "≥ 600 images by default).",
    ),
]
ExplainTargetOpt = Annotated[
    str,
    option(
        "--explain-target",
        help="Class each map explains: pred (the model's decision, whose confidence the removal curves "
        "follow) or label.",
        **choices(TARGETS),
    ),
]
DifficultyOpt = Annotated[
    float | None,
    option("--difficulty", help="Difficulty in [0, 1] of a newly written demo set. (default: medattn data synth's)"),
]


def command(
    data_dir: Annotated[
        str, option("--data-dir", help="Where the synthetic demo set is written (reused if present).")
    ] = C.data_dir,
    n: Annotated[int, option("--n", help="Images in the synthetic set, split train/val/test.")] = C.n,
    test_extra: TestExtraOpt = C.test_extra,
    models: Annotated[
        str,
        option("--models", help=f"Comma-separated variants to train, of: {', '.join(registry_names('model'))}."),
    ] = ",".join(C.models),
    epochs: Annotated[
        int | None, option("--epochs", help="Epochs per model. (default: 8, from the demo settings)")
    ] = None,
    config: Annotated[
        Path | None,
        option("--config", help="YAML with training settings replacing the demo defaults (experiments/demo.yaml)."),
    ] = None,
    explain_images: Annotated[
        int, option("--explain-images", help="Test images explained and scored per model (0: skip interpret).")
    ] = C.explain_images,
    figure_images: Annotated[
        int, option("--figure-images", help="Explained images drawn as heat-map figures per model.")
    ] = C.figure_images,
    explain_target: ExplainTargetOpt = C.explain_target,
    difficulty: DifficultyOpt = C.difficulty,
    promote: Annotated[
        bool,
        option("--promote/--no-promote", help="Give the best variant (val_auc) the champion alias of medattn-demo."),
    ] = C.promote,
    experiment: Annotated[str, option("--experiment", help="MLflow experiment of the demo runs.")] = C.experiment,
    seeds: Annotated[
        str | None,
        option(
            "--seeds",
            help="Comma-separated seeds, e.g. 0,1,2: every variant is trained and tested once per seed (the first "
            "seed's model is explained); the verdicts add the mean ± sd of ΔAUC across seeds.",
        ),
    ] = None,
    device: DeviceOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """End to end on CPU: synthesise the demo set; train, test and explain each variant; compare the
    variants (ΔAUC of each attention variant against its plain backbone, one verdict sentence each);
    promote the best one to models:/medattn-demo@champion."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    cfg = DemoConfig(
        data_dir=data_dir,
        n=n,
        test_extra=test_extra,
        models=split_list(models),
        config_file=str(config) if config else None,
        epochs=epochs,
        tracking_uri=tracking_uri,
        experiment=experiment,
        device=device or C.device,
        explain_images=explain_images,
        figure_images=figure_images,
        explain_target=explain_target,
        difficulty=difficulty,
        promote=promote,
        seeds=api.parse_seeds(given(seeds)),
    )
    _demo_report(api.demo(cfg, echo=typer.echo, progress=not quiet))


def _demo_report(result) -> None:
    """The tables and closing lines ``medattn demo`` prints (for an :class:`medattn.api.DemoResult`)."""

    def fmt(v: float) -> str:
        return f"{v:.3f}"

    typer.echo("\nTest performance per variant")
    typer.echo(result.table.drop(columns=["train_run"]).to_string(index=False, float_format=fmt))
    if len(result.xai):
        typer.echo(
            "\nExplanation scores (model × source; baseline_* = sanity baselines on the same images: uniform "
            "random, input grey level, centre prior, Sobel edges, the method on a randomised model)"
        )
        typer.echo(result.xai.to_string(index=False, float_format=fmt))
    if len(result.sanity):
        typer.echo(
            "\nSanity rule per model × map (passes: every score's 95 % CI beats every baseline's; the oracle "
            "map is the ground-truth mask, judged against the model-free baselines)"
        )
        typer.echo(result.sanity.to_string(index=False))
    if result.promoted is not None:
        typer.echo(
            f"\n{result.promoted.describe()}: {result.promoted.variant} "
            f"({result.promoted.metric} {result.promoted.value:.4f}); load it with {result.promoted.model_uri}"
        )
    if result.compare_run_id:
        typer.echo(
            f"comparison figures (low-data plot, explanation scores, saliency grid) in compare run {result.compare_run_id}"
        )
    done("demo", result.parent_run_id, result.tracking_uri)
    if result.report is not None:
        from medattn import api  # loaded when the command runs: --help stays free of torch and MLflow

        typer.echo(f"report: {result.report}")
        typer.echo(f"open it with: {api.open_command(result.report)}")
