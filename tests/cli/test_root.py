"""The root ``medattn`` group: it answers ``--help`` and shell completion without importing the
library (completion runs the program on every TAB), and it lists each command with its own summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medattn.cli import COMMANDS, load_command

HEAVY = ("torch", "mlflow", "timm", "torchvision", "captum")

# Runs in a fresh interpreter: prints which heavy packages are loaded after the given statement.
PROBE = """
import json, sys
{statement}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _run(statement: str) -> tuple[str, list[str]]:
    """What ``statement`` printed, and the heavy packages loaded after it."""
    code = PROBE.format(statement=statement, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    *printed, loaded = out.stdout.strip().splitlines()
    return "\n".join(printed), json.loads(loaded)


def test_import_medattn_cli_loads_no_heavy_package():
    assert _run("import medattn.cli")[1] == []


def test_root_help_and_command_name_completion_load_no_heavy_package():
    help_run = (
        "from medattn.cli import app\ntry:\n    app(['--help'], prog_name='medattn')\nexcept SystemExit:\n    pass"
    )
    printed, loaded = _run(help_run)
    assert loaded == [] and all(name in printed for name in COMMANDS)
    complete = (
        "import os\nos.environ.update(_MEDATTN_COMPLETE='complete_bash', COMP_WORDS='medattn tr', COMP_CWORD='1')\n"
        "from medattn.cli import app\n"
        "try:\n    app([], prog_name='medattn')\nexcept SystemExit:\n    pass"
    )
    assert _run(complete) == ("train", [])


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listed_summary_is_the_commands_own_first_line(name):
    help_text = " ".join((load_command(name).help or "").split())
    assert help_text.startswith(" ".join(COMMANDS[name].split())), name


def test_train_help_loads_torch_at_most():
    """``train --help`` lists the model and data set names from their registries: torch may load for
    them, timm, torchvision, captum and MLflow not."""
    printed, loaded = _run(
        "from medattn.cli import app\ntry:\n    app(['train', '--help'], prog_name='medattn')\nexcept SystemExit:\n    pass"
    )
    assert "--model" in printed and "deit_tiny" in printed
    assert set(loaded) <= {"torch"}


def test_model_and_explainer_names_load_no_timm_torchvision_or_captum():
    statement = (
        "import medattn.models, medattn.explain\n"
        "assert 'deit_tiny' in medattn.models.MODELS.names() and 'lrp' in medattn.explain.EXPLAINERS.names()"
    )
    assert set(_run(statement)[1]) <= {"torch"}
