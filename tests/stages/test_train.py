"""``medattn train`` through the CLI and the API, checked against what lands in MLflow."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medattn import engine, tracking
from medattn.data import build_transform, load_index
from medattn.stages import train as train_stage
from medattn.stages.common import load_trained
from medattn.stages.train import resolve_train_config


def test_train_logs_params_metrics_checkpoints_splits_and_model(mlflow_store, demo_dir, cli, tiny_args):
    res = cli(["train", "--dataset", "demo", "--data-dir", demo_dir, "--epochs", "2", *tiny_args])
    run_id = res.run_id
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
    # best.pt became the logged model and was pruned (storage policy); last.pt stays for --resume
    assert arts == {tracking.LAST_CKPT, tracking.CHECKPOINT_MANIFEST}
    splits = {a.path for a in client.list_artifacts(run_id, "splits")}
    assert splits == {"splits/train.csv", "splits/val.csv", "splits/test.csv", tracking.DUPLICATE_GROUPS}
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "model_summary.txt", "history"} <= top
    assert {a.path for a in client.list_artifacts(run_id, "history")} >= {"history/loss.png", "history/auc.png"}

    # the split manifests are the data layer's split
    index = load_index("demo", demo_dir)
    for split, name in (("train", "train"), ("val", "val"), ("test", "test")):
        manifest = pd.read_csv(tracking.download(run_id, f"splits/{name}.csv", "downloads"))
        assert manifest["image_id"].tolist() == index.split(split)["image_id"].tolist(), split

    # the logged model (pyfunc) gives the same scores as the eager model rebuilt from the run
    loaded = load_trained(run_id=run_id)
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        eager = torch.softmax(loaded.model(build_transform(32)(Image.fromarray(img))[None]), 1).numpy()[0]
    model_id = run.data.tags[tracking.TAG_MODEL_ID]
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_id}")
    served = pyfunc.predict(pd.DataFrame({"image": [img]})).iloc[0, :2].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(served, eager, rtol=1e-4, atol=1e-5)


def test_resume_continues_the_same_run_exactly(mlflow_store, train_tiny):
    full = train_tiny(epochs=3)
    first = train_tiny(epochs=1)
    resumed = train_stage.train(resolve_train_config({"epochs": 3}, resume=first.run_id), progress=False)
    assert resumed.run_id == first.run_id
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(first.run_id, "val_loss")] == [0, 1, 2]
    assert client.get_run(first.run_id).info.status == "FINISHED"
    a = torch.load(tracking.download(full.run_id, tracking.LAST_CKPT, "downloads"), weights_only=True)["model"]
    b = torch.load(tracking.download(first.run_id, tracking.LAST_CKPT, "downloads"), weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert resumed.history["val_loss"] == pytest.approx(full.history["val_loss"], abs=1e-6)


def test_save_freq_and_select_metric(mlflow_store, train_tiny, tmp_path):
    res = train_tiny(epochs=2, save_freq=1, select_metric="val_auc")
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id, "checkpoints")}
    assert {"checkpoints/epoch_0000.pt", "checkpoints/epoch_0001.pt"} <= arts
    aucs = res.history["val_auc"]
    assert res.best_epoch == int(np.argmax(aucs))
    best = torch.load(tracking.model_weights(res.run_id, tmp_path), weights_only=True)
    assert best["epoch"] == res.best_epoch


def test_exception_mid_training_marks_run_failed(mlflow_store, train_tiny, runs_in_store, monkeypatch):
    calls = {"n": 0}
    real = engine.train_one_epoch

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_tiny(epochs=3)
    assert list(runs_in_store().values()) == ["FAILED"]
    assert calls["n"] == 2


def test_config_file_and_cli_override(mlflow_store, demo_dir, tmp_path, cli, one_error_line):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(
        f"dataset: demo\ndata_dir: {demo_dir}\nmodel: deit_tiny\nnr_layers: 1\nimg_size: 32\n"
        "epochs: 5\nbatch-size: 16\nlr: 1.0e-3\n"
    )
    cfg = resolve_train_config({"epochs": 1}, config_file=cfg_file)
    assert cfg.optim.epochs == 1 and cfg.optim.batch_size == 16 and cfg.optim.lr == 1e-3
    assert cfg.model.model == "deit_tiny"
    cfg_file.write_text("dataset: demo\nbatchsizes: 4\n")
    one_error_line(cli(["train", "--config", cfg_file], exit_code=2), "did you mean 'batch_size'")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "cbam_resnet5"], "did you mean 'cbam_resnet50'"),
        (["--dataset", "isic202"], "did you mean 'isic2020'"),
        (["--perc-train", "1.5"], "--perc-train must be in (0, 1]"),
        (["--data-dir", "no/such/folder"], "no/such/folder"),
        (["--resume", "0123456789abcdef"], "does not exist"),
        (["--head", "flat"], "did you mean 'flatten'"),
        (["--config", "missing.yaml"], "does not exist"),
        (["--select-metric", "val_acc"], "--select-metric"),
    ],
    ids=["model", "dataset", "perc-train", "data-dir", "resume", "head", "config", "select-metric"],
)
def test_bad_input_is_one_sentence_and_exit_2(mlflow_store, demo_dir, cli, one_error_line, runs_in_store, args, needle):
    """Each mistake: exit 2, one ``Error:`` line with the needle, and no run at all (not even a FAILED one)."""
    if "--data-dir" not in args:
        args = [*args, "--data-dir", demo_dir]
    one_error_line(cli(["train", *args, "--epochs", "1"], exit_code=2), needle)
    assert runs_in_store() == {}, "bad input must be refused before a run starts"


def test_kill_between_checkpoint_and_metrics_is_filled_in_on_resume(mlflow_store, train_tiny, monkeypatch):
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
        train_tiny(epochs=3)
    run_id = mlflow.search_runs(search_all_experiments=True)["run_id"].item()
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [0]
    train_stage.train(resolve_train_config({"epochs": 3}, resume=run_id), progress=False)
    for key in ("val_loss", "train_auc", "lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0, 1, 2], key
