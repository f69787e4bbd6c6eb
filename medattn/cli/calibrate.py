"""``medattn calibrate``: temperature-scale a trained model on the validation split."""

from __future__ import annotations

from typing import Annotated

import typer

from medattn.cli.options import (
    DeviceOpt,
    InferenceBatchSizeOpt,
    ModelUriOpt,
    NumWorkersOpt,
    QuietOpt,
    SourceDataDirOpt,
    TrackingUriOpt,
    done,
    given,
    option,
    run_experiment,
    source_run_id,
)

RunIdOpt = source_run_id("calibrated")
ExperimentOpt = run_experiment("calibrate")


def command(
    run_id: RunIdOpt = None,
    model_uri: ModelUriOpt = None,
    data_dir: SourceDataDirOpt = None,
    batch_size: InferenceBatchSizeOpt = 64,
    num_workers: NumWorkersOpt = 0,
    device: DeviceOpt = None,
    register: Annotated[
        bool, option("--register/--no-register", help="Register the calibrated model as a new model version.")
    ] = True,
    experiment: ExperimentOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Temperature-scale a trained model: fit one temperature on the validation split (minimum NLL) and log it with the calibrated model as a new model version.

    The new calibrate run logs the temperature as a param and the validation ECE and NLL before and
    after; test it with medattn test --run-id <calibrate run> (or the new version's models:/ URI) to
    see the test ECE change (docs/evaluation.md)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    cfg = api.CalibrateConfig(
        run_id=given(run_id),
        model_uri=given(model_uri),
        split="val",
        data_dir=data_dir,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device or "auto",
        register=register,
        experiment=experiment,
        tracking_uri=tracking_uri,
    )
    result = api.calibrate(cfg, progress=not quiet)
    m = result.metrics
    version = f" as {result.registered_name} version {result.version}" if result.version else ""
    typer.echo(
        f"temperature {result.temperature:.4f}: validation ECE {m['val_ece_before']:.4f} -> {m['val_ece_after']:.4f}, "
        f"NLL {m['val_nll_before']:.4f} -> {m['val_nll_after']:.4f}; model logged{version}"
    )
    done("calibrate", result.run_id, result.tracking_uri)
