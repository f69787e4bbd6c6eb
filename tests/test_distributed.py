"""DDP: samplers reproduce the single-process global batches, and a 2-process gloo run on CPU
logs one MLflow run whose validation metrics equal a single-process run's."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
import torch

from medattn import distributed
from medattn.engine import _bar
from medattn.errors import ConfigError
from medattn.stages.common import data_index, make_loader

# Documented in medattn/distributed.py ("Parity"): only the fp32 summation order differs (per-rank
# means, the all-reduce, per-rank eval batches); observed differences are ~1e-7 after 2 epochs.
TOL = 1e-4


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares_rebuild_the_single_process_batches(tiny_config, world):
    cfg = tiny_config(batch_size=6 * world if world == 3 else 16)
    index = data_index(cfg)
    loader = make_loader(index, "train", cfg, train=True)
    seed_fn = lambda e: 7 + e  # noqa: E731
    for epoch in (0, 1):
        torch.manual_seed(seed_fn(epoch))
        loader.generator.manual_seed(seed_fn(epoch))
        single = list(loader)
        ranks = []
        for r in range(world):
            dl = distributed.distribute_loader(
                loader,
                distributed.DistContext(rank=r, world_size=world),
                train=True,
                global_batch=cfg.optim.batch_size,
                seed_fn=seed_fn,
            )
            dl.global_batch_sampler.set_epoch(epoch)
            torch.manual_seed(seed_fn(epoch))
            ranks.append((list(dl), dl.global_batch_sampler))
        assert all(len(batches) == len(single) for batches, _ in ranks)
        for k, (x, y) in enumerate(single):
            # each rank's loss is its weighted sum over the nominal per-rank batch, so DDP's average
            # gives every image weight scale / (world · local) = 1 / global batch, the single-process
            # loss's (a sum over the nominal batch), even in an uneven last batch; a rank left
            # without images repeats one at weight 0
            global_batch = cfg.optim.batch_size
            local = distributed.per_rank_batch(global_batch, world)
            weights = [s.loss_scale(k, len(batches[k][1])) for batches, s in ranks]
            live = [(w, b) for w, (b, _) in zip(weights, ranks, strict=True) if w > 0]
            assert all(w in (0.0, 1.0) for w in weights)
            for w, _ in live:
                assert w / (world * local) == pytest.approx(1 / global_batch)
            xs = torch.cat([b[k][0] for _, b in live])
            ys = torch.cat([b[k][1] for _, b in live])
            assert torch.equal(ys, y) and torch.equal(xs, x)  # same images, same augmentation


def test_eval_shards_cover_each_image_once(tiny_config):
    cfg = tiny_config()
    index = data_index(cfg)
    loader = make_loader(index, "val", cfg, train=False)
    seen = []
    for r in range(5):
        dl = distributed.distribute_loader(
            loader, distributed.DistContext(rank=r, world_size=5), train=False, global_batch=5, seed_fn=lambda e: e
        )
        assert isinstance(dl.sampler, torch.utils.data.DistributedSampler)
        seen += list(dl.sampler)
    assert sorted(seen) == list(range(len(index.split("val"))))


def test_helpers():
    assert distributed.per_rank_batch(16, 2) == 8
    with pytest.raises(ConfigError, match="must split evenly over 3 processes"):
        distributed.per_rank_batch(16, 3)
    assert distributed.strip_nproc(["train", "--nproc", "2", "--lr", "1", "--nproc=3"]) == ["train", "--lr", "1"]
    cmd = distributed.torchrun_command(2, ["train"])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and cmd[-3:] == ["-m", "medattn", "train"]
    ctx = distributed.setup("cpu")
    assert not ctx.enabled and ctx.is_main  # outside torchrun: no process group


@pytest.mark.parametrize("show", [False, True])
def test_training_pass_draws_the_batches_global_batch_sampler_rebuilds(show):
    # A bug this guards against: tqdm.auto (tqdm.asyncio) called iter(loader) in its constructor, a
    # throwaway DataLoader iterator whose base-seed draw advanced loader.generator before the
    # shuffling permutation, so api.train's single-process batches were not the ones a fresh
    # loader (and GlobalBatchSampler) draws. The progress bar must create exactly one iterator.
    n, batch, seed = 37, 8, 42001
    loader = torch.utils.data.DataLoader(range(n), batch_size=batch, shuffle=True, generator=torch.Generator())
    loader.generator.manual_seed(seed)  # as api._train reseeds before each epoch
    seen = [b.tolist() for b in _bar(loader, "train", show)]
    assert seen == distributed.GlobalBatchSampler(n, batch, 0, 1, lambda e: seed + e).global_batches()


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process(mlflow_store, demo_dir, train_tiny, tiny_args):
    single = train_tiny(epochs=2, experiment="single")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "medattn",
        "train",
        "--dataset",
        "demo",
        "--data-dir",
        str(demo_dir),
        *tiny_args,
        "--epochs",
        "2",
        "--experiment",
        "ddp",
        "--nproc",
        "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = mlflow.search_runs(experiment_names=["ddp"], output_format="list")
    assert len(runs) == 1, "rank 0 alone logs: one run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    client = mlflow.MlflowClient()
    for key in ("val_loss", "val_accuracy", "val_auc", "val_balanced_accuracy", "val_f1", "train_loss"):
        ddp_hist = [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        assert ddp_hist == pytest.approx(single.history[key], abs=TOL), key
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/last.pt" in arts  # best.pt went once it became the logged model (prune_checkpoints)
    assert f"Logged train run {run.info.run_id}" in proc.stdout
    assert proc.stdout.count("Logged train run") == 1

    # resume under DDP: the same run grows to 3 epochs, like a single-process resume
    proc = subprocess.run(
        [sys.executable, "-m", "medattn", "train", "--resume", run.info.run_id, "--epochs", "3", "--nproc", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1, 2]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert len(mlflow.search_runs(experiment_names=["ddp"], output_format="list")) == 1
