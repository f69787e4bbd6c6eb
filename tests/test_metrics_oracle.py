"""The ceiling of a data set with a known label model: the oracle's AUC and the model's gap to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from medattn.engine import EpochOutput
from medattn.metrics import oracle_metrics
from medattn.stages.evaluate import TestConfig, ceiling_metrics


def _draw(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    oracle = rng.uniform(0, 1, n)
    y = (rng.uniform(0, 1, n) < oracle).astype(int)
    noisy = np.clip(oracle + rng.normal(0, 0.25, n), 0, 1)  # a model that sees the latent blurred
    return y, oracle, np.stack([1 - noisy, noisy], axis=1)


def test_oracle_auc_and_gap_with_paired_ci():
    y, oracle, scores = _draw()
    m = oracle_metrics(y, oracle, scores, n_boot=300, seed=0)
    assert np.isclose(m["oracle_auc"], roc_auc_score(y, oracle))
    assert np.isclose(m["oracle_gap"], roc_auc_score(y, oracle) - roc_auc_score(y, scores[:, 1]))
    assert m["oracle_auc_ci_low"] < m["oracle_auc"] < m["oracle_auc_ci_high"]
    assert 0 < m["oracle_gap_ci_low"] < m["oracle_gap"] < m["oracle_gap_ci_high"]  # the blur costs AUC
    # a model that is the oracle has gap 0
    same = oracle_metrics(y, oracle, np.stack([1 - oracle, oracle], axis=1), n_boot=100)
    assert same["oracle_gap"] == 0.0 and same["oracle_gap_ci_low"] == same["oracle_gap_ci_high"] == 0.0
    assert set(oracle_metrics(y, oracle, scores, n_boot=0)) == {"oracle_auc", "oracle_gap"}


def test_ceiling_uses_exactly_the_tested_images_and_only_where_the_data_set_has_oracle_prob():
    y, oracle, scores = _draw(200, seed=1)
    out = EpochOutput(loss=0.0, y_true=y, scores=scores, n_images=len(y), seconds=0.0)
    cfg = TestConfig(run_id="r", n_boot=50)
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(200)], "oracle_prob": oracle})
    got = ceiling_metrics(frame, out, cfg)
    assert np.isclose(got["oracle_auc"], roc_auc_score(y, oracle))  # logged as test_oracle_auc
    # rows in another order than the tested images would give another value: the frame is aligned
    shuffled = frame.assign(oracle_prob=oracle[::-1])
    assert ceiling_metrics(shuffled, out, cfg)["oracle_auc"] != got["oracle_auc"]
    assert ceiling_metrics(frame.drop(columns="oracle_prob"), out, cfg) == {}
