"""``medattn interpret``: explain a trained model and score the explanations."""

from __future__ import annotations

from typing import Annotated

import typer

from medattn.cli.options import (
    DeviceOpt,
    GpuIdOpt,
    ModelUriOpt,
    QuietOpt,
    SourceCkptOpt,
    SourceDataDirOpt,
    TrackingUriOpt,
    choices,
    device_of,
    done,
    given,
    option,
    registry_names,
    run_experiment,
    source_run_id,
    split_list,
)
from medattn.config import REMOVALS, SPLIT_ALIASES, TARGETS
from medattn.stages.interpret import InterpretConfig

C = InterpretConfig
RunIdOpt = source_run_id("explained")
ExperimentOpt = run_experiment("interpret")


# the removal-score options, declared here to keep the command's signature readable
StepsOpt = Annotated[
    int,
    option(
        "--steps",
        help="Removal steps (each costs one forward pass of 2 × batch; with road also 2 × batch imputations).",
    ),
]
RemovalOpt = Annotated[
    str,
    option(
        "--removal",
        help="How pixels are removed for the removal scores: road (noisy linear imputation; logs "
        "morf_auc/lerf_auc), zeros (the dataset mean) or blur (both log deletion_auc/insertion_auc).",
        **choices(REMOVALS),
    ),
]
CurveImagesOpt = Annotated[
    int | None,
    option(
        "--curve-images",
        help="Removal curves (ROAD MoRF/LeRF, or deletion/insertion) on N images only: the first N with a "
        "lesion mask where the data set has masks. (default: all)",
    ),
]
RandomizedImagesOpt = Annotated[
    int | None,
    option(
        "--randomized-images",
        help="Explain the first N images on the randomised model (sanity baseline). (default: all)",
    ),
]


def command(
    run_id: RunIdOpt = None,
    model_uri: ModelUriOpt = None,
    ckpt: SourceCkptOpt = None,
    split: Annotated[str, option("--split", help="Split whose images are explained.", **choices(SPLIT_ALIASES))] = (
        C.split
    ),
    methods: Annotated[
        str | None,
        option(
            "--methods",
            help=f"Comma-separated, of: {', '.join(registry_names('explanation method'))}. "
            "(default: deeplift,lrp for CNNs; transformer-lrp for DeiT)",
        ),
    ] = None,
    max_images: Annotated[
        int, option("--max-images", help="Explain the first N images of the split (split order).")
    ] = C.max_images,
    target: Annotated[
        str,
        option(
            "--target",
            help="Class explained: label (ground truth) or pred (the model's prediction).",
            **choices(TARGETS),
        ),
    ] = C.target,
    batch_size: Annotated[
        int, option("--batch-size", help="Images explained per batch (one call per batch and method).")
    ] = C.batch_size,
    steps: StepsOpt = C.steps,
    removal: RemovalOpt = C.removal,
    curve_images: CurveImagesOpt = C.curve_images,
    randomized_images: RandomizedImagesOpt = C.randomized_images,
    n_boot: Annotated[int, option("--n-boot", help="Bootstrap resamples per 95 % CI.")] = C.n_boot,
    data_dir: SourceDataDirOpt = None,
    device: DeviceOpt = None,
    gpu_id: GpuIdOpt = None,
    experiment: ExperimentOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Explain a trained model (DeepLIFT, LRP, transformer attribution), batched; log every map, the
    input images and removal scores (ROAD MoRF/LeRF by default; plus pointing-game, mask-mass and
    the ground-truth mask as an oracle map on demo)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    cfg = InterpretConfig(
        run_id=given(run_id),
        model_uri=given(model_uri),
        ckpt=ckpt,
        split=split,
        methods=split_list(methods),
        max_images=max_images,
        target=target,
        batch_size=batch_size,
        steps=steps,
        curve_images=curve_images,
        randomized_images=randomized_images,
        n_boot=n_boot,
        removal=removal,
        data_dir=data_dir,
        device=device_of(device, gpu_id) or C.device,
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    result = api.interpret(cfg, progress=not quiet)
    typer.echo(result.scores.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    done("interpret", result.run_id, result.tracking_uri)
