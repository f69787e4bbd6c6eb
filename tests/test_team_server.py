"""Team tracking: PostgreSQL + ``mlflow server`` with authentication on 127.0.0.1 (``scripts/team_server.py``).

``medattn train``, ``test`` and ``promote`` run against the server as user ``editor``; the runs and the champion alias
are read back through the REST API. Then two ``medattn search`` worker processes share one Optuna
study in the same PostgreSQL cluster, and every trial must be recorded exactly once. Skipped where
Debian's PostgreSQL server binaries are missing (``.ci/run`` installs them).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("team_server", REPO / "scripts" / "team_server.py")
team_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(team_server)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        team_server.postgres_bin_dir() is None,
        reason="PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed; "
        "apt-get install postgresql (as .ci/run does)",
    ),
]
STEP_TIMEOUT_S = 600  # generous: CI machines with 2 shared cores take minutes per step


def _env(server) -> dict[str, str]:
    """The editor's environment (the server runs MLflow's authentication app)."""
    env = dict(os.environ, **server.env("editor"), OMP_NUM_THREADS="1")
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    return env


def _medattn(args: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "medattn", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"medattn {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _rest(server, method: str, path: str, payload: dict | None = None) -> dict:
    """A REST call as the server's admin."""
    return team_server.rest(server.tracking_uri, method, path, payload, auth=("admin", server.passwords["admin"]))


def _run_id(stdout: str) -> str:
    line = [ln for ln in stdout.splitlines() if ln.startswith("Logged ")][-1]
    return line.split(" run ")[1].split()[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The stack, started once for this module and always stopped."""
    ts = team_server.TeamServer(tmp_path_factory.mktemp("team") / "stack", postgres=True)
    with ts:
        yield ts


def test_train_test_promote_read_back_through_rest(server, demo_dir, tmp_path, tiny_args):
    env = _env(server)
    out = _medattn(
        [
            "train",
            "--dataset",
            "demo",
            "--data-dir",
            str(demo_dir),
            "--experiment",
            "medattn-demo",
            *tiny_args,
            "--epochs",
            "1",
        ],
        env,
        tmp_path,
    )
    train_id = _run_id(out)
    assert server.tracking_uri in out
    test_id = _run_id(_medattn(["test", "--run-id", train_id, "--n-boot", "20"], env, tmp_path))
    out = _medattn(["promote", "--experiment", "medattn-demo"], env, tmp_path)
    assert "Set alias 'champion'" in out

    exp = _rest(server, "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=medattn-demo")["experiment"]
    runs = _rest(
        server,
        "POST",
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [exp["experiment_id"]], "max_results": 50},
    )["runs"]
    by_id = {r["info"]["run_id"]: r for r in runs}
    assert {train_id, test_id} <= set(by_id)
    for rid in (train_id, test_id):
        assert by_id[rid]["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in by_id[test_id]["data"]["tags"]}
    assert tags["medattn.source_run"] == train_id and tags["medattn.kind"] == "test"
    metrics = {m["key"] for m in by_id[train_id]["data"]["metrics"]}
    assert {"val_loss", "val_auc", "train_loss"} <= metrics
    assert "test_auc" in {m["key"] for m in by_id[test_id]["data"]["metrics"]}

    alias = _rest(server, "GET", "/api/2.0/mlflow/registered-models/alias?name=medattn-demo&alias=champion")
    assert alias["model_version"]["run_id"] == train_id
    assert "champion" in alias["model_version"].get("aliases", ["champion"])

    # the artifacts went through the server to its artifact destination, not to a local folder
    arts = _rest(server, "GET", f"/api/2.0/mlflow/artifacts/list?run_id={train_id}&path=checkpoints")
    assert {f["path"] for f in arts["files"]} >= {"checkpoints/last.pt"}  # best.pt became the model (storage policy)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_two_search_workers_share_one_postgres_study(server, demo_dir, tmp_path):
    import optuna

    env = _env(server)
    args = [
        "search",
        "--dataset",
        "demo",
        "--model",
        "deit_tiny",
        "--data-dir",
        str(demo_dir),
        "--n-trials",
        "2",
        "--epochs",
        "1",
        "--img-size",
        "32",
        "--batch-sizes",
        "8,16",
        "--lr-min",
        "1e-4",
        "--lr-max",
        "1e-2",
        "--storage",
        server.optuna_uri,
        "--study-name",
        "team-study",
        "--experiment",
        "medattn-search",
    ]
    procs = []
    for worker in range(2):
        log = (tmp_path / f"worker{worker}.log").open("wb")
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, "-m", "medattn", *args, "--seed", str(worker)],
                    env=env,
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    try:
        for proc, _log in procs:
            proc.wait(timeout=STEP_TIMEOUT_S)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            log.close()
    for worker, (proc, _) in enumerate(procs):
        assert proc.returncode == 0, (tmp_path / f"worker{worker}.log").read_text()[-3000:]

    study = optuna.load_study(study_name="team-study", storage=server.optuna_uri)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}

    exp = _rest(server, "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=medattn-search")["experiment"]
    runs = _rest(
        server,
        "POST",
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [exp["experiment_id"]], "max_results": 50},
    )["runs"]
    assert all(r["info"]["status"] != "RUNNING" for r in runs)
    children = [r for r in runs if any(t["key"] == "mlflow.parentRunId" for t in r["data"]["tags"])]
    assert len(children) == 4
