"""The ``medattn`` command line: thin Typer commands over :mod:`medattn.api`.

Each command parses options, builds a config, calls the library and prints the outcome. User
mistakes raise :class:`medattn.errors.MedattnError`; the group below turns them into one line on
stderr and exit code 2 (never a traceback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from medattn.errors import MedattnError


class _Group(TyperGroup):
    """Click group that prints :class:`MedattnError` as ``Error: <sentence>`` and exits 2."""

    def invoke(self, ctx: click.Context):  # noqa: D102 - click API
        try:
            return super().invoke(ctx)
        except MedattnError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    help="medattn: train, test and explain attention-augmented medical image classifiers, "
    "every run tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    cls=_Group,
    help="Data sets: write the synthetic demo set, prepare a uint8 cache, check a data folder.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def main() -> None:
    """Entry point for ``python -m medattn``."""
    app()


# --------------------------------------------------------------------------------------------
# Shared option types (dash-case, with the original project's underscore spellings as aliases).
# --------------------------------------------------------------------------------------------
DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="Data set: aptos2019 (APTOS), isic2020 (ISIC2020), mimic-cxr (MIMICCXR) or demo.",
    ),
]
DataDirOpt = Annotated[
    Path,
    typer.Option("--data-dir", "--data_dir", help="Folder holding the data set in its on-disk layout."),
]


# --------------------------------------------------------------------------------------------
# medattn data ...
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# medattn models
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# medattn train / test / demo
# --------------------------------------------------------------------------------------------
