"""Clinical evaluation in ``medattn test`` (calibration, operating points, subgroups), ``medattn
calibrate`` and the paired ΔECE / Δsensitivity of ``medattn compare``, checked against hand and
scikit-learn computations on the logged predictions."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from medattn import clinical, tracking
from medattn.data import load_index
from medattn.data.testing import write_fake_isic
from medattn.errors import DataError
from medattn.metrics import paired_bootstrap
from medattn.stages import clinical as clinical_stage
from medattn.stages import compare
from medattn.stages import train as train_stage
from medattn.stages.train import resolve_train_config

SITES = ("torso", "head/neck", "lower extremity", "upper extremity", None)


# ---- independent reference computations ----------------------------------------------------------
def hand_ece(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    """ECE over equal-mass bins, written out: edges at the percentiles, bin b = (edge_b, edge_b+1]
    (the first bin closed below too), then Σ n_b |frequency - mean p| / N."""
    edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    total = 0.0
    for b in range(n_bins):
        inside = (p <= edges[b + 1]) if b == 0 else (p > edges[b]) & (p <= edges[b + 1])
        if b == n_bins - 1:
            inside = p > edges[b]
        if inside.any():
            total += inside.sum() * abs(y[inside].mean() - p[inside].mean())
    return total / len(p)


def brute_threshold(y: np.ndarray, p: np.ndarray, fixed: str, target: float) -> float:
    """Every candidate threshold tried: the rule's best (max sensitivity at spec >= target, or max
    specificity at sens >= target; the highest threshold among ties)."""
    best = None
    for t in sorted({*p.tolist(), math.inf}):
        sens = np.mean(p[y == 1] >= t)
        spec = np.mean(p[y == 0] < t)
        rate, other = (spec, sens) if fixed == "specificity" else (sens, spec)
        if rate >= target - 1e-12 and (best is None or other >= best[0]):
            best = (other, t)
    return best[1]


def _preds(run_id: str, dst: Path) -> pd.DataFrame:
    return pd.read_csv(tracking.download(run_id, tracking.PREDICTIONS, dst), dtype={"id": str})


# ---- a real-format ISIC 2020 folder with sex / age / site ---------------------------------------
@pytest.fixture(scope="module")
def isic_dir(tmp_path_factory) -> Path:
    root = write_fake_isic(tmp_path_factory.mktemp("isic"), patients=60, per_patient=3, seed=0)
    csv = pd.read_csv(root / "train.csv")
    k = np.arange(len(csv))
    csv["sex"] = np.where(k % 7 == 6, None, np.where(k % 2 == 0, "female", "male"))
    csv["age_approx"] = np.where(k % 11 == 10, np.nan, 25 + 5 * (k % 13))
    csv["anatom_site_general_challenge"] = [SITES[i % len(SITES)] for i in k]
    csv.to_csv(root / "train.csv", index=False)
    return root


@pytest.mark.slow
def test_isic_run_logs_calibration_operating_points_and_subgroups_equal_to_hand_computation(
    mlflow_store, isic_dir, tiny_train, cli, tmp_path
):
    source = train_stage.train(
        resolve_train_config({**tiny_train, "dataset": "isic2020", "data_dir": str(isic_dir), "pretrained": "none"}),
        progress=False,
    ).run_id
    args = ["--run-id", source, "--n-boot", "50", "--min-subgroup-positives", "2"]
    run_id = cli(["test", *args, "--subgroups", "sex,age,site"]).run_id
    val_run = cli(["test", "--run-id", source, "--split", "val", "--n-boot", "20"]).run_id
    run = mlflow.get_run(run_id)
    m, params = run.data.metrics, run.data.params
    test, val = _preds(run_id, tmp_path / "t"), _preds(val_run, tmp_path / "v")
    y, p = test["label"].to_numpy(), test["prob_1"].to_numpy()
    yv, pv = val["label"].to_numpy(), val["prob_1"].to_numpy()

    # calibration: ECE by hand, Brier by scikit-learn (the ECE's resamples are biased upward, so its
    # percentile interval need not hold the point estimate on a small split: see docs/evaluation.md)
    assert m["test_ece"] == pytest.approx(hand_ece(y, p))
    assert m["test_brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["test_brier_ci_low"] <= m["test_brier"] <= m["test_brier_ci_high"]
    assert m["test_ece_ci_low"] < m["test_ece_ci_high"]

    # operating points: thresholds from the validation predictions, applied to the test predictions
    assert run.data.tags[clinical_stage.TAG_OPERATING_POINTS] == "val"
    for metric, param, fixed, target in (
        ("sens_at_spec90", "threshold_spec90", "specificity", 0.90),
        ("sens_at_spec95", "threshold_spec95", "specificity", 0.95),
        ("spec_at_sens90", "threshold_sens90", "sensitivity", 0.90),
        ("spec_at_sens95", "threshold_sens95", "sensitivity", 0.95),
    ):
        t = brute_threshold(yv, pv, fixed, target)
        assert float(params[param]) == pytest.approx(t), param
        value = np.mean(p[y == 1] >= t) if fixed == "specificity" else np.mean(p[y == 0] < t)
        assert m[f"test_{metric}"] == pytest.approx(value), metric
        assert m[f"test_{metric}_ci_low"] <= m[f"test_{metric}"] <= m[f"test_{metric}_ci_high"]
    # ... and not from the test predictions (distinct images, so distinct scores)
    t_test = brute_threshold(y, p, "specificity", 0.90)
    t_val = brute_threshold(yv, pv, "specificity", 0.90)
    if math.isfinite(t_val) and math.isfinite(t_test):
        assert float(params["threshold_spec90"]) != pytest.approx(t_test)
    # the validation split's own run: the same thresholds, tagged in-sample
    val_run_data = mlflow.get_run(val_run).data
    assert val_run_data.tags[clinical_stage.TAG_OPERATING_POINTS] == "val (in-sample)"
    assert val_run_data.params["threshold_spec90"] == params["threshold_spec90"]

    # subgroups: AUC / sensitivity / specificity by scikit-learn on the rows of each group
    frame = load_index("isic2020", isic_dir).split("test").set_index("image_id").loc[test["id"]]
    bands = pd.cut(frame["age"], [0, 40, 60, 80, np.inf], right=False, labels=["0_39", "40_59", "60_79", "80_plus"])
    groups = {
        "sex": frame["sex"].fillna("missing").to_numpy(),
        "age": bands.astype(object).fillna("missing").to_numpy(),
        "site": frame["site"].fillna("missing").str.replace(r"[^a-z0-9]+", "_", regex=True).to_numpy(),
    }
    table = pd.read_csv(tracking.download(run_id, clinical_stage.SUBGROUPS_CSV, tmp_path / "s"))
    assert set(zip(table["attribute"], table["group"], strict=True)) == {
        (a, g) for a, values in groups.items() for g in set(values)
    }
    assert "head_neck" in set(groups["site"]) and "missing" in set(groups["sex"])
    checked = small = 0
    for row in table.to_dict("records"):
        mask = groups[row["attribute"]] == row["group"]
        key = f"{row['attribute']}_{row['group']}"
        assert m[f"test_n__{key}"] == mask.sum() and m[f"test_n_pos__{key}"] == y[mask].sum()
        if min(y[mask].sum(), (1 - y[mask]).sum()) < 2:
            assert row["status"] == "too small" and f"test_auc__{key}" not in m
            small += 1
            continue
        assert m[f"test_auc__{key}"] == pytest.approx(roc_auc_score(y[mask], p[mask]))
        assert m[f"test_sensitivity__{key}"] == pytest.approx(np.mean(p[mask][y[mask] == 1] > 0.5))
        assert m[f"test_specificity__{key}"] == pytest.approx(np.mean(p[mask][y[mask] == 0] <= 0.5))
        checked += 1
    assert checked >= 3
    assert "test_auc__sex_female" in m
    figures = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "figures")}
    assert {"figures/roc_curve.png", "figures/reliability.png", "figures/subgroups_forest.png"} <= figures


# ---- the demo set with a site column; bad input ------------------------------------------------
@pytest.fixture
def demo_with_site(demo_dir, tmp_path) -> Path:
    """A copy of the demo set whose labels.csv carries a ``site`` column (as version 3 of the generator writes)."""
    copy = Path(shutil.copytree(demo_dir, tmp_path / "demo_site"))
    labels = pd.read_csv(copy / "labels.csv", dtype=str)
    labels["site"] = [("Site A", "site-B", "site/C")[i % 3] for i in range(len(labels))]
    labels.to_csv(copy / "labels.csv", index=False)
    return copy


def test_mimic_sex_and_age_come_from_the_mimic_iv_patients_table(tmp_path):
    from medattn.data.testing import write_fake_mimic_jpg

    root = write_fake_mimic_jpg(tmp_path / "mimic", subjects=12)
    index = load_index("mimic-cxr", root)
    frame = index.split("train")
    subjects = sorted(set(frame["patient_id"]))
    patients = pd.DataFrame(
        {"subject_id": subjects, "gender": ["F", "M"] * (len(subjects) // 2) + ["F"] * (len(subjects) % 2),
         "anchor_age": [35 + 10 * i for i in range(len(subjects))], "anchor_year": 2150}
    )  # fmt: skip
    patients.to_csv(tmp_path / "patients.csv.gz", index=False)
    groups = clinical_stage.subgroup_values(index, frame, ("sex", "age"), str(tmp_path / "patients.csv.gz"))
    sex_of = dict(zip(subjects, patients["gender"].map({"F": "female", "M": "male"}), strict=True))
    assert groups["sex"] == [sex_of[s] for s in frame["patient_id"]]
    assert set(groups["age"]) <= {"0_39", "40_59", "60_79", "80_plus"}
    with pytest.raises(DataError, match="--patients-csv"):
        clinical_stage.subgroup_values(index, frame, ("sex",), None)


# ---- temperature scaling end to end -------------------------------------------------------------
@pytest.mark.slow
def test_demo_site_subgroups_bad_input_and_calibrate(
    mlflow_store, train_tiny, demo_with_site, cli, one_error_line, runs_in_store, tmp_path
):
    """One tiny model on the demo set: ``--subgroups site`` on a labels.csv with a site column, the bad
    subgroup options (one sentence, exit 2, no run), then ``medattn calibrate`` and a test of its version."""
    source = train_tiny().run_id
    run_id = cli(
        ["test", "--run-id", source, "--data-dir", demo_with_site, "--subgroups", "site", "--n-boot", "20",
         "--min-subgroup-positives", "1"]
    ).run_id  # fmt: skip
    table = pd.read_csv(tracking.download(run_id, clinical_stage.SUBGROUPS_CSV, tmp_path))
    assert sorted(table["group"]) == ["site_a", "site_b", "site_c"]
    assert table["n"].sum() == mlflow.get_run(run_id).data.metrics["test_n_images"]

    before = runs_in_store()
    cases = [
        (["--subgroups", "sex,ethnicity"], ["unknown subgroup column 'ethnicity'", "sex, age, site"]),
        (["--subgroups", "sexx"], ["did you mean 'sex'"]),
        (["--subgroups", "sex"], ["has no 'sex' per image"]),  # the plain demo set carries no metadata
        (["--patients-csv", "patients.csv.gz"], ["--patients-csv applies to mimic-cxr only"]),
    ]
    for extra, needles in cases:
        res = cli(["test", "--run-id", source, "--n-boot", "5", *extra], exit_code=None)
        one_error_line(res, *needles)
    assert runs_in_store() == before  # no run started, none left RUNNING

    # temperature scaling: a new model version whose test runs show the ECE change
    plain = mlflow.get_run(run_id).data.metrics  # the site run above: the same model and test images
    res = cli(["calibrate", "--run-id", source])
    assert "temperature" in res.output
    cal = mlflow.get_run(res.run_id)
    assert cal.data.tags[tracking.TAG_KIND] == "calibrate"
    assert cal.data.tags[tracking.TAG_SOURCE_RUN] == source
    t = float(cal.data.params["temperature"])
    assert t > 0 and cal.data.params["fit_split"] == "val"
    assert cal.data.metrics["val_nll_after"] <= cal.data.metrics["val_nll_before"] + 1e-9
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{tracking.registered_model_name('demo')}'")
    version = next(v for v in versions if v.run_id == res.run_id)

    tested = cli(["test", "--model-uri", f"models:/{version.name}/{version.version}", "--n-boot", "10"])
    m = mlflow.get_run(tested.run_id).data
    assert float(m.params["temperature"]) == pytest.approx(t)
    # one temperature changes no ranking; the uncalibrated ECE is the plain run's
    assert m.metrics["test_auc"] == pytest.approx(plain["test_auc"])
    assert m.metrics["test_ece_uncalibrated"] == pytest.approx(plain["test_ece"])
    assert m.metrics["test_ece_change"] == pytest.approx(m.metrics["test_ece"] - plain["test_ece"])
    assert "ECE" in tested.output and "against the uncalibrated model" in tested.output
    # the served version applies the temperature too: medattn test's calibrated probabilities
    row = _preds(tested.run_id, tmp_path / "cal").iloc[0]
    served = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}").predict(
        pd.DataFrame({"image": [str(demo_with_site / "images" / f"{row['id']}.png")]})
    )
    assert served["prob_lesion"][0] == pytest.approx(row["prob_1"], abs=1e-5)
    uncalibrated = _preds(run_id, tmp_path / "uncal").set_index("id").loc[row["id"], "prob_1"]
    assert abs(uncalibrated - row["prob_1"]) > 1e-4  # so the check above tells the two apart
    # a calibrated model is not calibrated again: one sentence, exit 2, no run
    before = runs_in_store()
    one_error_line(cli(["calibrate", "--run-id", res.run_id], exit_code=None), "already temperature-scaled")
    assert runs_in_store() == before


# ---- compare: paired ΔECE and Δsensitivity at the operating points ------------------------------
def _fake_test_run(client, exp, model, seed, frame, thresholds):
    train = client.create_run(exp, tags={tracking.TAG_KIND: "train", tracking.TAG_MODEL: model})
    client.log_param(train.info.run_id, "seed", str(seed))
    client.set_terminated(train.info.run_id)
    test = client.create_run(
        exp,
        tags={tracking.TAG_KIND: "test", tracking.TAG_MODEL: model, tracking.TAG_PERC_TRAIN: "1.0",
              tracking.TAG_SPLIT: "test", tracking.TAG_SOURCE_RUN: train.info.run_id},
    )  # fmt: skip
    for name, value in thresholds.items():
        client.log_param(test.info.run_id, name, str(value))
    client.log_metric(test.info.run_id, "test_auc", 0.5)
    client.log_metric(test.info.run_id, "test_ece", hand_ece(frame["label"].to_numpy(), frame["prob_1"].to_numpy()))
    client.log_text(test.info.run_id, frame.to_csv(index=False), tracking.PREDICTIONS)
    if model == "se_resnet50":  # only this variant was tested with --subgroups
        table = clinical.subgroup_table(
            frame["label"].to_numpy(), frame[["prob_0", "prob_1"]].to_numpy(), {"sex": ["female", "male"] * 30},
            min_positives=5, n_boot=0,
        )  # fmt: skip
        client.log_text(test.info.run_id, table.to_csv(index=False), clinical_stage.SUBGROUPS_CSV)
    client.set_terminated(test.info.run_id)


def test_compare_adds_paired_delta_ece_and_delta_sensitivity_at_the_validation_thresholds(mlflow_store):
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("paired-clinical", mlflow_store)
    rng = np.random.default_rng(0)
    n = 60
    ids = [f"img{i:02d}" for i in range(n)]  # already in sorted order: compare joins on sorted ids
    y = (np.arange(n) % 3 == 0).astype(int)
    probs, thresholds = {}, {}
    for model, signal in (("resnet50", 0.5), ("se_resnet50", 1.5)):
        for seed in (0, 1):
            p1 = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, n))))
            probs[(model, seed)] = p1
            thresholds[(model, seed)] = {"threshold_spec90": 0.6 + 0.05 * seed, "threshold_spec95": 0.7 + 0.05 * seed}
            frame = pd.DataFrame({"id": ids, "label": y, "score": p1, "prediction": (p1 > 0.5).astype(int),
                                  "prob_0": 1 - p1, "prob_1": p1})  # fmt: skip
            _fake_test_run(client, exp, model, seed, frame, thresholds[(model, seed)])
    res = compare.compare(compare.CompareConfig(experiment="paired-clinical"))
    metrics = mlflow.get_run(res.run_id).data.metrics

    def two(model):
        return [np.stack([1 - probs[(model, s)], probs[(model, s)]], 1) for s in (0, 1)]

    expected = paired_bootstrap(y, two("se_resnet50"), two("resnet50"), clinical_stage._ece, n_boot=1000, seed=0)
    name = "delta_ece_se_resnet50_vs_resnet50"
    assert metrics[name] == pytest.approx(
        np.mean([hand_ece(y, probs[("se_resnet50", s)]) for s in (0, 1)])
        - np.mean([hand_ece(y, probs[("resnet50", s)]) for s in (0, 1)])
    )
    assert metrics[f"{name}_ci_low"] == pytest.approx(expected.ci_low)
    assert metrics[f"{name}_ci_high"] == pytest.approx(expected.ci_high)
    for op in ("spec90", "spec95"):
        sens = {k: np.mean(probs[k][y == 1] >= thresholds[k][f"threshold_{op}"]) for k in probs}
        delta = np.mean([sens[("se_resnet50", s)] for s in (0, 1)]) - np.mean([sens[("resnet50", s)] for s in (0, 1)])
        key = f"delta_sens_at_{op}_se_resnet50_vs_resnet50"
        assert metrics[key] == pytest.approx(delta)
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"]
    assert clinical_stage.PAIRED_CLINICAL_CSV in res.artifacts
    # the comparison table carries the calibration column (the newest seed's run per variant)
    ece = dict(zip(res.table["model"], res.table["test_ece"], strict=True))
    assert ece["se_resnet50"] == pytest.approx(hand_ece(y, probs[("se_resnet50", 1)]))
    # the subgroup tables side by side (the variant tested with --subgroups only)
    by_model = pd.read_csv(tracking.download(res.run_id, clinical_stage.SUBGROUPS_BY_MODEL_CSV, "downloads"))
    assert by_model[["model", "attribute", "group"]].values.tolist() == [
        ["se_resnet50", "sex", "female"],
        ["se_resnet50", "sex", "male"],
    ]
    female = np.arange(n) % 2 == 0
    p_last = probs[("se_resnet50", 1)]
    assert by_model.loc[0, "auc"] == pytest.approx(roc_auc_score(y[female], p_last[female]))


def test_the_demo_reports_the_subgroups_its_label_table_carries(demo_dir, demo_with_site):
    assert clinical_stage.table_subgroups(demo_with_site) == ("site",)
    assert clinical_stage.table_subgroups(demo_dir) == ("site",)  # version 3 of the generator writes one
    labels = pd.read_csv(demo_with_site / "labels.csv", dtype=str)
    labels.drop(columns="site").to_csv(demo_with_site / "labels.csv", index=False)
    assert clinical_stage.table_subgroups(demo_with_site) == ()
    assert clinical_stage.table_subgroups(demo_dir / "missing") == ()


def test_any_label_table_with_a_site_column_gives_site_subgroups(tmp_path):
    """APTOS has no metadata of its own; a site column added to its train.csv is read like the demo's."""
    from medattn.data.testing import write_fake_aptos

    root = write_fake_aptos(tmp_path / "aptos", n=40)
    csv = pd.read_csv(root / "train.csv", dtype=str)
    csv["site"] = ["Clinic/North" if i % 2 else "clinic south" for i in range(len(csv))]
    csv.to_csv(root / "train.csv", index=False)
    index = load_index("aptos2019", root)
    frame = index.split("test")
    groups = clinical_stage.subgroup_values(index, frame, ("site",))
    assert set(groups["site"]) == {"clinic_north", "clinic_south"}
    with pytest.raises(DataError, match="has no 'age' per image"):
        clinical_stage.subgroup_values(index, frame, ("age",))
