"""Option types and helpers shared by several commands.

Every option is declared with :func:`option`, which adds the other spellings of :data:`ALIASES`
(the original project's flags), so an alias is written once for every command that has the option.
Underscore spellings (``--data_dir``) need no entry: the root group turns them into dashes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from medattn import registry
from medattn.config_parts import DUPLICATES, MODES, DataConfig

#: Other spellings of an option (the original project's), by the option's dash-case name.
ALIASES: dict[str, tuple[str, ...]] = {
    "--batch-size": ("--batchsize",),
    "--img-size": ("--imgsize",),
    "--class-weights": ("--classweights",),
    "--ckpt": ("--modelckpt",),
}


def option(name: str, *short: str, help: str, **kwargs: Any) -> Any:
    """``typer.Option(name, *short, *aliases, help=help, **kwargs)`` with the aliases of :data:`ALIASES`.

    ``name`` may be a boolean flag pair (``--amp/--no-amp``); its aliases are looked up by the first name.
    """
    return typer.Option(name, *short, *ALIASES.get(name.split("/")[0], ()), help=help, **kwargs)


def from_table(table: Mapping[str, str], typ: Any, flag: str, suffix: str = "", **kwargs: Any) -> Any:
    """``Annotated[typ, option(flag, help=table[flag] + suffix, **kwargs)]``: an option in one line, its
    help text in the command's table of help texts (keyed by the first flag: ``--amp`` for ``--amp/--no-amp``)."""
    return Annotated[typ, option(flag, help=table[flag.split("/")[0]] + suffix, **kwargs)]


def choices(values: Sequence[str]) -> dict[str, Any]:
    """``typer.Option`` keywords for an option with a fixed set of values: ``--help`` lists them
    (``[a|b|c]``) and shell completion offers them. They are not enforced here: the config
    canonicalises the aliases the CLI accepts (``SEResNet50``, ``APTOS``, ``validation``) and answers
    a typo with one "did you mean" sentence and exit code 2."""
    names = [str(v) for v in values]

    def complete(incomplete: str) -> list[str]:
        return [n for n in names if n.lower().startswith(incomplete.lower())]

    return {"metavar": "[" + "|".join(names) + "]", "autocompletion": complete}


def registry_names(kind: str) -> list[str]:
    """The canonical names of a registry (``dataset``, ``model``, ``explanation method``); the
    look-up loads the package that fills it (:data:`medattn.registry.PROVIDERS`)."""
    return registry.lookup(kind).names()


def registry_choices(kind: str) -> dict[str, Any]:
    """:func:`choices` of a registry's canonical names."""
    return choices(registry_names(kind))


def default(value: Any) -> str:
    """`` (default: VALUE)``, the suffix of a help text whose option defaults to ``None`` ("not given")."""
    return f" (default: {value:g})" if isinstance(value, float) else f" (default: {value})"


def given(value: str | None) -> str | None:
    """``None`` for an empty value: ``mlflow run`` passes an MLproject parameter left at its
    default ``""`` as ``--name ''``, which means "not given"."""
    return value if value and value.strip() else None


def device_of(device: str | None, gpu_id: int | None) -> str | None:
    """``--gpu-id N`` is ``--device cuda:N``."""
    return f"cuda:{gpu_id}" if gpu_id is not None else device


def split_list(text: str | None) -> tuple[str, ...]:
    """``"a, b,,c"`` → ``("a", "b", "c")`` (a comma-separated option)."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def _quiet(ctx: typer.Context, value: bool) -> bool:
    """``--quiet``: MLflow's download bars off until the command ends (the command turns its own off)."""
    if value:
        # loaded when the command runs: --help and shell completion stay free of torch and MLflow
        from medattn import tracking

        ctx.with_resource(tracking.quiet_artifact_downloads())
    return value


def done(kind: str, run_id: str, uri: str, experiment_id: str | None = None) -> None:
    """The final line of every command: what was logged where and how to look at it."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import tracking

    exp = f" in experiment {tracking.experiment_name_of(experiment_id)!r}" if experiment_id is not None else ""
    line = f"Logged {kind} run {run_id}{exp} to {uri}; view it with: {tracking.ui_command(uri)}"
    typer.echo(tracking.redact_secrets(line))  # a database password in the URI is never printed


QuietOpt = Annotated[
    bool,
    option(
        "--quiet",
        "-q",
        help="No progress bars (epochs, batches, explanations, MLflow downloads).",
        callback=_quiet,
    ),
]
TrackingUriOpt = Annotated[
    str | None,
    option(
        "--tracking-uri",
        help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db "
        "(artifacts in <cwd>/mlruns).",
    ),
]
DeviceOpt = Annotated[
    str | None,
    option("--device", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N. (default: auto)"),
]
GpuIdOpt = Annotated[int | None, option("--gpu-id", help="Use cuda:N (same as --device cuda:N).")]
DataDirOpt = Annotated[Path, option("--data-dir", help="Folder holding the data set in its on-disk layout.")]

# Which trained model test / interpret read: exactly one of --run-id, --model-uri, --ckpt.
ModelUriOpt = Annotated[
    str | None,
    option(
        "--model-uri",
        help="Model URI instead of --run-id: models:/NAME@ALIAS (e.g. models:/medattn-demo@champion), "
        "models:/NAME/VERSION, models:/m-<logged model id> or runs:/RUN_ID/model.",
    ),
]
SourceCkptOpt = Annotated[str | None, option("--ckpt", help="Local checkpoint file written by medattn train.")]
SourceDataDirOpt = Annotated[
    str | None,
    option("--data-dir", help="Data folder, when it moved since training. (default: the training run's)"),
]
InferenceBatchSizeOpt = Annotated[int, option("--batch-size", help="Inference batch size.")]
NumWorkersOpt = Annotated[int, option("--num-workers", help="DataLoader worker processes.")]


def source_run_id(done_to_it: str) -> Any:
    """``--run-id`` of a command that reads a training run's model: "Training run whose logged model is
    ``done_to_it``." (``tested``, ``explained``, ...)."""
    return Annotated[str | None, option("--run-id", help=f"Training run whose logged model is {done_to_it}.")]


