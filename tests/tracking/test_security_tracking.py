"""Files, stores and posted bytes from others cannot send the team's password elsewhere, leak it, write
outside their folders or leak the server's internals.

Each test rebuilds an attack: an experiment YAML that names a tracking server (a capture server on
127.0.0.1 must receive nothing), a database URI with a password (never in params, tags, artifacts or
output; a failed connection is one sentence), image ids that are paths (artifact names stay inside
their prefix, with a mapping file), a saliency index that points outside its prefixes (``figures``
refuses it), and a decompression bomb or junk posted to the served model (HTTP 400 with medattn's
sentence, no stack trace, no server path).
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from medattn import checkpoint as ckpt_io
from medattn import tracking
from medattn.config import load_yaml
from medattn.data.testing import write_png_bomb
from medattn.errors import ConfigError
from medattn.models import create_model

SECRET = "s3cr3t-Pa55"  # noqa: S105 - a test password that must never show up


# ---- a YAML never chooses the store -------------------------------------------------------------
class _Capture(http.server.BaseHTTPRequestHandler):
    """Records every request (path and Authorization header) and answers 200 ``{}``."""

    seen: list[tuple[str, str | None]] = []

    def _answer(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def capture_server():
    _Capture.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Capture.seen
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_a_yaml_naming_a_tracking_server_gets_no_request_and_no_password(
    mlflow_store, capture_server, demo_dir, tmp_path, monkeypatch, cli, one_error_line, runs_in_store
):
    url, seen = capture_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    evil = tmp_path / "evil.yaml"
    evil.write_text(yaml.safe_dump({"dataset": "demo", "model": "deit_tiny", "tracking_uri": url}))
    result = cli(["train", "--config", evil, "--data-dir", demo_dir, "--epochs", "1"], exit_code=2)
    one_error_line(result, str(evil), "'tracking_uri'", "--tracking-uri", "MLFLOW_TRACKING_URI")
    assert seen == []  # not one request, so no Authorization header either
    assert runs_in_store() == {}


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ({"tracking_uri": "http://x"}, ("'tracking_uri'", "--tracking-uri or MLFLOW_TRACKING_URI")),
        ({"tracking-uri": "http://x"}, ("'tracking-uri'", "--tracking-uri")),
        ({"storage": "postgresql://x/optuna"}, ("'storage'", "--storage or OPTUNA_STORAGE")),
        ({"model": "resnet50", "grid": {"tracking_uri": ["http://x"]}}, ("'tracking_uri'",)),
        ({"grid": {"storage": ["sqlite:///x.db"]}}, ("'storage'",)),
    ],
)
def test_store_keys_are_refused_in_every_file(tmp_path, content, needles):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    for needle in needles:
        assert needle in str(err.value)


# ---- passwords in database URIs -------------------------------------------------------------------
def test_a_failed_database_connection_is_one_sentence_without_the_password(tmp_path, monkeypatch, cli, one_error_line):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for uri in (f"postgresql+psycopg2://alice:{SECRET}@127.0.0.1:{port}/mlflow", f"mysql://alice:{SECRET}@h/db"):
        result = cli(["promote", "--tracking-uri", uri], exit_code=2)
        line = one_error_line(result, "cannot reach the MLflow tracking store", "alice:***@")
        assert SECRET not in result.output, line


def test_passwords_are_redacted_in_params_tags_and_artifacts(mlflow_store, tmp_path):
    db = f"postgresql+psycopg2://alice:{SECRET}@db.example:5432/mlflow"
    exp = tracking.ensure_experiment("medattn-demo", mlflow_store)
    with tracking.tracked_run(experiment_id=exp) as run:
        tracking.log_params({"tracking_uri": db, "storage": f"mysql://bob:{SECRET}@h/optuna", "lr": 0.1})
        tracking.set_tags({"medattn.note": f"from {db}"})
        tracking.log_yaml({"tracking_uri": db, "nested": {"urls": [db]}}, "config.yaml")
        tracking.log_text(f"store {db}\n", "notes.txt")
    data = mlflow.get_run(run.info.run_id).data
    assert data.params["tracking_uri"] == "postgresql+psycopg2://alice:***@db.example:5432/mlflow"
    assert data.params["storage"] == "mysql://bob:***@h/optuna" and data.params["lr"] == "0.1"
    assert all(SECRET not in v for v in [*data.params.values(), *data.tags.values()])
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "a")))
    texts = {p.name: p.read_text() for p in folder.rglob("*") if p.is_file()}
    assert set(texts) >= {"config.yaml", "notes.txt"}
    assert all(SECRET not in t for t in texts.values())
    assert yaml.safe_load(texts["config.yaml"])["tracking_uri"].startswith("postgresql+psycopg2://alice:***@")


def test_redaction_covers_every_scheme():
    for uri in (
        f"postgresql+psycopg2://alice:{SECRET}@db/mlflow",
        f"mysql+pymysql://a:{SECRET}@h:3306/x",
        f"mssql://a:{SECRET}@h/x",
        f"https://a:{SECRET}@mlflow.example",
        f"postgresql://a:{SECRET}/with/slashes@db/x",
    ):
        text = tracking.redact_secrets(f"cannot reach {uri!r} (refused)")
        assert SECRET not in text and ":***@" in text
        assert SECRET not in tracking.redact_url(uri)
    assert tracking.redact_secrets("sqlite:///tmp/mlflow.db and http://host:5000/x") == (
        "sqlite:///tmp/mlflow.db and http://host:5000/x"
    )


# ---- artifact names from ids ------------------------------------------------------------------------
def test_artifact_names_come_from_sanitised_ids_with_a_mapping(mlflow_store, tmp_path):
    ids = ["plain_id", "p10/p10000032/s50000000/img1", "../../../../escaped", "/abs/path"]
    outside = sorted(p for p in Path(tmp_path).parent.rglob("escaped.*"))
    exp = tracking.ensure_experiment("medattn-demo", mlflow_store)
    with tracking.tracked_run(experiment_id=exp) as run:
        writer = tracking.SaliencyWriter()
        for image_id in ids:
            writer.add_input(image_id, np.zeros((8, 8, 3), dtype=np.uint8))
            writer.add_map("deeplift", image_id, np.zeros((8, 8), dtype=np.float32), label=0, prediction=0)
        written = [p for p in writer.workdir.rglob("*") if p.is_file()]
        assert all(writer.workdir in p.resolve().parents for p in written)
        index = writer.log(pd.DataFrame({"id": ids}))
    assert sorted(p for p in Path(tmp_path).parent.rglob("escaped.*")) == outside
    assert not writer.workdir.exists()
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "saliency/deeplift")}
    inputs = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "inputs")}
    assert "saliency/deeplift/plain_id.npy" in files and "inputs/plain_id.png" in inputs
    assert len(files) == len(inputs) == 4
    for path in files | inputs:
        assert path.count("/") == (2 if path.startswith("saliency/") else 1) and ".." not in path
    assert list(index["id"]) == ids
    mapping = tracking.read_csv(run.info.run_id, tracking.SALIENCY_ID_MAP, tmp_path / "m")
    assert list(mapping["id"]) == ids[1:]
    for image_id, name in zip(mapping["id"], mapping["name"], strict=True):
        assert f"inputs/{name}.png" in inputs and f"saliency/deeplift/{name}.npy" in files, image_id


# ---- figures follows only its own index paths ----------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("file", "../../../../outside.npy"),
        ("file", "saliency/../checkpoints/last.pt"),
        ("input", "/etc/passwd"),
        ("input", "config.yaml"),
    ],
)
def test_figures_refuses_index_paths_outside_its_prefixes(
    fake_interpret_run, mlflow_store, tmp_path, cli, one_error_line, column, value
):
    exp = tracking.ensure_experiment("medattn-demo", mlflow_store)
    fake = fake_interpret_run(exp, np.random.default_rng(0))
    index = tracking.read_csv(fake.run_id, tracking.SALIENCY_INDEX, tmp_path / "i")
    index.loc[0, column] = value
    edited = tmp_path / "edit" / "index.csv"
    edited.parent.mkdir()
    index.to_csv(edited, index=False)
    mlflow.MlflowClient().log_artifact(fake.run_id, str(edited), "saliency")
    result = cli(["figures", "--run-id", fake.run_id], exit_code=2)
    one_error_line(result, repr(value), "medattn reads only the files its own interpret writes")


# ---- the served model ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(mlflow_store, tmp_path, tiny_config):
    """MLflow's own scoring server (the app ``mlflow models serve`` runs) over a tiny logged pyfunc, in a thread."""
    import uvicorn
    from mlflow.pyfunc import scoring_server

    torch.manual_seed(0)
    flat = tiny_config().flat()
    model = create_model("deit_tiny", 2, nr_layers=1, img_size=int(flat["img_size"])).eval()
    payload = {"model": model.state_dict(), "config": flat, "num_classes": 2, "class_names": ["no", "yes"]}
    weights = ckpt_io.save(tmp_path / "best.pt", payload)
    exp = tracking.ensure_experiment("medattn-demo", mlflow_store)
    with tracking.tracked_run(experiment_id=exp):
        logged = tracking.log_model(weights, tags={"variant": "tiny"})
    app = scoring_server.init(mlflow.pyfunc.load_model(logged.model_uri))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=30)


def _post(url: str, payload: bytes) -> tuple[int, str]:
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(payload).decode()]]}}
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:  # noqa: S310 - a local test server
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_served_model_answers_400_with_medattns_sentence(served, tmp_path):
    bomb = write_png_bomb(tmp_path / "bomb.png").read_bytes()
    cases = {
        "bomb": (bomb, "pixel budget of 50 Mpx"),
        "junk": (b"not an image at all", "do not decode as an image"),
    }
    for name, (payload, needle) in cases.items():
        status, body = _post(served, payload)
        assert status == 400, (name, body[:500])
        answer = json.loads(body)
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE", name
        assert needle in answer["message"], (name, answer["message"][-500:])
        assert "stack_trace" not in answer and "Traceback" not in body, name
        for internal in (str(Path(mlflow.__file__).parent.parent), str(tmp_path), ".py"):
            assert internal not in body, (name, internal)
    good = io.BytesIO()
    Image.fromarray(np.full((40, 30, 3), 128, dtype=np.uint8)).save(good, format="PNG")
    status, body = _post(served, good.getvalue())  # the same server answers a real image
    assert status == 200 and set(json.loads(body)["predictions"][0]) == {"prob_no", "prob_yes", "prediction"}
