"""``mlflow run`` as its users type it: every entry point of the MLproject with
the spellings the CLI accepts (``model=SEResNet50``, ``lr=1e-3``, ``split=validation``, the
default relative search storage) and ``model_uri=models:/…@champion``, without
``--experiment-name``, so that ``promote`` and ``compare`` must find the project's runs in the
Default experiment.

The project files are copied into ``tmp_path`` so that the relative paths of the MLproject's
defaults (``demo_data``, ``sqlite:///optuna.db``) land there; ``python -m medattn`` comes from the
venv first on PATH, as the ``. .venv/bin/activate`` of ``docs/mlflow.md`` arranges.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import mlflow
import pytest
import yaml

from medattn import tracking
from medattn.data import write_synthetic

REPO = Path(__file__).resolve().parents[1]
CHAMPION = "models:/medattn-demo@champion"


@pytest.fixture
def project(mlflow_store, tmp_path) -> Path:
    """A copy of the MLproject (and its conda.yaml) with a tiny demo set in its default ``demo_data``."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ("MLproject", "conda.yaml"):
        shutil.copy(REPO / name, folder / name)
    write_synthetic(folder / "demo_data", n=40, img_size=32, seed=0)
    return folder


def mlflow_run(project: Path, entry_point: str, **params: str) -> None:
    """``mlflow run PROJECT -e ENTRY_POINT --env-manager local -P k=v ...``, which must succeed."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "mlflow", "run", str(project), "-e", entry_point, "--env-manager", "local"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{entry_point}: {proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def project_run(entry_point: str):
    """The newest run ``mlflow run -e ENTRY_POINT`` created."""
    found = tracking.search_runs(None, f"tags.`mlflow.project.entryPoint` = '{entry_point}'")
    assert found, entry_point
    return found[0]


@pytest.mark.slow
def test_every_entry_point_with_the_spellings_users_type(project, cli, monkeypatch):
    tiny = {"epochs": "1", "img_size": "32", "batch_size": "8"}
    mlflow_run(project, "train", model="SEResNet50", lr="1e-3", **tiny)
    train = project_run("train")
    params = train.data.params
    assert (params["model"], params["resolved.model"]) == ("SEResNet50", "se_resnet50")
    assert (params["lr"], params["resolved.lr"]) == ("1e-3", "0.001")
    assert train.data.tags[tracking.TAG_KIND] == "train" and train.info.status == "FINISHED"
    assert train.info.experiment_id == "0"  # no --experiment-name: MLflow's Default experiment
    assert params["epochs"] == "1" and math.isfinite(train.data.metrics["val_loss"])  # extra -P options reach it

    mlflow_run(project, "promote")  # finds the run in the project's experiment, not in medattn-demo
    assert tracking.alias_target("medattn-demo", "champion")[1] == train.info.run_id

    mlflow_run(project, "test", model_uri=CHAMPION, split="validation", n_boot="20")
    test = project_run("test")
    assert (test.data.params["split"], test.data.params["resolved.split"]) == ("validation", "val")
    assert test.data.tags[tracking.TAG_SOURCE_RUN] == train.info.run_id
    assert test.data.params["model_uri"] == CHAMPION

    mlflow_run(project, "interpret", model_uri=CHAMPION, split="validation", max_images="4", steps="2")
    interpret = project_run("interpret")
    assert interpret.data.tags[tracking.TAG_KIND] == "interpret"
    assert interpret.data.tags[tracking.TAG_SOURCE_RUN] == train.info.run_id
    assert math.isfinite(interpret.data.metrics["xai_deeplift_morf_auc"])

    mlflow_run(project, "figures", model_uri=CHAMPION, max_images="1")
    assert project_run("figures").data.tags[tracking.TAG_SOURCE_RUN] == interpret.info.run_id
    originals = mlflow.MlflowClient().list_artifacts(interpret.info.run_id, tracking.ORIGINAL_DIR)
    assert len(originals) == 1  # -P max_images=1 of the 2 explained images

    monkeypatch.chdir(project)  # compare reads test runs of the test split: one more, in-process
    cli(["test", "--run-id", train.info.run_id, "--n-boot", "20", "--quiet"])
    mlflow_run(project, "compare")
    compare = project_run("compare")
    assert compare.data.tags[tracking.TAG_KIND] == "compare" and compare.info.status == "FINISHED"
    assert compare.info.experiment_id == "0"

    # a relative sqlite path, spelled as docs/mlflow.md does (the MLproject default "" means $OPTUNA_STORAGE, else this)
    mlflow_run(
        project,
        "search",
        model="SEResNet50",
        n_trials="1",
        batch_sizes="8",
        epochs="1",
        img_size="32",
        storage="sqlite:///optuna.db",
    )
    search = project_run("search")
    assert search.data.params["storage"] == "sqlite:///optuna.db"  # as the user spelled it
    assert search.data.params["resolved.storage"] == f"sqlite:///{(project / 'optuna.db').resolve()}"
    assert (project / "optuna.db").is_file() and search.info.status == "FINISHED"

    statuses = {r.info.status for r in tracking.search_runs(None, "")}
    assert statuses == {"FINISHED"}, statuses
    assert not mlflow.active_run()


def test_mlproject_and_docs_say_how_to_run_it():
    """Entry points take run_id or model_uri; ``docs/mlflow.md`` activates the venv (MLflow starts
    ``python`` from PATH) and names the experiment in every ``mlflow run`` example, and
    ``docs/performance.md`` installs the ``gpu`` extra that GPU system metrics need."""
    spec = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    for entry in ("test", "interpret", "figures"):
        params = spec[entry]["parameters"]
        assert params["run_id"]["default"] == params["model_uri"]["default"] == "", entry
        assert "--model-uri {model_uri}" in spec[entry]["command"], entry
    for entry in ("promote", "compare"):
        assert spec[entry]["parameters"]["experiment"]["default"] == "", entry
    lines = (REPO / "docs" / "mlflow.md").read_text().splitlines()
    runs = [i for i, ln in enumerate(lines) if ln.startswith("mlflow run ")]
    assert len(runs) >= 8
    assert all("--experiment-name" in lines[i] for i in runs), [lines[i] for i in runs]
    assert ". .venv/bin/activate" in lines[runs[0] - 1]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("nvidia-ml-py") for req in extras["gpu"])
    assert "pip install -e '.[gpu]'" in (REPO / "docs" / "performance.md").read_text()
