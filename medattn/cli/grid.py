"""``medattn grid``: train and test every cell of an experiment grid, resumably, locally or on Slurm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medattn.cli.options import (
    SLURM_LOGS,
    AccountOpt,
    CpusPerCellOpt,
    DeviceOpt,
    GpusPerCellOpt,
    LauncherOpt,
    MemOpt,
    PartitionOpt,
    QuietOpt,
    SlurmExtraOpt,
    SlurmLogsOpt,
    TimeOpt,
    TrackingUriOpt,
    given,
    option,
    registry_choices,
    slurm_options,
)

StatusOpt = Annotated[
    bool,
    option(
        "--status",
        help="Print each cell's state (FINISHED, TRAINED, RUNNING, PENDING, KILLED, FAILED, MISSING), run and test "
        "AUC without training; runs whose process or Slurm job is gone are marked KILLED.",
    ),
]
TestOpt = Annotated[
    bool,
    option("--test/--no-test", help="Test every trained cell on the test split (a cell is done once tested)."),
]
JobsOpt = Annotated[
    int | None,
    option(
        "--jobs",
        help="Cells at once: local processes (each with its own GPU, or a share of the CPU cores), or the Slurm job "
        "array's limit. (default: 1 locally, no limit on Slurm)",
    ),
]
WaitOpt = Annotated[
    bool, option("--wait/--no-wait", help="Slurm: wait for the jobs and report each cell (else return once submitted).")
]


def command(
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
    status: StatusOpt = False,
    test: TestOpt = True,
    jobs: JobsOpt = None,
    launcher: LauncherOpt = "local",
    partition: PartitionOpt = None,
    gpus_per_cell: GpusPerCellOpt = 0,
    cpus_per_cell: CpusPerCellOpt = None,
    mem: MemOpt = None,
    time: TimeOpt = None,
    account: AccountOpt = None,
    slurm: SlurmExtraOpt = None,
    slurm_logs: SlurmLogsOpt = SLURM_LOGS,
    wait: WaitOpt = True,
    quiet: QuietOpt = False,
) -> None:
    """Train and test every cell of an experiment grid (models × training fractions [× seeds]), one run per
    cell, resumably: finished cells are skipped, a cell whose run died continues in that run from its last
    checkpoint, missing cells are trained; locally one or --jobs N at a time, or as Slurm jobs (--launcher
    slurm). Ends with a status table and, once all cells are tested, the paper-style table (AUC mean ± sd
    over seeds, ΔAUC of each attention variant vs its backbone)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api, tracking

    options = api.GridOptions(
        launcher=launcher,
        jobs=jobs,
        slurm=slurm_options(partition, gpus_per_cell, cpus_per_cell, mem, time, account, slurm, slurm_logs),
        test=test,
        wait=wait,
        status=status,
    )
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
    result = api.grid(config, overrides, seeds=seed_list, options=options, echo=typer.echo, progress=not quiet)
    uri = result.tracking_uri
    typer.echo(tracking.redact_secrets(f"Tracking store: {uri}; view it with: {tracking.ui_command(uri)}"))