def run_experiment(command: str) -> Any:
    """``--experiment`` of a command that logs a new run about a training run (``test``, ``interpret``, ...)."""
    return Annotated[
        str | None, option("--experiment", help=f"Experiment of the {command} run. (default: the training run's)")
    ]


DUPLICATES_HELP = (
    "Near-duplicate images (fingerprint distance <= 0.15, joined transitively): keep each group in one split "
    "(group), keep one image per group (drop), or ignore."
)
DuplicatesOpt = Annotated[
    str | None,
    option(
        "--duplicates",
        help=DUPLICATES_HELP + default(DataConfig.duplicates),
        show_default=False,
        **choices(DUPLICATES),
    ),
]
ModeOpt = Annotated[str | None, option("--mode", help="(default: min for *_loss, max otherwise)", **choices(MODES))]
SEEDS_HELP = (
    "Comma-separated seeds, e.g. 0,1,2: one training run per seed (replaces --seed); compare then reports "
    "the mean ± sd of each variant's ΔAUC across seeds."
)


# ---- where grid cells and search workers run: local processes or Slurm jobs (grid, search) -----
#: The help text of each option of where the work runs, by its flag.
LAUNCH_HELP = {
    "--launcher": (
        "Where the work runs: local (processes on this machine) or slurm (one Slurm job each, submitted "
        "through submitit; needs sbatch on PATH)."
    ),
    "--partition": "Slurm: partition of the jobs.",
    "--gpus-per-cell": "Slurm: GPUs of each job.",
    "--cpus-per-cell": "Slurm: CPUs of each job.",
    "--mem": "Slurm: memory of each job, e.g. 32G.",
    "--time": (
        "Slurm: time limit of each job (MINUTES, HH:MM:SS or D-HH:MM:SS); a job that reaches it is requeued "
        "and continues from its last checkpoint."
    ),
    "--account": "Slurm: account charged for the jobs.",
    "--slurm": "Slurm: any other sbatch option as KEY=VALUE, e.g. --slurm constraint=a100 (repeatable).",
    "--slurm-logs": (
        "Slurm: submitit's folder (job scripts, stdout/stderr of each job under <folder>/<job id>/); every "
        "node must see it."
    ),
}
LauncherOpt = from_table(LAUNCH_HELP, str, "--launcher", **choices(["local", "slurm"]))
PartitionOpt = from_table(LAUNCH_HELP, str | None, "--partition")
GpusPerCellOpt = from_table(LAUNCH_HELP, int, "--gpus-per-cell")
CpusPerCellOpt = from_table(LAUNCH_HELP, int | None, "--cpus-per-cell")
MemOpt = from_table(LAUNCH_HELP, str | None, "--mem")
TimeOpt = from_table(LAUNCH_HELP, str | None, "--time")
AccountOpt = from_table(LAUNCH_HELP, str | None, "--account")
SlurmExtraOpt = from_table(LAUNCH_HELP, list[str] | None, "--slurm")
SLURM_LOGS = "slurm-logs"  # medattn.stages.slurm.DEFAULT_LOG_FOLDER (not imported here: --help stays light)
SlurmLogsOpt = from_table(LAUNCH_HELP, str, "--slurm-logs")


def slurm_options(
    partition: str | None,
    gpus_per_cell: int,
    cpus_per_cell: int | None,
    mem: str | None,
    time: str | None,
    account: str | None,
    extra: list[str] | None,
    logs: str,
) -> Any:
    """The :class:`medattn.api.SlurmOptions` of the Slurm options above (checked there)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    return api.SlurmOptions(
        partition=given(partition),
        gpus_per_cell=gpus_per_cell,
        cpus_per_cell=cpus_per_cell,
        mem=given(mem),
        time=given(time),
        account=given(account),
        extra=api.parse_slurm_extra(extra),
        log_folder=logs,
    )
