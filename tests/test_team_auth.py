"""A team server that lets in only the team (``scripts/team_server.py``, MLflow's basic-auth app).

One ``mlflow server --app-name basic-auth`` on 127.0.0.1 (SQLite stores, so no PostgreSQL is
needed) with the users the script creates: ``editor`` (EDIT) and ``reader`` (READ) on experiment
and registered model ``medattn-demo``. Unauthenticated REST calls get 401; the editor trains and
promotes; the reader's promote and train and a wrong password end in one sentence with exit 2 and
leave no run RUNNING; no password appears in any param, tag, text artifact or command output.
Skipped only where the ``mlflow[auth]`` extra (Flask-WTF) is not installed.
"""

from __future__ import annotations

import importlib.util
import urllib.error
from pathlib import Path

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("team_server", REPO / "scripts" / "team_server.py")
team_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(team_server)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("flask_wtf") is None,
        reason="MLflow's authentication app needs the mlflow[auth] extra: pip install 'mlflow[auth]'",
    ),
]
TEXT_SUFFIXES = {".yaml", ".yml", ".csv", ".txt", ".json", ".md", ".py", ""}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The authenticated server with its users, started once for this module and always stopped."""
    with team_server.TeamServer(tmp_path_factory.mktemp("team-auth") / "stack", postgres=False) as ts:
        yield ts


@pytest.fixture
def as_user(server, monkeypatch, tmp_path):
    """``as_user(name, password=None)``: the environment of that user (a fresh working directory)."""
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)

    def switch(user: str | None, password: str | None = None) -> None:
        for key, value in server.env(user).items():
            monkeypatch.setenv(key, value)
        if user is None:
            monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
            monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        elif password is not None:
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        mlflow.set_tracking_uri(server.tracking_uri)

    return switch


def _admin(server) -> tuple[str, str]:
    return "admin", server.passwords["admin"]


def _alias_version(server, alias: str = "champion") -> str:
    answer = team_server.rest(
        server.tracking_uri,
        "GET",
        f"/api/2.0/mlflow/registered-models/alias?name=medattn-demo&alias={alias}",
        auth=_admin(server),
    )
    return answer["model_version"]["version"]


def _all_runs(server) -> list[dict]:
    exps = team_server.rest(
        server.tracking_uri, "POST", "/api/2.0/mlflow/experiments/search", {"max_results": 100}, auth=_admin(server)
    )["experiments"]
    return team_server.rest(
        server.tracking_uri,
        "POST",
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [e["experiment_id"] for e in exps], "max_results": 1000},
        auth=_admin(server),
    ).get("runs", [])


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 5}),
        ("GET", "/api/2.0/mlflow/registered-models/get?name=medattn-demo", None),
        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "0"}),
    ],
)
def test_unauthenticated_rest_gets_401(server, method, path, payload):
    with pytest.raises(urllib.error.HTTPError) as info:
        team_server.rest(server.tracking_uri, method, path, payload)
    assert info.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as info:
        team_server.rest(server.tracking_uri, method, path, payload, auth=("editor", "not-the-password"))
    assert info.value.code == 401


def test_editor_trains_and_promotes_reader_cannot(server, as_user, cli, one_error_line, demo_dir, tiny_args):
    outputs: list[str] = []
    train_args = ["train", "--dataset", "demo", "--data-dir", demo_dir, *tiny_args, "--epochs", "1"]
    train_args += ["--experiment", "medattn-demo"]
    as_user("editor")
    train = cli(train_args)
    outputs.append(train.output)
    assert train.run_id and server.tracking_uri in train.output
    promoted = cli(["promote", "--experiment", "medattn-demo"])
    outputs.append(promoted.output)
    assert "Set alias 'champion'" in promoted.output and _alias_version(server) == "1"

    # the editor points champion at a second version of the same model, by hand
    client = mlflow.MlflowClient()
    model_id = client.get_run(train.run_id).data.tags["medattn.logged_model_id"]
    v2 = mlflow.register_model(f"models:/{model_id}", "medattn-demo").version
    client.set_registered_model_alias("medattn-demo", "champion", v2)
    assert _alias_version(server) == str(v2) == "2"

    # read-only: promote would move champion back to version 1 and is refused; so is training there
    as_user("reader")
    res = cli(["promote", "--experiment", "medattn-demo"], exit_code=None)
    outputs.append(res.output)
    one_error_line(res, "user 'reader' may not move an alias of a registered model", server.tracking_uri)
    assert _alias_version(server) == "2"
    res = cli(train_args, exit_code=None)
    outputs.append(res.output)
    one_error_line(res, "user 'reader' may not create runs in this experiment")

    # a wrong password, and no login at all
    as_user("editor", password="wrong-password")
    res = cli(train_args, exit_code=None)
    outputs.append(res.output)
    one_error_line(res, "refused the login of user 'editor' (wrong user name or password)")
    as_user(None)
    res = cli(["promote", "--experiment", "medattn-demo"], exit_code=None)
    outputs.append(res.output)
    one_error_line(res, "requires a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")

    runs = _all_runs(server)
    assert [r["info"]["run_id"] for r in runs] == [train.run_id]
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}
    secrets = list(server.passwords.values())
    for text in outputs:
        assert not any(s in text for s in secrets)


def _texts(folder: Path) -> list[tuple[Path, str]]:
    out = []
    for path in folder.rglob("*"):
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name == "MLmodel"):
            out.append((path, path.read_text(errors="replace")))
    return out


def test_no_password_in_params_tags_or_text_artifacts(server, as_user, tmp_path):
    """Runs after the test above (same module, same server): scan everything its runs logged."""
    runs = _all_runs(server)
    if not runs:
        pytest.skip("needs the runs of test_editor_trains_and_promotes_reader_cannot")
    secrets = list(server.passwords.values())
    as_user("admin")
    scanned = 0
    for run in runs:
        data = run["data"]
        values = [p["value"] for p in data.get("params", [])] + [t["value"] for t in data.get("tags", [])]
        assert values and not any(s in v for v in values for s in secrets)
        local = Path(mlflow.artifacts.download_artifacts(run_id=run["info"]["run_id"], dst_path=str(tmp_path / "a")))
        model_ids = [t["value"] for t in data["tags"] if t["key"] == "medattn.logged_model_id"]
        for model_id in model_ids:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}", dst_path=str(tmp_path / model_id))
        for path, text in _texts(local) + _texts(tmp_path):
            scanned += 1
            assert not any(s in text for s in secrets), path
    assert scanned >= 5  # config.yaml, splits, model summary, MLmodel, requirements at least
    # ... and every byte the server keeps: stores (the auth store holds hashes), auth config, state, log
    files = [f for f in server.root.rglob("*") if f.is_file()]
    assert {"basic_auth.ini", "mlflow_server.log", "mlflow.db", "mlflow_auth.db"} <= {f.name for f in files}
    for path in files:
        blob = path.read_bytes()
        assert not any(s.encode() in blob for s in secrets), path
