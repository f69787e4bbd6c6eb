"""Every command's ``--help`` and shell completion answer without the heavy libraries.

Shell completion runs the program on every TAB and ``--help`` is how a newcomer meets a command, so
both must answer in about a second or two: torch may load (the model registry's blocks are torch
modules), but not pandas, MLflow, timm, torchvision, captum, matplotlib, scikit-learn and the rest,
which load only when a command runs. One fresh interpreter runs every command's ``--help`` (and the
``data`` subcommands', and a few completions) through click's test runner and reports which heavy
packages each one loaded first; a package loaded by an earlier command is charged to that one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medattn.cli import COMMANDS

#: Never loaded by ``--help`` or completion (torch may be: the model registry needs it).
HEAVY = (
    "pandas",
    "optuna",
    "mlflow",
    "timm",
    "torchvision",
    "captum",
    "pytorch_grad_cam",
    "quantus",
    "submitit",
    "matplotlib",
    "sklearn",
    "scipy.stats",
    "scipy.optimize",
)

#: Completions to try (the words typed so far, the last one incomplete) and a word each must offer.
COMPLETIONS = {
    "medattn tr": "train",
    "medattn train --model deit": "deit_tiny",
    "medattn test --split val": "val",
    "medattn interpret --split te": "test",
    "medattn promote --dataset apt": "aptos2019",
    "medattn compare --metric test_a": "test_auc",
    "medattn data ": "synth",
}

# Runs in a fresh interpreter; prints one JSON object: what each case printed and loaded first.
RUNNER = """
import json, sys
from typer.testing import CliRunner
from medattn.cli import app, load_command

heavy = {heavy!r}
runner = CliRunner()
report = {{}}

def run(case, args, env=None):
    before = {{m for m in heavy if m in sys.modules}}
    result = runner.invoke(app, args, prog_name="medattn", env=env)
    loaded = sorted(m for m in heavy if m in sys.modules and m not in before)
    report[case] = {{"exit": result.exit_code, "output": result.output, "loaded": loaded}}

for name in {commands!r}:
    run(name + " --help", [name, "--help"])
for sub in load_command("data").list_commands(None):
    run("data " + sub + " --help", ["data", sub, "--help"])
for words in {completions!r}:
    env = {{"_MEDATTN_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}}
    run("complete: " + words, [], env)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report() -> dict[str, dict]:
    """``case -> {exit, output, loaded}`` from one fresh interpreter."""
    code = RUNNER.format(heavy=HEAVY, commands=list(COMMANDS), completions=list(COMPLETIONS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_help_and_completion_answers(report):
    assert {f"{name} --help" for name in COMMANDS} <= set(report)
    assert {"data synth --help", "data prepare --help", "data check --help"} <= set(report)
    failed = {case: r["output"][-300:] for case, r in report.items() if r["exit"] != 0}
    assert failed == {}
    helps = {case: r["output"] for case, r in report.items() if case.endswith("--help")}
    assert all("Usage: medattn" in text and "--help" in text for text in helps.values()), helps
    for words, expected in COMPLETIONS.items():
        assert expected in report[f"complete: {words}"]["output"].split(), words


def test_no_help_or_completion_loads_a_heavy_package(report):
    loaded = {case: r["loaded"] for case, r in report.items() if r["loaded"]}
    assert loaded == {}
