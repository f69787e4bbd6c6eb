"""The ``medattn`` command line: thin Typer commands over :mod:`medattn.api`, one module per command.

Each command module (``medattn/cli/train.py``, ``test.py``, ...) parses its options, builds its
config by name, calls the library and prints the outcome. This module holds only the root group:
it lists the commands from :data:`COMMANDS` and imports a command's module when that command runs
(or shows its ``--help``), so that ``medattn --help`` and shell completion, which runs the program
on every TAB, answer without importing torch or MLflow.

User mistakes raise :class:`medattn.errors.MedattnError`; the root group turns them into one line
on stderr and exit code 2 (never a traceback).
"""

from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager

import click
import typer
from typer.core import TyperGroup

from medattn.errors import MedattnError

#: Every command: name → the one-line summary ``medattn --help`` lists. The command itself lives in
#: ``medattn/cli/<name>.py`` (see :func:`load_command`); its docstring starts with this line.
COMMANDS: dict[str, str] = {
    "train": "Train one model; log params, per-epoch metrics, checkpoints, splits and the model to MLflow.",
    "test": "Test a trained model on a split: test_* metrics with bootstrap CIs, predictions.csv, ROC and confusion-matrix figures, logged to a new run tagged with its source run.",
    "interpret": "Explain a trained model (DeepLIFT, LRP, transformer attribution), batched; log every map, the input images and removal scores (ROAD MoRF/LeRF by default; plus pointing-game, mask-mass and the ground-truth mask as an oracle map on demo).",
    "figures": "Blended heat maps (captum style, bwr) per image and method, the original images, an images × methods grid and the training-history curves, logged to the interpret run under figures/.",
    "compare": "Comparison table of test metrics with CIs per variant and training-data fraction, each attention variant's ΔAUC against its plain backbone (paired bootstrap CI, p-value, forest plot, one verdict sentence each), the low-data-regimen figure, explanation scores and a models × methods grid, logged to a new compare run; --cases selects images by the models' shared outcome.",
    "search": "Optuna search over learning rate (log-uniform) and batch size (categorical): TPE sampler, median pruning per epoch, one parent MLflow run with one nested training run per trial; several workers on one study with --workers (locally or as Slurm jobs, --launcher slurm).",
    "promote": "Register the best finished training run's model as medattn-<dataset> (if not yet) and move the alias (champion) to that version; idempotent.",
    "demo": "End to end on CPU: synthesise the demo set; train, test and explain each variant; compare the variants (ΔAUC of each attention variant against its plain backbone, one verdict sentence each); promote the best one to models:/medattn-demo@champion.",
    "grid": "Train and test every cell of an experiment grid (models × training fractions [× seeds]), one run per cell, resumably: finished cells are skipped, a cell whose run died continues in that run from its last checkpoint, missing cells are trained; locally one or --jobs N at a time, or as Slurm jobs (--launcher slurm).",
    "bench": "Measure images/s: pure, pipeline (uint8 cache + GPU augmentation), files, seed config, inference, explanations.",
    "report": "One self-contained HTML page of an experiment's answer: what was run, the results with CIs, each attention variant's paired ΔAUC against its plain backbone with verdicts, low-data curves, explanation scores with sanity baselines, saliency grids, failed or missing cells, every number linked to its run; logged with its tables as CSV to a new run tagged medattn.kind=report.",
    "models": "List the models: architecture, attention placement and parameter count.",
    "data": "Data sets: write the synthetic demo set, prepare a uint8 cache, check a data folder.",
    "calibrate": "Temperature-scale a trained model: fit one temperature on the validation split (minimum NLL) and log it with the calibrated model as a new model version.",
}

#: ``ctx.meta`` key of the command line as given (``train --nproc N`` re-launches itself with it).
ARGV_KEY = "medattn.argv"


def _dashify(token: str) -> str:
    """``--data_dir=x`` → ``--data-dir=x``: every option also answers to its underscore spelling
    (the original project's flags, and what ``mlflow run -P name=value`` passes through)."""
    if not token.startswith("--") or token == "--":
        return token
    name, eq, value = token.partition("=")
    return name.replace("_", "-") + eq + value


def load_command(name: str) -> click.Command:
    """The click command of ``medattn NAME``, built from ``medattn/cli/NAME.py``: its function ``command``,
    or its Typer app ``app`` where the command is a group of subcommands (``medattn data synth``)."""
    module = importlib.import_module(f"{__name__}.{name}")
    app = getattr(module, "app", None)
    if app is None:
        app = typer.Typer(add_completion=False)
        app.command(name)(module.command)
    return typer.main.get_command(app)


class _Group(TyperGroup):
    """The root group: loads a command's module on first use, accepts underscore option spellings
    and prints :class:`~medattn.errors.MedattnError` as ``Error: <sentence>`` with exit code 2.

    Listing the commands (``medattn --help``, completing a command name) shows their summaries from
    :data:`COMMANDS` without importing any command module.
    """

    _summaries_only = False

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: D102 - click API
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # noqa: D102 - click API
        if cmd_name not in COMMANDS:
            return None
        if self._summaries_only and cmd_name not in self.commands:
            return click.Command(cmd_name, help=COMMANDS[cmd_name], short_help=COMMANDS[cmd_name])
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    @contextmanager
    def _listing(self):
        self._summaries_only = True
        try:
            yield
        finally:
            self._summaries_only = False

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:  # noqa: D102 - click API
        with self._listing():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list:  # noqa: D102 - click API
        with self._listing():
            return super().shell_complete(ctx, incomplete)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:  # noqa: D102 - click API
        args = [_dashify(a) for a in args]
        ctx.meta.setdefault(ARGV_KEY, list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):  # noqa: D102 - click API
        try:
            try:
                return super().invoke(ctx)
            except Exception as exc:
                # A tracking server's 401 / 403 as one sentence. Only a command that loaded
                # medattn.tracking can have talked to a server, so nothing is imported here.
                tracking = sys.modules.get("medattn.tracking")
                err = tracking.auth_error(exc) if tracking is not None else None
                if err is None:
                    raise
                raise err from None
        except MedattnError as exc:
            # a database password inside a URI is never printed (only a command that loaded
            # medattn.tracking can have a store URI in its message)
            tracking = sys.modules.get("medattn.tracking")
            text = tracking.redact_secrets(str(exc)) if tracking is not None else str(exc)
            click.echo(f"Error: {text}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    help="medattn: train, test and explain attention-augmented medical image classifiers, every run tracked in "
    "MLflow. Every option also answers to its underscore spelling (--data_dir for --data-dir).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """The root group itself takes no options but completion's; the commands are loaded by :class:`_Group`."""


def main() -> None:
    """Entry point for ``python -m medattn``."""
    app()
