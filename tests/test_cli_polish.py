"""Typer polish: shell completion, the fixed choices of every option listed in
``--help`` from their one source (and offered by completion), ``--quiet`` without progress bars."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from medattn.cli import app
from medattn.cli.options import registry_names
from medattn.config import (
    DATA_PIPELINES,
    HEADS,
    INITS,
    MODES,
    PRETRAINED,
    RESIZE_MODES,
    SCHEDULERS,
    SPLIT_ALIASES,
    TARGETS,
    UNCERTAIN,
)
from medattn.metrics import EPOCH_METRIC_NAMES
from medattn.stages.compare import CASES


def _names(kind: str) -> list[str]:
    return registry_names(kind)  # loads the package that fills the registry


# (command, option, the values --help must list), each from the list the config checks against
FIXED = [
    ("train", "--dataset", _names("dataset")),
    ("train", "--model", _names("model")),
    ("train", "--resize", RESIZE_MODES),
    ("train", "--scheduler", SCHEDULERS),
    ("train", "--select-metric", EPOCH_METRIC_NAMES),
    ("train", "--data-pipeline", DATA_PIPELINES),
    ("train", "--pretrained", PRETRAINED),
    ("train", "--head", HEADS),
    ("train", "--init", INITS),
    ("train", "--uncertain", UNCERTAIN),
    ("test", "--split", list(SPLIT_ALIASES)),
    ("interpret", "--split", list(SPLIT_ALIASES)),
    ("interpret", "--target", TARGETS),
    ("search", "--dataset", _names("dataset")),
    ("search", "--model", _names("model")),
    ("search", "--metric", EPOCH_METRIC_NAMES),
    ("search", "--mode", MODES),
    ("promote", "--dataset", _names("dataset")),
    ("promote", "--metric", EPOCH_METRIC_NAMES),
    ("promote", "--mode", MODES),
    ("figures", "--saliency-maps", ["ALL", *(m.upper() for m in _names("explanation method"))]),
    ("compare", "--cases", CASES),
    ("models", "--head", HEADS),
    ("data check", "--dataset", _names("dataset")),
    ("data prepare", "--uncertain", UNCERTAIN),
]


@pytest.mark.parametrize(("command", "option", "values"), FIXED, ids=[f"{c}{o}" for c, o, _ in FIXED])
def test_help_lists_the_choices_of_every_fixed_set(cli, monkeypatch, command, option, values):
    monkeypatch.setenv("COLUMNS", "600")  # rich wraps the metavar column otherwise
    out = cli([*command.split(), "--help"]).output
    line = next(ln for ln in out.splitlines() if ln.lstrip("│ *").split(" ")[0].split(",")[0] == option)
    assert "[" + "|".join(values) + "]" in line, line


def test_shell_completion_is_installable_and_offers_the_choices():
    runner = CliRunner()
    assert "--install-completion" in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="medattn")
    assert script.exit_code == 0 and "_MEDATTN_COMPLETE=complete_bash" in script.output
    words = {"_MEDATTN_COMPLETE": "complete_bash", "COMP_WORDS": "medattn train --model se_", "COMP_CWORD": "3"}
    offered = runner.invoke(app, [], env=words, prog_name="medattn").output.split()
    assert offered == ["se_densenet121", "se_resnet50"]


def test_choices_do_not_refuse_the_seed_spellings(mlflow_store, cli, one_error_line):
    """The listed names are help, not a gate: aliases pass through, typos get 'did you mean'."""
    one_error_line(cli(["test", "--run-id", "0" * 32, "--split", "Validation"], exit_code=2), "does not exist")
    one_error_line(cli(["test", "--run-id", "0" * 32, "--split", "holdout"], exit_code=2), "unknown split 'holdout'")


def test_quiet_silences_the_progress_bars(mlflow_store, train_tiny, cli, monkeypatch):
    source = train_tiny().run_id
    loud = cli(["test", "--run-id", source, "--n-boot", "5"]).output
    assert "test test" in loud and "%|" in loud  # the evaluation bar (tqdm writes to stderr)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    quiet = cli(["test", "--run-id", source, "--n-boot", "5", "--quiet"]).output
    assert "%|" not in quiet and "Logged test run" in quiet
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # download bars back on after the command
