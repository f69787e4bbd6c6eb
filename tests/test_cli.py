"""The CLI: underscore spellings, exit codes, ``--help`` of every option, and bad input across
commands (one ``Error:`` sentence, exit code 2, no traceback, no new run).

Bad input of one stage is tested beside it as well (``tests/stages/test_train.py``,
``test_evaluate.py``, ``test_search.py``, ...); ``docs/troubleshooting.md`` lists all of it.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import typer

from medattn import api, tracking
from medattn.cli import app
from medattn.errors import ConfigError

# "{tiny}" in a case's argv stands for the tiny training options (conftest's ``tiny_args``) and one epoch.
TINY = "{tiny}"


@dataclass
class Setup:
    """What a case builder may use to set up its mistake."""

    demo_dir: Path
    tmp_path: Path
    train_tiny: Callable
    tiny_args: list[str]

    def expand(self, args: list[str]) -> list[str]:
        """``{demo}`` becomes the demo data folder, ``{tiny}`` the tiny training options."""
        out = []
        for a in args:
            out += [*self.tiny_args, "--epochs", "1"] if a == TINY else [a.replace("{demo}", str(self.demo_dir))]
        return out


def _no_column_dir(s: Setup) -> list[str]:
    """A copy of the demo set whose labels.csv lacks the ``label`` column."""
    bad = s.tmp_path / "no_label_column"
    shutil.copytree(s.demo_dir, bad)
    frame = pd.read_csv(bad / "labels.csv")
    frame.drop(columns=["label"]).to_csv(bad / "labels.csv", index=False)
    return s.expand(["train", "--dataset", "demo", "--data-dir", str(bad), TINY])


def _other_architecture(s: Setup) -> list[str]:
    """``train --ckpt`` a deit_tiny checkpoint while asking for densenet121."""
    res = s.train_tiny()
    path = tracking.download(res.run_id, tracking.LAST_CKPT, s.tmp_path / "dl")
    return [
        "train",
        "--dataset",
        "demo",
        "--data-dir",
        str(s.demo_dir),
        "--ckpt",
        str(path),
        "--model",
        "densenet121",
        "--img-size",
        "32",
        "--batch-size",
        "16",
        "--no-system-metrics",
        "--epochs",
        "2",
        "--pretrained",
        "none",
    ]


def _resume_not_longer(s: Setup) -> list[str]:
    """``train --resume`` a finished one-epoch run with ``--epochs 1``."""
    res = s.train_tiny()
    return ["train", "--resume", res.run_id, "--epochs", "1"]


def _promote_empty(s: Setup) -> list[str]:
    """``promote`` an experiment that exists but holds no finished training run (only a failed one)."""
    exp = mlflow.create_experiment("medattn-empty", artifact_location=(s.tmp_path / "mlruns" / "empty").as_uri())
    with mlflow.start_run(experiment_id=exp, tags={tracking.TAG_KIND: "train"}):
        pass
    mlflow.MlflowClient().set_terminated(mlflow.last_active_run().info.run_id, "FAILED")
    return ["promote", "--experiment", "medattn-empty"]


def _static(args: list[str]) -> Callable[[Setup], list[str]]:
    """An argv that needs no setup."""
    return lambda s: s.expand(args)


# (id, build(Setup) -> argv (may set up runs first), needle expected in the one Error: line)
CASES = [
    (
        "deit-img-size",
        _static(["train", "--dataset", "demo", "--data-dir", "{demo}", TINY, "--img-size", "50"]),
        "multiple of its patch size 16",
    ),
    ("ckpt-other-architecture", _other_architecture, "model='deit_tiny'"),
    (
        "unreachable-tracking-uri",
        _static(["train", "--dataset", "demo", "--data-dir", "{demo}", TINY, "--tracking-uri", "http://127.0.0.1:9"]),
        "cannot reach the MLflow tracking server 'http://127.0.0.1:9'",
    ),
    (
        "batch-not-divisible-by-nproc",
        _static(["train", "--dataset", "demo", "--data-dir", "{demo}", TINY, "--batch-size", "15", "--nproc", "2"]),
        "must split evenly over 2 processes",
    ),
    (
        "split-holdout",
        _static(["test", "--run-id", "0123456789abcdef", "--split", "holdout"]),
        "unknown split 'holdout'",
    ),
    (
        "interpret-target",
        _static(["interpret", "--run-id", "0123456789abcdef", "--target", "foo"]),
        "--target must be label or pred",
    ),
    (
        "n-boot-negative",
        _static(["test", "--run-id", "0123456789abcdef", "--n-boot", "-1"]),
        "--n-boot must be 0 or more",
    ),
    (
        "cuda-without-gpu",
        _static(["train", "--dataset", "demo", "--data-dir", "{demo}", TINY, "--device", "cuda"]),
        "has no CUDA GPU",
    ),
    ("csv-missing-column", _no_column_dir, "lacks the required column(s) 'label'"),
    ("promote-no-finished-run", _promote_empty, "no FINISHED training run"),
    ("resume-epochs-not-larger", _resume_not_longer, "pass --epochs larger than 1"),
]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so --device cuda is no mistake")


@pytest.mark.parametrize(
    "build, needle",
    [pytest.param(b, n, id=i, marks=[NO_CUDA] if i == "cuda-without-gpu" else []) for i, b, n in CASES],
)
def test_bad_input_is_one_sentence_and_exit_2(
    mlflow_store, demo_dir, tmp_path, train_tiny, tiny_args, cli, one_error_line, runs_in_store, build, needle
):
    """Each mistake: exit 2, exactly one ``Error:`` line holding the needle, no traceback, no new run."""
    args = build(Setup(demo_dir, tmp_path, train_tiny, tiny_args))
    before = runs_in_store()
    one_error_line(cli(args, exit_code=2), needle)
    mlflow.set_tracking_uri(mlflow_store)
    assert runs_in_store() == before, "bad input must not start a run, nor leave one FAILED"


def test_unreachable_tracking_server_is_probed_once_with_a_short_timeout(
    mlflow_store, monkeypatch, cli, one_error_line
):
    """MLflow retries an unreachable http server for minutes; medattn probes it once, with a short
    timeout, and gives up without ever handing the URI to MLflow's retrying client."""
    probes = []

    def refused(url, timeout=None, **kw):
        probes.append((url, timeout))
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    def never(*args, **kwargs):
        raise AssertionError("MLflow's client was asked despite the failed probe")

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    monkeypatch.setattr(mlflow.MlflowClient, "search_experiments", never)
    res = cli(["test", "--run-id", "0123456789abcdef", "--tracking-uri", "http://127.0.0.1:9"], exit_code=2)
    one_error_line(res, "cannot reach the MLflow tracking server 'http://127.0.0.1:9'", "Connection refused")
    assert probes == [("http://127.0.0.1:9/health", tracking.HTTP_PROBE_TIMEOUT_S)]
    assert tracking.HTTP_PROBE_TIMEOUT_S <= 5


