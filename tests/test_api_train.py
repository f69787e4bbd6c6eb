"""Train and test through the CLI and the API, checked against what lands in MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medattn import api, tracking
from medattn.cli import app

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "deit_tiny", "--nr-layers", "1", "--img-size", "32", "--batch-size", "16",
        "--lr", "1e-3", "--no-system-metrics"]

runner = CliRunner()


def _invoke(args):
    result = runner.invoke(app, args)
    return result


def _run_id_from(output: str) -> str:
    line = [ln for ln in output.splitlines() if ln.startswith("Logged ")][-1]
    return line.split(" run ")[1].split()[0]


def _tiny_cfg(demo_dir, **over):
    base = {"dataset": "demo", "data_dir": str(demo_dir), "model": "deit_tiny", "nr_layers": 1, "img_size": 32,
            "batch_size": 16, "lr": 1e-3, "epochs": 2, "system_metrics": False}
    base.update(over)
    return api.resolve_train_config(base)


def test_train_then_test_end_to_end(mlflow_store, demo_dir):
    res = _invoke(["train", "--dataset", "demo", "--data-dir", str(demo_dir), "--epochs", "2", *TINY])
    assert res.exit_code == 0, res.output
    run_id = _run_id_from(res.output)
    assert "mlflow ui --backend-store-uri" in [ln for ln in res.output.splitlines() if ln.strip()][-1]
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "deit_tiny"
    assert run.data.params["epochs"] == "2"
    assert run.data.params["lr"] == "0.001"
    assert run.data.tags[tracking.TAG_KIND] == "train"
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [0, 1]
    for key in ("train_loss", "val_auc", "val_balanced_accuracy", "val_f1", "lr", "epoch_time_s", "train_images_per_s"):
        assert len(client.get_metric_history(run_id, key)) == 2, key
    arts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert arts == {"checkpoints/best.pt", "checkpoints/last.pt"}
    splits = {a.path for a in client.list_artifacts(run_id, "splits")}
    assert splits == {"splits/train.csv", "splits/val.csv", "splits/test.csv"}
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "model_summary.txt", "history"} <= top
    assert {a.path for a in client.list_artifacts(run_id, "history")} >= {"history/loss.png", "history/auc.png"}

    # the split manifests are the data layer's split, and disjoint
    from medattn.data import load_index

    index = load_index("demo", demo_dir)
    manifest = pd.read_csv(tracking.download(run_id, "splits/test.csv"))
    assert manifest["image_id"].tolist() == index.split("test")["image_id"].tolist()

    # the logged model (pyfunc) gives the same scores as the eager model rebuilt from the run
    loaded = api.load_trained(run_id=run_id)
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        eager = loaded.model(torch.from_numpy(x)).numpy()
    model_id = run.data.tags[tracking.TAG_MODEL_ID]
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_id}")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x)), eager, rtol=1e-4, atol=1e-5)

    # test by run id: test_* metrics, predictions.csv with exactly the test split's ids
    res = _invoke(["test", "--run-id", run_id, "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    test_run = client.get_run(_run_id_from(res.output))
    assert test_run.data.tags[tracking.TAG_SOURCE_RUN] == run_id
    assert test_run.data.tags[tracking.TAG_KIND] == "test"
    m = test_run.data.metrics
    for key in ("test_accuracy", "test_balanced_accuracy", "test_precision", "test_recall", "test_f1",
                "test_sensitivity", "test_specificity", "test_auc", "test_auc_ci_low", "test_auc_ci_high",
                "test_balanced_accuracy_ci_low", "test_balanced_accuracy_ci_high"):
        assert key in m, key
    preds = pd.read_csv(tracking.download(test_run.info.run_id, tracking.PREDICTIONS))
    assert preds["id"].tolist() == index.split("test")["image_id"].tolist()
    assert preds["label"].tolist() == index.split("test")["label"].tolist()
    assert m["test_accuracy"] == pytest.approx((preds["label"] == preds["prediction"]).mean())
    figs = {a.path for a in client.list_artifacts(test_run.info.run_id, "figures")}
    assert figs == {"figures/roc_curve.png", "figures/confusion_matrix.png"}


def test_resume_continues_the_same_run_exactly(mlflow_store, demo_dir):
    full = api.train(_tiny_cfg(demo_dir, epochs=3), progress=False)
    first = api.train(_tiny_cfg(demo_dir, epochs=1), progress=False)
    resumed = api.train(api.resolve_train_config({"epochs": 3}, resume=first.run_id), progress=False)
    assert resumed.run_id == first.run_id
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(first.run_id, "val_loss")] == [0, 1, 2]
    assert client.get_run(first.run_id).info.status == "FINISHED"
    a = torch.load(tracking.download(full.run_id, tracking.LAST_CKPT), weights_only=True)["model"]
    b = torch.load(tracking.download(first.run_id, tracking.LAST_CKPT), weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert resumed.history["val_loss"] == pytest.approx(full.history["val_loss"], abs=1e-6)


def test_save_freq_and_select_metric(mlflow_store, demo_dir):
    res = api.train(_tiny_cfg(demo_dir, epochs=2, save_freq=1, select_metric="val_auc"), progress=False)
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id, "checkpoints")}
    assert {"checkpoints/epoch_0000.pt", "checkpoints/epoch_0001.pt"} <= arts
    aucs = res.history["val_auc"]
    assert res.best_epoch == int(np.argmax(aucs))
    best = torch.load(tracking.download(res.run_id, tracking.BEST_CKPT), weights_only=True)
    assert best["epoch"] == res.best_epoch


def test_exception_mid_training_marks_run_failed(mlflow_store, demo_dir, monkeypatch):
    import medattn.engine as engine

    calls = {"n": 0}
    real = engine.train_one_epoch

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        api.train(_tiny_cfg(demo_dir, epochs=3), progress=False)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert runs["status"].tolist() == ["FAILED"]


def test_test_from_checkpoint_file(mlflow_store, demo_dir):
    res = api.train(_tiny_cfg(demo_dir, epochs=1), progress=False)
    path = tracking.download(res.run_id, tracking.BEST_CKPT)
    by_ckpt = api.test(api.TestConfig(ckpt=str(path), n_boot=20), progress=False)
    by_run = api.test(api.TestConfig(run_id=res.run_id, n_boot=20), progress=False)
    assert by_ckpt.metrics["test_auc"] == pytest.approx(by_run.metrics["test_auc"])
    assert by_ckpt.source_run_id is None


def test_config_file_and_cli_override(mlflow_store, demo_dir, tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(f"dataset: demo\ndata_dir: {demo_dir}\nmodel: deit_tiny\nnr_layers: 1\nimg_size: 32\n"
                        "epochs: 5\nbatch-size: 16\nlr: 1.0e-3\n")
    cfg = api.resolve_train_config({"epochs": 1}, config_file=cfg_file)
    assert cfg.optim.epochs == 1 and cfg.optim.batch_size == 16 and cfg.optim.lr == 1e-3
    assert cfg.model.model == "deit_tiny"
    cfg_file.write_text("dataset: demo\nbatchsizes: 4\n")
    res = _invoke(["train", "--config", str(cfg_file)])
    assert res.exit_code == 2
    assert "did you mean 'batch_size'" in res.output


def test_mlflow_run_train_entry_point(mlflow_store, demo_dir):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = mlflow_store
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "train", "--env-manager", "local",
           "-P", "dataset=demo", "-P", f"data_dir={demo_dir}", "-P", "model=deit_tiny", "-P", "nr_layers=1",
           "-P", "img_size=32", "-P", "epochs=1", "-P", "batch_size=16"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED"
    assert row["params.model"] == "deit_tiny"
    assert row["tags.mlflow.project.entryPoint"] == "train"
    assert not np.isnan(row["metrics.val_loss"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--model", "cbam_resnet5"], "did you mean 'cbam_resnet50'"),
        (["train", "--dataset", "isic202"], "did you mean 'isic2020'"),
        (["train", "--perc-train", "1.5"], "--perc-train must be in (0, 1]"),
        (["train", "--data-dir", "no/such/folder"], "no/such/folder"),
        (["train", "--resume", "0123456789abcdef"], "does not exist"),
        (["train", "--head", "flat"], "did you mean 'flatten'"),
        (["test", "--run-id", "0123456789abcdef"], "does not exist"),
        (["test", "--model-uri", "models:/medattn-demo@champion"], "does not resolve"),
        (["test"], "exactly one of --run-id, --model-uri or --ckpt"),
        (["test", "--ckpt", "missing.pt"], "does not exist"),
        (["test", "--ckpt", "truncated.pt"], "truncated or corrupt"),
        (["train", "--config", "missing.yaml"], "does not exist"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(mlflow_store, demo_dir, args, needle):
    Path("truncated.pt").write_bytes(b"PK\x03\x04 not a zip")
    if args[0] == "train" and "--data-dir" not in args:
        args = [*args, "--data-dir", str(demo_dir)]
    res = _invoke(args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1
    runs = mlflow.search_runs(search_all_experiments=True)
    assert (runs["status"] != "RUNNING").all() if len(runs) else True


def test_kill_between_checkpoint_and_metrics_is_filled_in_on_resume(mlflow_store, demo_dir, monkeypatch):
    """A crash after epoch 1's last.pt but before its metrics: resume logs step 1 once, from last.pt."""
    real = mlflow.log_metrics
    state = {"armed": True}

    def crash_once(metrics, step=None, **kw):
        if state["armed"] and step == 1 and "val_loss" in metrics:
            state["armed"] = False
            raise KeyboardInterrupt  # the process dies here
        return real(metrics, step=step, **kw)

    monkeypatch.setattr(mlflow, "log_metrics", crash_once)
    with pytest.raises(KeyboardInterrupt):
        api.train(_tiny_cfg(demo_dir, epochs=3), progress=False)
    run_id = mlflow.search_runs(search_all_experiments=True)["run_id"].item()
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [0]
    api.train(api.resolve_train_config({"epochs": 3}, resume=run_id), progress=False)
    for key in ("val_loss", "train_auc", "lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0, 1, 2], key
