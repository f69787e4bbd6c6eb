"""medattn.tracking.uris: every model URI form MLflow 3 hands out resolves to the training run
behind it, and the ones that do not resolve are one sentence."""

from __future__ import annotations

import mlflow
import pytest

from medattn import tracking
from medattn.errors import MedattnError


@pytest.fixture
def registered(mlflow_store):
    """A run with a logged model, registered twice as ``medattn-demo`` (versions 1 and 2), alias
    ``champion`` on version 1; returns ``(run_id, model_id)``."""
    exp = tracking.ensure_experiment("medattn-demo", mlflow_store)
    with tracking.tracked_run(experiment_id=exp) as run:
        # a logged model without files: what is resolved is its id and source run, not its flavour
        model = mlflow.initialize_logged_model(name="model", source_run_id=run.info.run_id, experiment_id=exp)
    for _ in range(2):
        mlflow.register_model(f"models:/{model.model_id}", "medattn-demo")
    mlflow.MlflowClient().set_registered_model_alias("medattn-demo", "champion", "1")
    return run.info.run_id, model.model_id


def test_every_uri_form_resolves_to_the_training_run(registered):
    run_id, model_id = registered
    assert model_id.startswith("m-")
    forms = [
        "models:/medattn-demo@champion",
        "models:/medattn-demo/1",
        "models:/medattn-demo/2",
        "models:/medattn-demo/latest",
        f"models:/{model_id}",
        f"runs:/{run_id}/model",
        f"runs:/{run_id}",
    ]
    for uri in forms:
        assert tracking.source_run_of(uri) == run_id, uri


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("models:/medattn-demo@challenger", "does not resolve"),
        ("models:/medattn-demo/7", "does not resolve"),
        ("models:/m-0123456789abcdef", "does not resolve"),
        ("models:/medattn-demo/Production", "names a stage"),
        ("models:/", "names no model"),
        ("runs:/", "names no run"),
        ("s3://bucket/model", "is not understood"),
    ],
)
def test_unresolvable_uris_are_one_sentence(registered, uri, needle):
    with pytest.raises(MedattnError, match=needle) as caught:
        tracking.source_run_of(uri)
    assert "\n" not in str(caught.value)
