"""medattn.tracking.models: a logged model, its registry versions and aliases, and the URIs that
resolve back to the training run."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from medattn import tracking
from medattn.errors import MedattnError


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def test_log_register_alias_and_resolve(mlflow_store):
    exp = tracking.ensure_experiment("medattn-demo", mlflow_store)
    model = _tiny()
    with tracking.tracked_run(experiment_id=exp) as run:
        logged = tracking.log_model(
            model, img_size=4, tags={"variant": "tiny"}, metrics={"best_val_auc": 0.75}, register_as="medattn-demo"
        )
    rid = run.info.run_id
    assert logged.version == "1"
    assert mlflow.get_run(rid).data.tags[tracking.TAG_MODEL_ID] == logged.model_id
    # the pyfunc flavour predicts what the eager model does
    x = np.random.default_rng(1).standard_normal((3, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mlflow.pyfunc.load_model(logged.model_uri).predict(x), eager, rtol=1e-5, atol=1e-6)

    assert tracking.alias_target("medattn-demo", "champion") == (None, None)
    assert tracking.version_for_run("medattn-demo", rid, logged.model_id) == ("1", False)  # reused, not duplicated
    tracking.set_alias("medattn-demo", "champion", "1")
    assert tracking.alias_target("medattn-demo", "champion") == ("1", rid)
    for uri in ("models:/medattn-demo@champion", "models:/medattn-demo/1", f"runs:/{rid}/model"):
        assert tracking.resolve_model_uri(uri) == rid, uri
    tracking.set_version_tags("medattn-demo", "1", {"medattn.metric": "best_val_auc"})
    tags = mlflow.MlflowClient().get_model_version("medattn-demo", "1").tags
    assert tags["medattn.metric"] == "best_val_auc"


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("models:/medattn-demo@champion", "does not resolve"),
        ("models:/medattn-demo", "names no version or alias"),
        ("s3://bucket/model", "is not understood"),
    ],
)
def test_unresolvable_uris_are_one_sentence(mlflow_store, uri, needle):
    with pytest.raises(MedattnError, match=needle):
        tracking.resolve_model_uri(uri)
