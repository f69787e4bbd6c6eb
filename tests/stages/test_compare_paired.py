"""`medattn compare`: ΔAUC of each attention variant against its plain backbone."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from medattn import tracking
from medattn.metrics import paired_bootstrap, roc_auc
from medattn.stages import compare, compare_paired
from medattn.stages.compare import CompareConfig

N = 40


def _frame(ids, y, p1) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": ids, "label": y, "score": p1, "prediction": (p1 > 0.5).astype(int), "prob_0": 1 - p1, "prob_1": p1}
    )


def _runs(client, exp: str, model: str, seed: int, frame: pd.DataFrame) -> None:
    train = client.create_run(exp, tags={tracking.TAG_KIND: "train", tracking.TAG_MODEL: model})
    client.log_param(train.info.run_id, "seed", str(seed))
    client.set_terminated(train.info.run_id)
    test = client.create_run(
        exp,
        tags={
            tracking.TAG_KIND: "test",
            tracking.TAG_MODEL: model,
            tracking.TAG_PERC_TRAIN: "1.0",
            tracking.TAG_SPLIT: "test",
            tracking.TAG_SOURCE_RUN: train.info.run_id,
        },
    )
    client.log_metric(
        test.info.run_id, "test_auc", roc_auc(frame["label"].to_numpy(), frame[["prob_0", "prob_1"]].to_numpy())
    )
    client.log_text(test.info.run_id, frame.to_csv(index=False), tracking.PREDICTIONS)
    client.set_terminated(test.info.run_id)


@pytest.fixture
def seeded(mlflow_store):
    """resnet50, se_resnet50 and deit_tiny with two seeds each; the test rows are shuffled per run."""
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("paired", mlflow_store)
    rng = np.random.default_rng(0)
    ids = np.array([f"img{i}" for i in range(N)])
    y = (np.arange(N) % 3 == 0).astype(int)
    probs = {}
    for model, signal in (("resnet50", 0.5), ("se_resnet50", 1.5), ("deit_tiny", 1.0)):
        for seed in (0, 1):
            p1 = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, N))))
            probs[(model, seed)] = p1
            order = rng.permutation(N)  # the join is on image id, not on row order
            _runs(client, exp, model, seed, _frame(ids[order], y[order], p1[order]))
    return {"exp": exp, "y": y, "probs": probs}


def test_compare_logs_the_paired_delta_auc_table_and_forest_plot(seeded):
    res = compare.compare(CompareConfig(experiment="paired"))
    order = np.argsort([f"img{i}" for i in range(N)])  # compare joins on id, in sorted id order
    y, probs = seeded["y"][order], seeded["probs"]

    def two(model):
        return [np.stack([1 - probs[(model, s)], probs[(model, s)]], 1)[order] for s in (0, 1)]

    expected = paired_bootstrap(
        y, two("se_resnet50"), two("resnet50"), roc_auc, n_boot=compare_paired.PAIRED_N_BOOT, seed=0
    )
    per_seed = [roc_auc(y, a) - roc_auc(y, b) for a, b in zip(two("se_resnet50"), two("resnet50"), strict=True)]
    metrics = mlflow.get_run(res.run_id).data.metrics
    name = "delta_auc_se_resnet50_vs_resnet50"
    assert metrics[name] == pytest.approx(expected.delta)
    assert metrics[f"{name}_ci_low"] == pytest.approx(expected.ci_low)
    assert metrics[f"{name}_ci_high"] == pytest.approx(expected.ci_high)
    assert metrics[f"{name}_p"] == pytest.approx(expected.p_value)
    assert metrics[f"{name}_seeds_mean"] == pytest.approx(np.mean(per_seed))
    assert metrics[f"{name}_seeds_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert not any(k.startswith("delta_auc_deit") or "_vs_deit" in k for k in metrics)  # DeiT has no plain twin
    assert {tracking.PAIRED_CSV, tracking.FOREST_FIGURE} <= set(res.artifacts)
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id)}
    figures = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id, "figures")}
    assert tracking.PAIRED_CSV in logged and tracking.FOREST_FIGURE in figures
    table = pd.read_csv(tracking.download(res.run_id, tracking.PAIRED_CSV, "downloads"))
    assert table[["variant", "backbone", "n_images", "n_seeds_variant", "n_seed_pairs"]].values.tolist() == [
        ["se_resnet50", "resnet50", N, 2, 2]
    ]
    assert len(res.verdicts) == 1 and res.verdicts[0].startswith("SE on ResNet-50: ΔAUC +")
    assert "(mean ± sd, 2 seeds)" in res.verdicts[0]


def test_verdict_sentence_reads_as_the_issue_shows():
    row = {
        "attention": "SE", "architecture": "ResNet-50", "perc_train": 1.0, "delta_auc": 0.0123,
        "ci_low": -0.0204, "ci_high": 0.0411, "p_value": 0.4321, "n_seed_pairs": 1,
    }  # fmt: skip
    assert (
        compare_paired.verdict(row)
        == "SE on ResNet-50: ΔAUC +0.012 [−0.020, +0.041], p = 0.43 — no evidence of a difference"
    )
    lower = {**row, "delta_auc": -0.1, "ci_low": -0.15, "ci_high": -0.05, "p_value": 0.001}
    assert compare_paired.verdict(lower).endswith("p = 0.001 — evidence that SE lowers the AUC")


def test_plain_backbone_pairs_attention_variants_only():
    assert compare_paired.plain_backbone("cbam_densenet121") == "densenet121"
    assert compare_paired.plain_backbone("se_resnet50") == "resnet50"
    assert compare_paired.plain_backbone("resnet50") is None
    assert compare_paired.plain_backbone("deit_tiny") is None
    assert compare_paired.plain_backbone("?") is None
