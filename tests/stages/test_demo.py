"""`medattn demo` end to end on a tiny synthetic set: train → test → interpret → promote."""

import mlflow
import pandas as pd
import pytest

from medattn import tracking
from medattn.data import write_synthetic
from medattn.errors import ConfigError
from medattn.stages.demo import DEMO_MODELS, DEMO_TRAIN_DEFAULTS, DemoConfig, sanity_line, variant_config


def test_demo_end_to_end(mlflow_store, tmp_path, cli):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "img_size: 32\nepochs: 2\nbatch_size: 16\nlr: 1.0e-3\nnr_layers: 1\npretrained: none\nsystem_metrics: false\n"
    )
    res = cli(
        [
            "demo",
            "--data-dir",
            tmp_path / "demo_data",
            "--n",
            "60",
            "--test-extra",
            "24",
            "--models",
            "resnet50,DeiT-T",
            "--config",
            cfg,
            "--explain-images",
            "8",
            "--difficulty",
            "0.2",
            "--figure-images",
            "2",
            # the demo explains the predicted class; a 2-epoch model may predict no lesion at all,
            # so this run explains the labels, which every path below needs
            "--explain-target",
            "label",
        ]
    )
    assert (tmp_path / "demo_data" / "labels.csv").is_file()
    ref = write_synthetic(
        tmp_path / "ref", n=60, img_size=96, seed=0, difficulty=0.2, test_extra=24
    )  # options reached the set
    for name in ("labels.csv", *(f"images/{p.name}" for p in sorted((ref / "images").iterdir())[:5])):
        assert (tmp_path / "demo_data" / name).read_bytes() == (ref / name).read_bytes(), name
    out = res.output
    assert "Test performance per variant" in out and "Explanation scores" in out
    assert "oracle AUC" in out and "oracle map: " in out and "MoRF ↓" in out and "LeRF ↑" in out
    assert "Sanity rule per model × map" in out
    assert "champion: (not set) → version 1" in out and "models:/medattn-demo@champion" in out
    page = tmp_path / "demo_report.html"  # the demo ends with the experiment's report page and how to open it
    assert page.is_file() and 'id="results"' in page.read_text()
    lines = out.splitlines()
    at = lines.index(f"report: {page}")
    assert lines[at + 1] == f"open it with: python -m webbrowser {page.as_uri()}"

    parent_id = [ln for ln in out.splitlines() if ln.startswith("Logged demo run")][0].split()[3]
    children = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    kinds = children["tags.medattn.kind"].value_counts().to_dict()
    assert kinds == {"train": 2, "test": 2, "interpret": 2}
    assert (children["status"] == "FINISHED").all()
    assert set(children.loc[children["tags.medattn.kind"] == "train", "params.model"]) == {"resnet50", "deit_tiny"}

    table = pd.read_csv(tracking.download(parent_id, "comparison.csv", "downloads"))
    tests = children[children["tags.medattn.kind"] == "test"]
    for _, row in table.iterrows():
        logged = tests.loc[tests["tags.medattn.model"] == row["model"], "metrics.test_auc"].item()
        assert row["test_auc"] == logged
        test_run = tests[tests["tags.medattn.model"] == row["model"]].iloc[0]
        oracle, gap = test_run["metrics.test_oracle_auc"], test_run["metrics.test_oracle_gap"]
        assert row["test_oracle_auc"] == oracle and abs(gap - (oracle - row["test_auc"])) < 1e-9
        assert test_run["metrics.test_oracle_gap_ci_low"] <= gap <= test_run["metrics.test_oracle_gap_ci_high"]
        assert test_run["metrics.test_oracle_auc_ci_low"] <= oracle <= test_run["metrics.test_oracle_auc_ci_high"]
        assert test_run["metrics.test_n_images"] >= 24  # the test-only images reached the test split
    xai = pd.read_csv(tracking.download(parent_id, "xai_scores.csv", "downloads"))
    methods = {"deeplift", "lrp", "transformer-lrp"}
    baselines = {f"baseline_{b}" for b in ("random", "input", "centre", "edge")}
    twins = {f"baseline_randomized_{m}" for m in ("deeplift", "lrp", "transformer_lrp")}
    assert set(xai["source"]) == methods | baselines | twins | {"oracle"}
    sanity = pd.read_csv(tracking.download(parent_id, "sanity.csv", "downloads"))
    assert set(sanity["map"]) == methods | {"oracle"} and set(sanity["passes_sanity"]) <= {0, 1}
    # the sanity rule: a CI beyond every baseline's
    for rid in children.loc[children["tags.medattn.kind"] == "interpret", "run_id"]:
        run = mlflow.MlflowClient().get_run(rid)
        assert run.data.params["curve_images"] == "12" and run.data.params["randomized_images"] == "16"
        assert run.data.params["xai_removal"] == "road" and run.data.params["target"] == "label"
        assert run.data.metrics["xai_oracle_passes_sanity"] in (0.0, 1.0)
        for source in ("oracle", "baseline_random", "baseline_input", "baseline_centre", "baseline_edge"):
            assert {f"xai_{source}_morf_auc", f"xai_{source}_lerf_auc_ci_low"} <= set(run.data.metrics), source
        assert not any("deletion_auc" in k for k in run.data.metrics)
        for method in run.data.params["methods"].split(","):
            key = method.replace("-", "_")
            assert run.data.metrics[f"xai_{key}_passes_sanity"] in (0.0, 1.0)
            assert f"xai_baseline_randomized_{key}_pointing_game" in run.data.metrics
            assert f"xai_{key}_pointing_game_ci_low" in run.data.metrics
            assert f"xai_{key}_morf_auc" in run.data.metrics and f"xai_{key}_lerf_auc_ci_high" in run.data.metrics
            assert f"{method} PG " in out and (": passes" in out or ": fails" in out)

    client = mlflow.MlflowClient()
    for rid in children.loc[children["tags.medattn.kind"] == "interpret", "run_id"]:
        figs = {a.path for a in client.list_artifacts(rid, "figures")}
        assert "figures/grid.png" in figs and "figures/history" in figs
        assert len(client.list_artifacts(rid, tracking.ORIGINAL_DIR)) == 2  # --figure-images 2 of the 8 explained
    compare = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`medattn.kind` = 'compare'")
    assert len(compare) == 1 and compare["status"].item() == "FINISHED"
    champion = client.get_model_version_by_alias("medattn-demo", "champion")
    train_runs = children[children["tags.medattn.kind"] == "train"]
    champ_auc = train_runs.loc[train_runs["run_id"] == champion.run_id, "metrics.best_val_auc"].item()
    assert champ_auc == train_runs["metrics.best_val_auc"].max()


