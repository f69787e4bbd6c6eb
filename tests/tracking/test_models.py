"""medattn.tracking.models: a logged model, its registry versions and aliases, and the URIs that
resolve back to the training run."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image

from medattn import checkpoint as ckpt_io
from medattn import tracking
from medattn.data import build_transform
from medattn.errors import MedattnError
from medattn.models import create_model


def _checkpoint(path, flat):
    """A tiny DeiT's ``best.pt``-style checkpoint (state_dict, resolved config, class names) and its model."""
    torch.manual_seed(0)
    model = create_model("deit_tiny", 2, nr_layers=1, img_size=int(flat["img_size"])).eval()
    payload = {"model": model.state_dict(), "config": flat, "num_classes": 2, "class_names": ["benign", "malignant"]}
    return ckpt_io.save(path, payload), model


def test_log_register_alias_and_resolve(mlflow_store, tmp_path, tiny_config):
    exp = tracking.ensure_experiment("medattn-demo", mlflow_store)
    weights, model = _checkpoint(tmp_path / "best.pt", tiny_config().flat())
    with tracking.tracked_run(experiment_id=exp) as run:
        logged = tracking.log_model(
            weights, tags={"variant": "tiny"}, metrics={"best_val_auc": 0.75}, register_as="medattn-demo"
        )
    rid = run.info.run_id
    assert logged.version == "1"
    assert mlflow.get_run(rid).data.tags[tracking.TAG_MODEL_ID] == logged.model_id
    # the pyfunc takes a uint8 image and answers what the eager model does on its evaluation transform
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    answer = pyfunc.predict(pd.DataFrame({"image": [image]}))
    with pytest.raises(MlflowException, match="do not decode as an image"):
        pyfunc.predict(pd.DataFrame({"image": [b"not a png"]}))
    with torch.no_grad():
        x = build_transform(32)(Image.fromarray(image)).unsqueeze(0)
        eager = torch.softmax(model(x), 1).numpy()[0]
    assert list(answer.columns) == ["prob_benign", "prob_malignant", "prediction"]
    np.testing.assert_allclose(answer.iloc[0, :2].to_numpy(float), eager, rtol=1e-5, atol=1e-6)
    assert answer["prediction"][0] == ["benign", "malignant"][int(eager.argmax())]
    # medattn gets the torch module back from the model's weights
    back = ckpt_io.load(tracking.model_weights(rid, tmp_path / "back"))
    assert back["class_names"] == ["benign", "malignant"]
    assert all(torch.equal(back["model"][k], v) for k, v in model.state_dict().items())

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


def test_prune_keeps_what_resume_needs_and_the_demo_keeps_nothing(mlflow_store, tmp_path):
    exp = tracking.ensure_experiment("medattn-demo", mlflow_store)
    files = [
        ckpt_io.save(tmp_path / n, {"model": {"w": torch.zeros(2)}}) for n in ("best.pt", "last.pt", "epoch_0000.pt")
    ]
    with tracking.tracked_run(experiment_id=exp) as run:
        tracking.log_checkpoints(files, ckpt_io.Manifest(), 0)
    rid = run.info.run_id

    def names() -> set[str]:
        return {a.path for a in mlflow.MlflowClient().list_artifacts(rid, tracking.CHECKPOINT_DIR)}

    assert tracking.prune_checkpoints(rid) == [tracking.BEST_CKPT]
    assert names() == {tracking.LAST_CKPT, "checkpoints/epoch_0000.pt", tracking.CHECKPOINT_MANIFEST}
    assert set(tracking.read_manifest(rid).files) == {"last.pt", "epoch_0000.pt"}
    assert tracking.prune_checkpoints(rid) == []  # repeating it changes nothing
    assert len(tracking.prune_checkpoints(rid, keep_resume=False)) == 3
    assert names() == set()
