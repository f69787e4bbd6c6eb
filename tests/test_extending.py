"""The two example files of ``docs/extending.md`` work as the page says: copied into a copy of the
package, and nothing else, they are found by the registries (before ``medattn.models`` is imported
by anything else), listed and offered by the CLI, and pass the registry-parametrized tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
REGISTRY_TESTS = ["tests/models/test_models_registry.py", "tests/explain/test_explain_registry.py"]

# Runs in the subprocess, with the package copy first on the path.
SCRIPT = """
import os
import sys
import medattn
from medattn import config

assert medattn.__file__.startswith(os.environ["MEDATTN_COPY"]), medattn.__file__
from medattn.errors import ConfigError

assert "medattn.models" not in sys.modules
assert config.build_train_config({"model": "SCSEResNet50"}).model.model == "scse_resnet50"
try:
    config.build_train_config({"model": "nonsense_net"})
except ConfigError:
    pass
else:
    sys.exit("nonsense_net was accepted")

from typer.testing import CliRunner
from medattn.cli import app

out = CliRunner().invoke(app, ["models"], env={"COLUMNS": "400"}).output
assert "scse_resnet50" in out and "scse_densenet121" in out, out
out = CliRunner().invoke(app, ["interpret", "--help"], env={"COLUMNS": "400"}).output
assert "saliency" in out, out

import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _example_files() -> dict[str, str]:
    """``path in the repository -> source`` of every code block of the page that starts with its path."""
    blocks = re.findall(r"```python\n(# (medattn/[\w/]+\.py)\n.*?)```", DOC.read_text(), flags=re.S)
    return {path: source for source, path in blocks}


def test_the_page_holds_one_model_file_and_one_explainer_file() -> None:
    paths = sorted(_example_files())
    assert [p.split("/")[1] for p in paths] == ["explain", "models"], paths
    assert not any((REPO / p).exists() for p in paths), "the examples must be new files"


def test_copying_the_examples_in_is_enough(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(REPO / "medattn", copy / "medattn", ignore=shutil.ignore_patterns("__pycache__"))
    for path, source in _example_files().items():
        (copy / path).write_text(source)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(copy), os.environ.get("PYTHONPATH", "")]),
        "MEDATTN_COPY": str(copy),
    }
    # absolute test paths and another working directory: Python puts the working directory first
    # on sys.path, which would import the repository's package instead of the copy
    # (the registry tests use no shared fixture: --noconftest spares the subprocess MLflow's import)
    args = [*(str(REPO / t) for t in REGISTRY_TESTS), "-k", "scse or saliency", "-v", "--noconftest"]
    args += ["-p", "no:xdist", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "pytest")]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    passed = [line for line in output.splitlines() if " PASSED" in line]
    for name, least in (("scse_resnet50", 4), ("scse_densenet121", 4), ("saliency", 3)):
        assert sum(f"[{name}]" in line for line in passed) >= least, output[-4000:]
