"""``medattn grid``: train every cell of an experiment grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medattn.cli.options import DeviceOpt, TrackingUriOpt, given, option, registry_choices

app = typer.Typer(add_completion=False)


@app.command("grid")
def grid_cmd(
    config: Annotated[
        Path,
        option("--config", help="YAML experiment file with a 'grid' (e.g. experiments/paper/aptos2019.yaml)."),
    ],
    data_dir: Annotated[str | None, option("--data-dir", help="Data folder for every cell.")] = None,
    model: Annotated[
        str | None, option("--model", help="Pin the model axis to one variant.", **registry_choices("model"))
    ] = None,
    perc_train: Annotated[
        float | None, option("--perc-train", help="Pin the training-fraction axis to one value.")
    ] = None,
    epochs: Annotated[int | None, option("--epochs", help="Override the epochs of every cell.")] = None,
    seeds: Annotated[
        str | None,
        option("--seeds", help="Comma-separated seeds, e.g. 0,1,2: every cell is trained once per seed."),
    ] = None,
    device: DeviceOpt = None,
    tracking_uri: TrackingUriOpt = None,
    dry_run: Annotated[bool, option("--dry-run", help="List the cells and exit.")] = False,
) -> None:
    """Train every cell of an experiment grid (models × training fractions [× seeds]), one run per cell."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api, tracking

    overrides = {
        "data_dir": data_dir,
        "model": model,
        "perc_train": perc_train,
        "epochs": epochs,
        "device": device,
        "tracking_uri": tracking_uri,
    }
    seed_list = api.parse_seeds(given(seeds))
    cells = api.grid_cells(config, overrides, seeds=seed_list)
    if dry_run:
        for cfg in cells:
            typer.echo(
                f"{cfg.data.dataset}  {cfg.model.model}  perc_train={cfg.data.perc_train:g}  epochs={cfg.optim.epochs}"
                + (f"  seed={cfg.optim.seed}" if seed_list else "")
            )
        typer.echo(f"{len(cells)} cells")
        return
    results = api.grid(config, overrides, echo=typer.echo, seeds=seed_list)
    typer.echo(
        tracking.redact_secrets(
            f"Logged {len(results)} training runs to {results[-1].tracking_uri}; "
            f"view them with: mlflow ui --backend-store-uri {results[-1].tracking_uri}"
        )
    )
