"""The registered champion is servable: ``mlflow models serve`` answers a POSTed PNG with the
class probabilities ``medattn test`` computes for the same image, and the pyfunc takes every input a
user has (encoded bytes of any size, a path, a uint8 array) with a signature, a small example and metadata."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medattn import tracking
from medattn.data import IMAGENET_MEAN, IMAGENET_STD

CHAMPION = "models:/medattn-demo@champion"
SERVER_START_TIMEOUT_S = 600.0  # a loaded 2-core machine needs minutes to import mlflow + torch
PROB_ATOL = 1e-5


@pytest.fixture
def champion(mlflow_store, train_tiny, cli, tmp_path):
    """A registered tiny model under ``medattn-demo@champion`` and the predictions ``medattn test`` made with it."""
    trained = train_tiny(register=True)
    tracking.set_alias("medattn-demo", "champion", trained.registered_version)
    test_run = cli(["test", "--model-uri", CHAMPION, "--split", "test", "--n-boot", "10", "--quiet"]).run_id
    return trained, tracking.read_csv(test_run, tracking.PREDICTIONS, tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5) as r:  # noqa: S310 - a local test server
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(1.0)
    pytest.fail(
        f"mlflow models serve did not answer /ping within {SERVER_START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}"
    )


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as r:  # noqa: S310 - a local test server
        return json.loads(r.read())


def test_the_champion_is_a_documented_pyfunc_for_every_input_a_user_has(champion, demo_dir, tmp_path):
    trained, preds = champion
    info = mlflow.models.get_model_info(CHAMPION)
    meta = info.metadata
    assert meta["class_names"] == ["no lesion", "lesion"] and meta["img_size"] == 32
    assert meta["resize"] == "direct_resize" and meta["source_run"] == trained.run_id
    assert meta["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.outputs.input_names() == ["prob_no lesion", "prob_lesion", "prediction"]
    location = mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location
    example = mlflow.artifacts.download_artifacts(f"{location}/input_example.json", dst_path=str(tmp_path))
    assert Path(example).stat().st_size < 4096
    row = preds.iloc[0]
    path = demo_dir / "images" / f"{row['id']}.png"
    pixels = np.asarray(Image.open(path).convert("RGB"))
    big = tmp_path / "big.png"  # any size: the run's own resize applies
    Image.fromarray(pixels).resize((400, 300), Image.Resampling.NEAREST).save(big)
    model = mlflow.pyfunc.load_model(CHAMPION)
    answer = model.predict(pd.DataFrame({"image": [path.read_bytes(), str(path), pixels, big.read_bytes()]}))
    for i in range(3):  # bytes, path and uint8 array of the test image: medattn test's probabilities
        assert answer["prob_lesion"][i] == pytest.approx(row["prob_1"], abs=PROB_ATOL)
        assert answer["prob_no lesion"][i] == pytest.approx(row["prob_0"], abs=PROB_ATOL)
    assert answer["prediction"][0] == ["no lesion", "lesion"][int(row["prediction"])]
    np.testing.assert_allclose(answer.iloc[:, :2].sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_posted_png_as_medattn_test_does(champion, demo_dir, mlflow_store, tmp_path):
    _, preds = champion
    row = preds.iloc[0]
    png = (demo_dir / "images" / f"{row['id']}.png").read_bytes()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [f"{bindir}/mlflow", "models", "serve", "-m", CHAMPION, "--env-manager", "local"]
            + ["-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped below with every worker it started
        )
    try:
        _wait_until_up(url, proc, log)
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png).decode()]]}}
        answer = _post(url, body)["predictions"][0]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert answer["prob_lesion"] == pytest.approx(row["prob_1"], abs=PROB_ATOL)
    assert answer["prob_no lesion"] == pytest.approx(row["prob_0"], abs=PROB_ATOL)
    assert answer["prediction"] == ["no lesion", "lesion"][int(row["prediction"])]
