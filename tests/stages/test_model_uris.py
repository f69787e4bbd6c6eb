"""``test``, ``interpret`` and ``figures`` take every model URI MLflow 3 hands out, and
what their runs show in the MLflow UI: a description, the split as a Dataset,
predictions as a table, ``best_val_*`` once on the training run."""

from __future__ import annotations

import mlflow
import pandas as pd

from medattn import tracking
from medattn.data import load_index


def test_every_uri_form_drives_test_interpret_and_figures(mlflow_store, demo_dir, train_tiny, cli):
    trained = train_tiny(register=True)
    rid = trained.run_id
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("medattn-demo", "champion", trained.registered_version)
    model_id = client.get_run(rid).data.tags[tracking.TAG_MODEL_ID]
    # best_val_* once, at the best epoch (the logged model links to that point, not a second one)
    for key in ("best_val_loss", "best_val_auc"):
        assert len(client.get_metric_history(rid, key)) == 1, key
    assert client.get_run(rid).data.tags[tracking.TAG_DESCRIPTION] == "deit_tiny trained on demo."

    uris = [
        "models:/medattn-demo@champion",
        f"models:/medattn-demo/{trained.registered_version}",
        f"models:/{model_id}",
        f"runs:/{rid}/model",
    ]
    test_split = load_index("demo", demo_dir).split("test")
    for uri in uris:
        run = client.get_run(cli(["test", "--model-uri", uri, "--n-boot", "20", "--quiet"]).run_id)
        assert run.data.tags[tracking.TAG_SOURCE_RUN] == rid, uri
        assert run.data.params["model_uri"] == uri
    # the last test run, as the UI shows it
    assert (
        run.data.tags[tracking.TAG_DESCRIPTION]
        == f"deit_tiny from training run {rid} tested on the test split of demo."
    )
    (ds,) = run.inputs.dataset_inputs
    assert (ds.dataset.name, ds.dataset.digest) == ("demo-test", tracking.ids_digest(test_split["image_id"].tolist()))
    table = client.load_table(run.info.experiment_id, tracking.PREDICTIONS_TABLE, run_ids=[run.info.run_id])
    csv = pd.read_csv(tracking.download(run.info.run_id, tracking.PREDICTIONS, "downloads"), dtype={"id": str})
    assert table["id"].astype(str).tolist() == csv["id"].tolist() == test_split["image_id"].astype(str).tolist()

    explained = cli(["interpret", "--model-uri", f"models:/{model_id}", "--max-images", "2", "--steps", "2", "-q"])
    irun = client.get_run(explained.run_id)
    assert irun.data.tags[tracking.TAG_SOURCE_RUN] == rid
    assert irun.data.tags[tracking.TAG_DESCRIPTION].endswith("explained on the test split of demo.")
    drawn = cli(["figures", "--model-uri", "models:/medattn-demo@champion"])
    assert drawn.run_id == explained.run_id  # the champion's latest interpret run got the figures
    assert client.get_run(explained.run_id).data.tags[tracking.TAG_FIGURES]


def test_figures_needs_exactly_one_source(mlflow_store, cli, one_error_line):
    one_error_line(cli(["figures"], exit_code=2), "exactly one of --run-id or --model-uri")
    one_error_line(cli(["figures", "--model-uri", "models:/medattn-demo@champion"], exit_code=2), "does not resolve")
