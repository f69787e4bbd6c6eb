"""`medattn demo` end to end on a tiny synthetic set: train → test → interpret → promote."""

import mlflow
import pandas as pd

from medattn import tracking


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
            "--models",
            "resnet50,DeiT-T",
            "--config",
            cfg,
            "--explain-images",
            "3",
        ]
    )
    assert (tmp_path / "demo_data" / "labels.csv").is_file()
    out = res.output
    assert "Test performance per variant" in out and "Explanation scores" in out
    assert "champion: (not set) → version 1" in out and "models:/medattn-demo@champion" in out

    parent_id = [ln for ln in out.splitlines() if ln.startswith("Logged demo run")][0].split()[3]
    children = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    kinds = children["tags.medattn.kind"].value_counts().to_dict()
    assert kinds == {"train": 2, "test": 2, "interpret": 2}
    assert (children["status"] == "FINISHED").all()
    assert set(children.loc[children["tags.medattn.kind"] == "train", "params.model"]) == {"resnet50", "deit_tiny"}

    table = pd.read_csv(tracking.download(parent_id, "comparison.csv"))
    tests = children[children["tags.medattn.kind"] == "test"]
    for _, row in table.iterrows():
        logged = tests.loc[tests["tags.medattn.model"] == row["model"], "metrics.test_auc"].item()
        assert row["test_auc"] == logged
    xai = pd.read_csv(tracking.download(parent_id, "xai_scores.csv"))
    assert set(xai["method"]) == {"deeplift", "lrp", "transformer-lrp", "random"}

    client = mlflow.MlflowClient()
    for rid in children.loc[children["tags.medattn.kind"] == "interpret", "run_id"]:
        figs = {a.path for a in client.list_artifacts(rid, "figures")}
        assert "figures/grid.png" in figs and "figures/history" in figs
    compare = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`medattn.kind` = 'compare'")
    assert len(compare) == 1 and compare["status"].item() == "FINISHED"
    champion = client.get_model_version_by_alias("medattn-demo", "champion")
    train_runs = children[children["tags.medattn.kind"] == "train"]
    champ_auc = train_runs.loc[train_runs["run_id"] == champion.run_id, "metrics.best_val_auc"].item()
    assert champ_auc == train_runs["metrics.best_val_auc"].max()
