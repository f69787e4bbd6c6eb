"""Team tracking: PostgreSQL + ``mlflow server`` with authentication on 127.0.0.1 (``scripts/team_server.py``).

``medattn train``, ``test`` and ``promote`` run against the server as user ``editor``; the runs and the champion alias
are read back through the REST API. Then two ``medattn search`` worker processes share one Optuna
study in the same PostgreSQL cluster, and every trial must be recorded exactly once. The stack's own
security: no local user (``nobody``) reaches PostgreSQL without a password, Optuna's role reaches only
its database, the passwords stay in the private state, ``start`` never takes over someone's folder,
and a database URI's password is never logged or printed. Skipped where Debian's PostgreSQL server
binaries are missing (``.ci/run`` installs them).
"""

from __future__ import annotations

import importlib.util
import json
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


# ---- the stack's own security -------------------------------------------------------------------------
def _psql(server, role: str, database: str, host: str, password: str | None = None) -> subprocess.CompletedProcess:
    """``psql`` as another local user (``nobody`` when we are root, else ourselves) with ``role``'s password or none."""
    as_other = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    cmd = [*as_other, str(server.bin / "psql"), "-X", "-w", "-h", host, "-p", str(server.pg_port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(
        [*cmd, "-U", role, "-d", database, "-tAc", "select current_user"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_local_non_owner_cannot_connect_without_a_password(server):
    for host in (team_server.HOST, str(server.socket_dir)):  # TCP and the Unix socket
        for role in ("postgres", "mlflow", "optuna"):
            for database in ("mlflow", "optuna", "postgres"):
                proc = _psql(server, role, database, host)
                assert proc.returncode != 0 and "password" in proc.stderr, (host, role, database, proc.stdout)
        proc = _psql(server, "postgres", "mlflow", host, password="guessed")
        assert proc.returncode != 0 and "password authentication failed" in proc.stderr
    # Optuna's role reaches its own database, and no other
    optuna_pw = server.pg_passwords["optuna"]
    ok = _psql(server, "optuna", "optuna", team_server.HOST, optuna_pw)
    assert ok.returncode == 0 and ok.stdout.strip() == "optuna", ok.stderr
    for database in ("mlflow", "mlflow_auth", "postgres"):
        proc = _psql(server, "optuna", database, team_server.HOST, optuna_pw)
        assert proc.returncode != 0 and "permission denied" in proc.stderr, (database, proc.stderr)


def test_the_stack_keeps_its_passwords_private(server):
    secrets_file = server.root / team_server.SECRETS_FILE
    assert secrets_file.stat().st_mode & 0o777 == 0o600 and server.root.stat().st_mode & 0o777 == 0o700
    assert json.loads(secrets_file.read_text())["postgres_roles"] == server.pg_passwords
    passwords = list(server.pg_passwords.values())
    state = (server.root / team_server.STATE_FILE).read_text()
    cmdline = Path(f"/proc/{server.mlflow_pid}/cmdline").read_bytes().decode()
    ini = (server.root / "basic_auth.ini").read_text()
    for text in (state, cmdline, ini):  # other local users can read a command line; the state is not private
        assert not any(pw in text for pw in passwords)
    # readers get no Optuna access; the editor gets Optuna's own role, not the superuser
    assert "OPTUNA_STORAGE" not in server.env("reader")
    assert server.env("editor")["OPTUNA_STORAGE"].startswith("postgresql+psycopg2://optuna:")


def test_start_refuses_a_root_it_did_not_create(tmp_path):
    root = tmp_path / "someones-folder"
    root.mkdir()
    (root / "thesis.tex").write_text("years of work")
    assert team_server.main(["start", "--root", str(root), "--sqlite"]) == 2
    assert (root / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in root.iterdir()) == ["thesis.tex"]


def test_a_database_password_is_never_logged_or_printed(server, demo_dir, tmp_path, tiny_args):
    """A tracking URI straight to the database, password included: params, tags, artifacts and output stay clean."""
    import mlflow

    password = server.pg_passwords["mlflow"]
    uri = f"postgresql+psycopg2://mlflow:{password}@{team_server.HOST}:{server.pg_port}/mlflow"
    env = {k: v for k, v in _env(server).items() if not k.startswith(("MLFLOW_TRACKING", "OPTUNA"))}
    args = ["train", "--dataset", "demo", "--data-dir", str(demo_dir), *tiny_args, "--epochs", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "medattn", *args, "--experiment", "direct-db", "--tracking-uri", uri],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert password not in proc.stdout + proc.stderr and "mlflow:***@" in proc.stdout
    run_id = _run_id(proc.stdout)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        data = mlflow.get_run(run_id).data
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "back")))
    finally:
        mlflow.set_tracking_uri(previous)
    assert data.params["tracking_uri"] == uri.replace(password, "***")
    assert not any(password in v for v in [*data.params.values(), *data.tags.values()])
    texts = [p for p in local.rglob("*") if p.is_file() and p.suffix in {".yaml", ".csv", ".txt", ".json"}]
    assert any(p.name == "config.yaml" for p in texts)
    assert not [p for p in texts if password in p.read_text(errors="replace")]
