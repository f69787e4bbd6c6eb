"""medattn.tracking.saliency: what the one writer logs, the one reader gives back, bit for bit."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from medattn import tracking


def test_writer_then_reader_round_trip(mlflow_store, tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    maps = {("deeplift", "a"): rng.normal(size=(3, 8, 8)), ("transformer-lrp", "a"): rng.normal(size=(2, 2))}
    writer = tracking.SaliencyWriter()
    assert writer.add_input("a", image) == "inputs/a.png"
    for (method, image_id), arr in maps.items():
        rel = writer.add_map(method, image_id, arr, label=1, prediction=0, score=0.25, target=1)
        assert rel == f"saliency/{method}/{image_id}.npy"
    scores = pd.DataFrame(
        {"id": ["a", "a"], "label": [1, 1], "method": ["deeplift", "transformer-lrp"], "deletion_auc": [0.1, 0.2]}
    )
    exp = tracking.ensure_experiment("e", mlflow_store)
    with tracking.tracked_run(experiment_id=exp) as run:
        logged = writer.log(scores)
    assert list(logged.columns) == ["id", "label", "prediction", "score", "target", "method", "file", "input"]

    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "saliency/deeplift")}
    assert arts == {"saliency/deeplift/a.npy"}
    reader = tracking.SaliencyReader(run.info.run_id, tmp_path / "dl")
    index = reader.index()
    assert index["id"].tolist() == ["a", "a"] and index["method"].tolist() == ["deeplift", "transformer-lrp"]
    assert index[["label", "prediction", "target"]].values.tolist() == [[1, 0, 1], [1, 0, 1]]
    for row in index.itertuples():
        back = reader.load_map(row.file)
        assert back.dtype == np.float32
        np.testing.assert_array_equal(back, maps[(row.method, row.id)].astype(np.float32))
        np.testing.assert_array_equal(reader.load_input(row.input), image)
    xai = tracking.read_csv(run.info.run_id, tracking.XAI_CSV, tmp_path / "x")
    pd.testing.assert_frame_equal(xai, scores.astype({"id": str}))