def test_sanity_line_names_the_scores_that_fail():
    metrics = {
        "xai_deeplift_pointing_game": 1.0,
        "xai_deeplift_pointing_game_ci_low": 1.0,
        "xai_deeplift_pointing_game_ci_high": 1.0,
        "xai_deeplift_pointing_game_passes": 1.0,
        "xai_deeplift_mask_mass_passes": 1.0,
        "xai_deeplift_deletion_auc_passes": 0.0,
        "xai_deeplift_insertion_auc_passes": 0.0,
        "xai_deeplift_passes_sanity": 0.0,
        "xai_lrp_pointing_game": 0.7,
        "xai_lrp_pointing_game_ci_low": 0.6,
        "xai_lrp_pointing_game_ci_high": 0.8,
        "xai_lrp_passes_sanity": 1.0,
        "xai_baseline_input_pointing_game": 0.44,
        "xai_baseline_edge_pointing_game": 0.2,
        "xai_baseline_randomized_deeplift_pointing_game": 0.5,
        "xai_baseline_randomized_lrp_pointing_game": 0.1,
    }
    sources = [
        "baseline_input",
        "baseline_edge",
        "deeplift",
        "baseline_randomized_deeplift",
        "lrp",
        "baseline_randomized_lrp",
    ]
    line = sanity_line(metrics, sources)
    assert line == (
        "deeplift PG 1.00 [1.00, 1.00] vs baseline 0.50 (randomized_deeplift): fails (deletion_auc, insertion_auc); "
        "lrp PG 0.70 [0.60, 0.80] vs baseline 0.44 (input): passes"
    )


def test_the_demo_explains_the_predicted_class_unless_told_otherwise():
    assert DemoConfig().explain_target == "pred" and DemoConfig(explain_target="label").explain_target == "label"
    with pytest.raises(ConfigError, match="--explain-target must be label or pred, got 'truth'"):
        DemoConfig(explain_target="truth")


def test_the_demo_trains_the_resnets_from_zeroed_residual_branches_and_keeps_the_best_val_auc(tmp_path):
    # From scratch on the demo set, ResNet-50 with torchvision's initialisation stayed at chance for
    # 8 epochs; the demo starts its three ResNet variants with zero-initialised residual branches at
    # lr 2e-3, the other variants keep lr 1e-3, and every variant keeps its highest-val-AUC epoch.
    cfg = DemoConfig(data_dir=str(tmp_path))
    configs = {name: variant_config(cfg, name, dict(DEMO_TRAIN_DEFAULTS), experiment="e") for name in DEMO_MODELS}
    resnets = {name for name in DEMO_MODELS if name.endswith("resnet50")}
    assert resnets == {"resnet50", "se_resnet50", "cbam_resnet50"}
    for name, c in configs.items():
        assert c.optim.select_metric == "val_auc"
        assert c.model.zero_init_residual is (name in resnets)
        assert c.optim.lr == (2e-3 if name in resnets else 1e-3)
    assert configs["deit_tiny"].model.patch_size == 8 and configs["deit_tiny"].optim.epochs == 24
    # a --config YAML replaces the demo's per-variant settings: plain ResNet-50 as the YAML says
    yaml_cfg = DemoConfig(data_dir=str(tmp_path), config_file="experiments/demo.yaml")
    plain = variant_config(yaml_cfg, "resnet50", dict(DEMO_TRAIN_DEFAULTS), experiment="e")
    assert not plain.model.zero_init_residual and plain.optim.lr == 1e-3