class _Reached(Exception):
    """Raised by the stand-in stage: the CLI got as far as calling the library with this config."""


def _capture(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def stage(cfg, *args, **kwargs):
        raise _Reached(cfg)

    monkeypatch.setattr(api, name, stage)


def test_seed_spellings_reach_the_train_config(mlflow_store, demo_dir, cli, monkeypatch):
    """The original project's option and model spellings give the same config as the dash-case ones."""
    _capture(monkeypatch, "train")
    seed = cli(
        [
            "train",
            "--dataset",
            "demo",
            "--data_dir",
            demo_dir,
            "--model",
            "SEResNet50",
            "--batchsize",
            "8",
            "--imgsize",
            "64",
            "--classweights",
            "--num_workers",
            "0",
            "--save_freq",
            "2",
            "--epochs",
            "3",
            "--low_data_regimen",
            "--perc_train",
            "0.5",
        ],
        exit_code=1,
    )
    dash = cli(
        [
            "train",
            "--dataset",
            "demo",
            "--data-dir",
            demo_dir,
            "--model",
            "se_resnet50",
            "--batch-size",
            "8",
            "--img-size",
            "64",
            "--class-weights",
            "--num-workers",
            "0",
            "--save-freq",
            "2",
            "--epochs",
            "3",
            "--low-data-regimen",
            "--perc-train",
            "0.5",
        ],
        exit_code=1,
    )
    assert isinstance(seed.exception, _Reached), seed.output
    cfg = seed.exception.args[0]
    assert cfg == dash.exception.args[0]
    assert cfg.model.model == "se_resnet50" and cfg.data.dataset == "demo" and cfg.data.data_dir == str(demo_dir)
    assert (cfg.optim.batch_size, cfg.data.img_size, cfg.optim.epochs) == (8, 64, 3)
    assert cfg.optim.class_weights is True and cfg.tracking.save_freq == 2
    assert cfg.data.low_data_regimen is True and cfg.data.perc_train == 0.5


def test_exit_codes(mlflow_store, demo_dir, tiny_args, cli, one_error_line, monkeypatch):
    """A user's mistake raised anywhere below the CLI exits 2 with its sentence; any other failure exits 1."""

    def mistake(cfg, *args, **kwargs):
        raise ConfigError("a sentence the user can act on.")

    def bug(cfg, *args, **kwargs):
        raise RuntimeError("an internal failure")

    argv = ["train", "--dataset", "demo", "--data-dir", demo_dir, *tiny_args]
    monkeypatch.setattr(api, "train", mistake)
    assert one_error_line(cli(argv, exit_code=2), only=True) == "Error: a sentence the user can act on."
    monkeypatch.setattr(api, "train", bug)
    res = cli(argv, exit_code=1)
    assert isinstance(res.exception, RuntimeError) and str(res.exception) == "an internal failure"
    assert "Error:" not in res.output


def _commands(group, prefix: str = "") -> dict:
    """Every command of the Typer app, by its command line (``"data synth"``)."""
    out = {}
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):  # the root group loads a command's module on first use
        cmd = group.get_command(ctx, name)
        out[prefix + name] = cmd
        if hasattr(cmd, "commands"):  # a group (typer ships its own click, so no isinstance check)
            out.update(_commands(cmd, prefix + name + " "))
    return out


def _options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]


EXPECTED_COMMANDS = {
    "data",
    "data synth",
    "data prepare",
    "data check",
    "models",
    "train",
    "test",
    "interpret",
    "figures",
    "compare",
    "search",
    "promote",
    "demo",
    "grid",
    "bench",
    "calibrate",
}


def test_every_command_and_option_is_explained(cli, monkeypatch):
    """Every command has ``--help`` with every option explained."""
    monkeypatch.setenv("COLUMNS", "400")  # rich shortens option names that do not fit the terminal
    commands = _commands(typer.main.get_command(app))
    assert set(commands) == EXPECTED_COMMANDS
    assert len(_options(commands["train"])) >= 30
    for name, cmd in commands.items():
        assert (cmd.help or "").strip(), f"{name} has no help text"
        for param in _options(cmd):
            assert (param.help or "").strip(), f"{name} {param.opts[0]} has no help text"
        out = cli([*name.split(), "--help"]).output
        for param in _options(cmd):
            if not param.hidden:
                assert param.opts[0] in out, (name, param.opts[0])
