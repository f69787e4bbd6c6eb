"""Crash safety: SIGKILL then ``--resume``, a truncated ``last.pt``, a NaN loss and Ctrl-C.

Training runs in a subprocess (``python -m medattn train``) on a private sqlite store, so that it
can be killed for real; the test follows it through the store and the run's artifact folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
import torch

from medattn import checkpoint as ckpt_io
from medattn import tracking
from medattn.data import write_synthetic
from medattn.errors import MedattnError
from medattn.stages import train as train_stage
from medattn.stages.train import resolve_train_config

pytestmark = pytest.mark.slow
EPOCHS = 3
WAIT_S = 180.0


@pytest.fixture(scope="module")
def slow_dir(tmp_path_factory) -> Path:
    """A demo set large enough (320 images at 48 px) that one epoch takes a couple of seconds."""
    out = tmp_path_factory.mktemp("crash") / "demo_data"
    write_synthetic(out, n=320, img_size=48, seed=0)
    return out


@pytest.fixture
def options(tiny_train) -> Callable[[Path], dict]:
    """The tiny setup made slower (4 blocks, 96 px, 3 epochs, seed 7) on ``data_dir``: over a second
    an epoch (2 blocks at 48 px took 0.3 s, short enough for a kill meant for epoch 1 to miss it on
    a busy machine)."""
    return lambda data_dir: {
        **tiny_train,
        "data_dir": str(data_dir),
        "nr_layers": 4,
        "img_size": 96,
        "epochs": EPOCHS,
        "seed": 7,
    }


def _argv(options: dict) -> list[str]:
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            argv += [flag, str(value)]
    return argv


def _env(uri: str) -> dict[str, str]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS=str(torch.get_num_threads()))
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    return env


def _restore_sigint() -> None:
    # A test session started in the background without job control (`make test &` in a script)
    # ignores SIGINT, and a child inherits that: Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], uri: str, log: Path) -> subprocess.Popen:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "medattn", *args],
            env=_env(uri),
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_restore_sigint,
        )


def _artifact_dir(run_id: str) -> Path:
    uri = mlflow.MlflowClient().get_run(run_id).info.artifact_uri
    return Path(unquote(urlparse(uri).path))


def _wait_for_last_ckpt(proc: subprocess.Popen, log: Path, epoch: int) -> str:
    """Poll until the subprocess's run has a complete ``last.pt`` of ``epoch``; its run id.

    The store is asked once for the run; then only the artifact file is polled, since a query can
    wait on the training process's sqlite lock for longer than an epoch lasts."""
    deadline = time.monotonic() + WAIT_S
    run_id, path = None, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended early (rc {proc.returncode}):\n{log.read_text()[-3000:]}"
        if path is None:
            runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
            if runs:
                run_id = runs[0].info.run_id
                path = _artifact_dir(run_id) / tracking.LAST_CKPT
        if path is not None and path.is_file():
            try:
                # the epoch's metrics may reach the store just after its checkpoint
                if ckpt_io.load(path)["epoch"] >= epoch and epoch in _steps(run_id):
                    return run_id
            except MedattnError:
                pass  # caught while MLflow was still copying it in
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no checkpoints/last.pt of epoch {epoch} within {WAIT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _steps(run_id: str, key: str = "val_loss") -> list[int]:
    return sorted(m.step for m in mlflow.MlflowClient().get_metric_history(run_id, key))


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(mlflow_store, slow_dir, tmp_path, options):
    """kill -9 during epoch 1, ``train --resume RUN_ID``: same run, steps 0..E-1 once, same weights."""
    opts = options(slow_dir)
    log = tmp_path / "killed.log"
    proc = _start(["train", *_argv(opts)], mlflow_store, log)
    try:
        run_id = _wait_for_last_ckpt(proc, log, epoch=0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody could end it
    assert _steps(run_id) == [0], "the kill should land in epoch 1, before its metrics"

    resumed = subprocess.run(
        [sys.executable, "-m", "medattn", "train", "--resume", run_id, "--epochs", str(EPOCHS)],
        env=_env(mlflow_store),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"run {run_id}" in resumed.stdout

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("val_loss", "train_loss", "val_auc", "lr"):
        assert _steps(run_id, key) == list(range(EPOCHS)), key
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 1

    full = train_stage.train(resolve_train_config(opts), progress=False)
    a = ckpt_io.load(tracking.download(full.run_id, tracking.LAST_CKPT, tmp_path / "full"))
    b = ckpt_io.load(tracking.download(run_id, tracking.LAST_CKPT, tmp_path / "resumed"))
    assert (a["epoch"], b["epoch"]) == (EPOCHS - 1, EPOCHS - 1)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=1e-6, msg=k)
    for e in range(EPOCHS):
        logged = client.get_metric_history(run_id, "val_loss")
        assert [m.value for m in logged if m.step == e] == pytest.approx([full.history["val_loss"][e]], abs=1e-6)


def test_truncated_last_checkpoint_is_one_sentence(mlflow_store, tmp_path, train_tiny, cli, one_error_line):
    """A truncated ``checkpoints/last.pt`` in the store: ``--resume`` exits 2 naming the checkpoint."""
    res = train_tiny(seed=7)
    good = tracking.download(res.run_id, tracking.LAST_CKPT, tmp_path / "good").read_bytes()
    cut = tmp_path / "cut" / "last.pt"
    cut.parent.mkdir()
    cut.write_bytes(good[: len(good) // 2])
    client = mlflow.MlflowClient()
    client.log_artifact(res.run_id, str(cut), tracking.CHECKPOINT_DIR)  # replaces the stored last.pt

    one_error_line(
        cli(["train", "--resume", res.run_id, "--epochs", "2"], exit_code=2), "last.pt", "truncated or corrupt"
    )
    assert client.get_run(res.run_id).info.status == "FINISHED"
    assert _steps(res.run_id) == [0]


def test_nan_loss_exits_2_and_marks_the_run_failed(
    mlflow_store, demo_dir, tiny_train, cli, one_error_line, runs_in_store
):
    """``--lr 1e30`` makes the loss NaN: the DivergedError sentence, exit 2, run FAILED."""
    opts = {**tiny_train, "data_dir": str(demo_dir), "epochs": 2, "lr": 1e30, "seed": 7}
    one_error_line(cli(["train", *_argv(opts)], exit_code=2), "the training loss became", "lower --lr")
    assert list(runs_in_store().values()) == ["FAILED"]


def test_ctrl_c_ends_the_run_killed_with_a_loadable_checkpoint(mlflow_store, slow_dir, tmp_path, options):
    """SIGINT mid-epoch: the run ends KILLED and its last complete ``last.pt`` loads.

    3 epochs could end before the poll sees epoch 0's checkpoint on a busy machine; with 10 the
    interrupt lands mid-training."""
    log = tmp_path / "interrupted.log"
    epochs = 10
    proc = _start(["train", *_argv({**options(slow_dir), "epochs": epochs})], mlflow_store, log)
    try:
        run_id = _wait_for_last_ckpt(proc, log, epoch=0)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode != 0
    assert "Traceback" not in log.read_text()
    assert mlflow.MlflowClient().get_run(run_id).info.status == "KILLED"
    state = ckpt_io.load(tracking.download(run_id, tracking.LAST_CKPT, tmp_path / "dl"))
    assert state["epoch"] in range(epochs - 1)
    assert _steps(run_id) == list(range(state["epoch"] + 1))
