"""The command line of seeds, verdicts and ties: ``--seeds`` on train, grid and demo; ``compare`` prints one
verdict per attention variant; ``promote`` says how it broke a tie."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from medattn import api, tracking
from medattn.config import parse_seeds
from medattn.errors import ConfigError
from medattn.metrics import roc_auc
from medattn.stages import compare, compare_paired, grid
from medattn.stages import demo as demo_stage
from medattn.stages.demo import DemoConfig

REPO = Path(__file__).resolve().parents[1]


# ---- train --seeds ----------------------------------------------------------------------------
@pytest.mark.slow
def test_train_seeds_makes_one_run_per_seed(mlflow_store, demo_dir, tiny_args, cli):
    out = cli(["train", "--dataset", "demo", "--data-dir", demo_dir, *tiny_args, "--seeds", "0,1", "--quiet"]).output
    runs = tracking.search_runs(None, tracking.finished_filter("train"))
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    logged = [ln.split(" run ")[1].split()[0] for ln in out.splitlines() if ln.startswith("Logged train run")]
    assert sorted(logged) == sorted(r.info.run_id for r in runs)
    assert "[1/2] deit_tiny, seed=0" in out and "[2/2] deit_tiny, seed=1" in out


def test_train_seeds_refuses_seed_too(mlflow_store, cli, one_error_line, runs_in_store):
    res = cli(["train", "--seed", "3", "--seeds", "0,1"], exit_code=2)
    one_error_line(res, "--seed or --seeds")
    assert runs_in_store() == {}


def test_train_seeds_refuses_bad_seeds(mlflow_store, cli, one_error_line):
    one_error_line(cli(["train", "--seeds", "0,x"], exit_code=2), "comma-separated integers")


def test_seed_configs_repeat_the_config_and_refuse_several_under_mlflow_run(tiny_config, monkeypatch):
    assert [c.optim.seed for c in grid.seed_configs(tiny_config(), (3, 1))] == [3, 1]
    assert grid.seed_configs(tiny_config(seed=7), None) == [tiny_config(seed=7)]
    cfgs = grid.seed_configs(tiny_config(), "0,2")
    assert [c.flat() | {"seed": 0} for c in cfgs] == [tiny_config(seed=0).flat()] * 2  # only the seed differs
    monkeypatch.setenv(tracking.ENV_RUN_ID, "project-run")
    with pytest.raises(ConfigError, match="one run per seed"):
        grid.seed_configs(tiny_config(), (0, 1))
    assert [c.optim.seed for c in grid.seed_configs(tiny_config(), (5,))] == [5]  # the project run holds one seed
    monkeypatch.delenv(tracking.ENV_RUN_ID)
    with pytest.raises(ConfigError, match="--resume"):
        grid.seed_configs(tiny_config(resume="some-run"), (0,))


# ---- grid / demo --seeds ----------------------------------------------------------------------
def test_grid_dry_run_lists_every_cell_per_seed(tmp_path, cli):
    path = tmp_path / "grid.yaml"
    path.write_text("dataset: demo\nimg_size: 32\ngrid:\n  model: [resnet50, se_resnet50]\n")
    out = cli(["grid", "--config", path, "--seeds", "0,1", "--dry-run"]).output.strip().splitlines()
    assert [ln.split()[1] + " " + ln.split()[-1] for ln in out[:-1]] == [
        "resnet50 seed=0", "resnet50 seed=1", "se_resnet50 seed=0", "se_resnet50 seed=1"
    ]  # fmt: skip
    assert out[-1] == "4 cells"


def test_demo_seeds_reach_the_demo_config(cli, monkeypatch):
    seen = []

    def fake_demo(cfg, **kw):
        seen.append(cfg.seeds)
        raise ConfigError("stop here")

    monkeypatch.setattr(api, "demo", fake_demo)
    cli(["demo", "--seeds", "0,1,2"], exit_code=2)
    cli(["demo", "--seeds", ""], exit_code=2)  # what `mlflow run -e main` passes for its default
    assert seen == [(0, 1, 2), None]
    assert DemoConfig(seeds=[4, 5]).seeds == (4, 5) and parse_seeds("") is None
    with pytest.raises(ConfigError, match="twice"):
        DemoConfig(seeds=(1, 1))


def test_demo_reads_the_seeds_of_its_config(mlflow_store, tmp_path, monkeypatch):
    trained = []

    def fake_train(cfg, **kw):
        trained.append(cfg.optim.seed)
        return SimpleNamespace(run_id=f"t{len(trained)}", best_epoch=0, best_metrics={}, config={}, model_uri=None)

    monkeypatch.setattr(demo_stage, "train", fake_train)
    monkeypatch.setattr(demo_stage, "test", lambda cfg, **kw: SimpleNamespace(run_id="x", metrics={}))
    monkeypatch.setattr(demo_stage, "compare", lambda cfg: SimpleNamespace(run_id="c", verdicts=[]))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "labels.csv").write_text("id,label\n")  # no synthesis
    cfg = DemoConfig(data_dir=str(tmp_path / "d"), models=("resnet50",), explain_images=0, promote=False, seeds=(4, 5))
    demo_stage.demo(cfg, echo=lambda _: None, progress=False, report_out=None)  # the report has its own tests
    assert trained == [4, 5]


def test_mlproject_main_passes_seeds_to_demo():
    main = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["main"]
    assert main["parameters"]["seeds"]["default"] == "" and "--seeds {seeds}" in main["command"]


# ---- compare prints the verdicts --------------------------------------------------------------
def _train_and_test(client, exp: str, model: str, frame: pd.DataFrame) -> None:
    train = client.create_run(exp, tags={tracking.TAG_KIND: "train", tracking.TAG_MODEL: model})
    client.log_param(train.info.run_id, "seed", "0")
    client.set_terminated(train.info.run_id)
    tags = {tracking.TAG_KIND: "test", tracking.TAG_MODEL: model, tracking.TAG_PERC_TRAIN: "1.0",
            tracking.TAG_SPLIT: "test", tracking.TAG_SOURCE_RUN: train.info.run_id}  # fmt: skip
    test = client.create_run(exp, tags=tags)
    auc = roc_auc(frame["label"].to_numpy(), frame[["prob_0", "prob_1"]].to_numpy())
    client.log_metric(test.info.run_id, "test_auc", auc)
    client.log_text(test.info.run_id, frame.to_csv(index=False), tracking.PREDICTIONS)
    client.set_terminated(test.info.run_id)


def test_compare_prints_one_verdict_per_attention_variant(mlflow_store, cli):
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("paired", mlflow_store)
    rng = np.random.default_rng(1)
    y = (np.arange(30) % 3 == 0).astype(int)
    for model, signal in (("resnet50", 0.3), ("se_resnet50", 2.0), ("cbam_resnet50", 0.3)):
        p1 = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, 30))))
        frame = pd.DataFrame({"id": [f"i{k}" for k in range(30)], "label": y, "score": p1,
                              "prediction": (p1 > 0.5).astype(int), "prob_0": 1 - p1, "prob_1": p1})  # fmt: skip
        _train_and_test(client, exp, model, frame)
    res = cli(["compare", "--experiment", "paired"])
    table = pd.read_csv(tracking.download(res.run_id, tracking.PAIRED_CSV, "downloads"))
    expected = [compare_paired.verdict(row) for row in table.to_dict("records")]
    assert len(expected) == 2 and {e.split(" on ")[0] for e in expected} == {"SE", "CBAM"}
    lines = res.output.splitlines()
    assert all(sentence in lines for sentence in expected), res.output
    assert any(s.startswith("SE on ResNet-50: ΔAUC +") for s in expected)


def test_paired_artifact_names_live_in_tracking():
    assert (tracking.PAIRED_CSV, tracking.FOREST_FIGURE) == ("paired_auc.csv", "figures/forest_auc.png")
    assert not hasattr(compare, "PAIRED_CSV")
