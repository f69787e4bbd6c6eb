"""`medattn report`: the page's numbers are the runs' metrics, it is self-contained, missing and failed
cells are listed, the clinical sections follow what the runs logged, bad input is one sentence."""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.entities import Metric, Param

import medattn
from medattn import tracking
from medattn.errors import MedattnError
from medattn.metrics import roc_auc
from medattn.models import MODELS
from medattn.stages import compare_paired
from medattn.stages import report as report_stage
from medattn.stages.report import ReportConfig, parse_xai_metrics, report
from medattn.stages.report_setup import architecture_label

N = 40
PARAMS = 23_512_130


class Page(HTMLParser):
    """The parts of a report page the tests read: numbers, images, resource URLs, tables."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.numbers: list[dict[str, str]] = []
        self.images: list[str] = []
        self.resources: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: set[str] = set()
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_num: dict[str, str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if "data-metric" in a and "data-value" in a:
            self.numbers.append(a)
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("src", "srcset", "data", "poster"):
            if key in a:
                self.resources.append(a[key])
        if tag in ("link", "script", "iframe", "embed", "object") and ("href" in a or "src" in a):
            self.resources.append(a.get("href") or a.get("src"))
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> list[dict[str, str]]:
        """A table's body rows as ``{header: text}``."""
        head, *body = self.tables[table]
        return [dict(zip(head, row, strict=True)) for row in body]


def _frame(ids, y, p1) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": ids, "label": y, "score": p1, "prediction": (p1 > 0.5).astype(int), "prob_0": 1 - p1, "prob_1": p1}
    )


def _log(client, run_id: str, metrics: dict[str, float], params: dict[str, object] | None = None) -> None:
    """Metrics and params in one write (a store shared by many processes is slow per call)."""
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
    )


def _train_run(client, exp: str, model: str, seed: int, *, lr: str = "0.001") -> str:
    rid = client.create_run(
        exp,
        run_name=f"{model}-s{seed}",
        tags={
            tracking.TAG_KIND: "train",
            tracking.TAG_MODEL: model,
            tracking.TAG_DATASET: "demo",
            tracking.TAG_PERC_TRAIN: "1.0",
        },
    ).info.run_id
    params = {"seed": seed, "lr": lr, "epochs": 2, "duplicates": "group", "head": "pool"}
    _log(client, rid, {"duplicate_groups": 2.0, "duplicate_images": 5.0}, params)
    labels = {"train": [0, 1, 1, 0, 0, 0], "val": [0, 1], "test": [0, 1, 0, 0, 1]}
    with tempfile.TemporaryDirectory() as tmp:  # one upload for the manifests and the summary
        folder = Path(tmp)
        (folder / tracking.SPLITS_DIR).mkdir()
        for split, y in labels.items():
            frame = pd.DataFrame({"image_id": [f"{split}{i}" for i in range(len(y))], "label": y})
            frame.to_csv(folder / tracking.SPLITS_DIR / f"{split}.csv", index=False)
        (folder / tracking.MODEL_SUMMARY).write_text(f"parameters: {PARAMS:,}\ntrainable: {PARAMS:,}\n\nResNet(...)\n")
        client.log_artifacts(rid, tmp)
    client.set_terminated(rid)
    return rid


def _test_run(client, exp: str, model: str, source: str, frame: pd.DataFrame, *, clinical: bool, status="FINISHED"):
    rid = client.create_run(
        exp,
        run_name=f"test-{model}",
        tags={
            tracking.TAG_KIND: "test",
            tracking.TAG_MODEL: model,
            tracking.TAG_DATASET: "demo",
            tracking.TAG_PERC_TRAIN: "1.0",
            tracking.TAG_SPLIT: "test",
            tracking.TAG_SOURCE_RUN: source,
        },
    ).info.run_id
    y, p = frame["label"].to_numpy(), frame[["prob_0", "prob_1"]].to_numpy()
    auc = roc_auc(y, p)
    metrics = {
        "test_auc": auc,
        "test_auc_ci_low": auc - 0.07,
        "test_auc_ci_high": min(1.0, auc + 0.05),
        "test_balanced_accuracy": 0.61 + 0.01 * len(model),
        "test_balanced_accuracy_ci_low": 0.5,
        "test_balanced_accuracy_ci_high": 0.7,
        "test_sensitivity": 0.55,
        "test_specificity": 0.66 + 0.001 * len(source),
        "test_accuracy": 0.6,
        "test_n_images": float(len(frame)),
    }
    if clinical:
        metrics.update(
            {
                "test_oracle_auc": 0.93,
                "test_oracle_auc_ci_low": 0.9,
                "test_oracle_auc_ci_high": 0.96,
                "test_oracle_gap": 0.93 - auc,
                "test_ece": 0.0412,
                "test_ece_ci_low": 0.02,
                "test_ece_ci_high": 0.06,
                "test_brier": 0.2031,
                "test_sens_at_spec90": 0.3125,
                "test_sens_at_spec90_ci_low": 0.1,
                "test_sens_at_spec90_ci_high": 0.5,
                "test_auc__sex_female": 0.7123,
                "test_auc_ci_low__sex_female": 0.6,  # the CI spelling of medattn's subgroup metrics
                "test_auc_ci_high__sex_female": 0.8,
                "test_n__sex_female": 17.0,
                "test_auc__sex_male": 0.6543,
                "test_n__sex_male": 23.0,
            }
        )
    _log(client, rid, metrics, {"threshold_spec90": "0.7321"} if clinical else {})
    client.log_text(rid, frame.to_csv(index=False), tracking.PREDICTIONS)
    client.set_terminated(rid, status)
    return rid


@pytest.fixture
def tiny(mlflow_store, fake_interpret_run):
    """resnet50 and se_resnet50 with two seeds, densenet121 with one (clinical metrics on every test run),
    cbam_resnet50 whose test FAILED, deit_tiny trained but not tested, an interpret run of two models."""
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("tiny-report", mlflow_store)
    rng = np.random.default_rng(0)
    ids = np.array([f"img{i}" for i in range(N)])
    y = (np.arange(N) % 3 == 0).astype(int)
    tests: dict[str, list[str]] = {}
    frames: dict[tuple[str, float], dict[int, pd.DataFrame]] = {}
    for model, signal, seeds in (("resnet50", 0.5, (0, 1)), ("se_resnet50", 1.5, (0, 1)), ("densenet121", 1.0, (0,))):
        for seed in seeds:
            source = _train_run(client, exp, model, seed)
            p1 = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, N))))
            frames.setdefault((model, 1.0), {})[seed] = _frame(ids, y, p1)
            tests.setdefault(model, []).append(_test_run(client, exp, model, source, _frame(ids, y, p1), clinical=True))
    failed_source = _train_run(client, exp, "cbam_resnet50", 0)
    failed = _test_run(
        client, exp, "cbam_resnet50", failed_source, _frame(ids, y, y * 0.9), clinical=True, status="FAILED"
    )
    untested = _train_run(client, exp, "deit_tiny", 0, lr="0.0005")
    interp = {}
    for model in ("resnet50", "se_resnet50"):
        fake = fake_interpret_run(exp, rng, model=model, ids=("img0", "img1", "img2"), size=16, with_train=False)
        client.set_tag(fake.run_id, tracking.TAG_DATASET, "demo")
        client.set_tag(fake.run_id, tracking.TAG_PERC_TRAIN, "1.0")
        xai = {
            "xai_deeplift_pointing_game": 0.8,
            "xai_deeplift_pointing_game_ci_low": 0.7,
            "xai_deeplift_pointing_game_ci_high": 0.9,
            "xai_deeplift_morf_auc": 0.2,
            "xai_deeplift_lerf_auc": 0.6,
            "xai_deeplift_pointing_game_passes": 1.0,
            "xai_deeplift_passes_sanity": 1.0,
            "xai_lrp_pointing_game": 0.3,
            "xai_lrp_pointing_game_passes": 0.0,
            "xai_lrp_passes_sanity": 0.0,
            "xai_baseline_centre_pointing_game": 0.4,
            "xai_baseline_randomized_deeplift_pointing_game": 0.35,
            "xai_oracle_pointing_game": 1.0,
            "xai_oracle_passes_sanity": 1.0,
            "xai_n_images": 3.0,
        }
        _log(client, fake.run_id, xai)
        interp[model] = fake.run_id
    return {"exp": exp, "tests": tests, "failed": failed, "untested": untested, "interp": interp, "frames": frames}


@functools.cache
def _metrics(run_id: str) -> dict[str, float]:
    return mlflow.MlflowClient().get_run(run_id).data.metrics


def test_report_numbers_are_the_runs_metrics_and_the_page_is_self_contained(tiny, tmp_path):
    res = report(ReportConfig(experiment="tiny-report", out=str(tmp_path / "r.html")))
    html = res.path.read_text()
    page = Page(html)
    # every number that comes from runs equals their metric (one run) or the mean of their metrics (seeds)
    checked = 0
    for num in page.numbers:
        runs = num.get("data-runs", "").split()
        metric, value = num["data-metric"], float(num["data-value"])
        if not runs or not metric.startswith(("test_", "xai_")):
            continue
        values = [_metrics(r)[metric] for r in runs]
        assert value == pytest.approx(np.mean(values), abs=1e-12), (metric, runs)
        if len(runs) == 1:
            assert value == values[0]  # the exact float, not a rounded copy
        checked += 1
    assert checked >= 40
    # the headline cells, read from the results table itself
    results = {r["Model"]: r for r in page.rows("results")}
    assert set(results) == {"resnet50", "se_resnet50", "densenet121"}
    dn = _metrics(tiny["tests"]["densenet121"][0])
    assert results["densenet121"]["Test AUC"] == (
        f"{dn['test_auc']:.3f} [{dn['test_auc_ci_low']:.3f}, {dn['test_auc_ci_high']:.3f}]"
    )
    se = [_metrics(r)["test_auc"] for r in tiny["tests"]["se_resnet50"]]
    assert results["se_resnet50"]["Test AUC"] == f"{np.mean(se):.3f} ± {np.std(se, ddof=1):.3f} (2 seeds)"
    assert results["se_resnet50"]["Seeds"] == "2"
    assert results["densenet121"]["Oracle AUC (ceiling)"] == "0.930 [0.900, 0.960]"
    # the paired ΔAUC is the one medattn compare computes from the same predictions (both seeds per side)
    expected = compare_paired.paired_table(tiny["frames"]).set_index("variant").loc["se_resnet50"]
    delta = next(n for n in page.numbers if n["data-metric"] == "delta_auc")
    assert float(delta["data-value"]) == pytest.approx(expected["delta_auc"])
    assert float(delta["data-ci-low"]) == pytest.approx(expected["ci_low"])
    assert set(delta["data-runs"].split()) == {*tiny["tests"]["se_resnet50"], *tiny["tests"]["resnet50"]}
    assert "SE on ResNet-50: ΔAUC" in html
    # parameter counts from the models' summaries, split sizes and class balance from the manifests
    params = [n for n in page.numbers if n["data-metric"] == "parameters"]
    assert params and all(float(n["data-value"]) == PARAMS for n in params)
    datasets = page.rows("datasets")[0]
    assert (datasets["Train"], datasets["Test"]) == ("6 (33 % positive)", "5 (40 % positive)")
    assert datasets["Near-duplicate handling"].startswith("group: 2 groups of near-duplicates (5 images)")
    assert "lr" in page.tables["settings_differ"][0]  # DeiT was trained with another lr
    # self-contained: every image inlined, nothing loaded from any host
    assert len(page.images) >= 2 and all(
        src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in page.images
    )
    assert not [r for r in page.resources if not r.startswith("data:")]
    assert "http://" not in html and "https://" not in html
    # failed, missing and untested cells are listed
    problems = page.rows("problems")
    what = {(r["What"], r["Model"]) for r in problems}
    assert ("test run failed", "cbam_resnet50") in what
    assert ("trained, not tested", "deit_tiny") in what
    assert ("not explained", "densenet121") in what
    assert tiny["failed"][:8] in {r["Run"] for r in problems}
    # the clinical sections show what the test runs logged
    assert {"calibration", "operating_points", "subgroups"} <= page.ids
    calibration = {r["Model"]: r for r in page.rows("calibration")}
    assert calibration["densenet121"]["ECE"] == "0.041 [0.020, 0.060]"
    ops = {r["Model"]: r for r in page.rows("operating_points")}
    assert ops["densenet121"]["Threshold spec90"] == "0.732"
    subgroups = {(r["Model"], r["Subgroup"]): r for r in page.rows("subgroups")}
    assert subgroups[("densenet121", "sex_female")]["auc"] == "0.712 [0.600, 0.800]"
    assert "auc ci low" not in page.tables["subgroups"][0]  # a CI is part of its number, not a column
    assert subgroups[("densenet121", "sex_male")]["Images"] == "23"
    # explanation scores with baselines, ROAD scores, the oracle and the verdicts
    xai = {(r["Model"], r["Source"]): r for r in page.rows("xai_scores")}
    assert xai[("resnet50", "deeplift")]["Verdict"] == "passes"
    assert xai[("resnet50", "lrp")]["Verdict"] == "fails (pointing game)"
    assert xai[("resnet50", "deeplift")]["morf auc ↓"] == "0.200"
    assert xai[("resnet50", "baseline_centre")]["Kind"] == "sanity baseline"
    assert "The ground-truth mask scored as a map on resnet50 (demo) passes the sanity rule" in html
    # logged: a report run with the page and its tables as CSV
    run = mlflow.MlflowClient().get_run(res.run_id)
    assert run.data.tags[tracking.TAG_KIND] == "report" and run.info.status == "FINISHED"
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id)}
    assert tracking.REPORT_HTML in logged
    tables = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id, tracking.REPORT_TABLES_DIR)}
    assert {"tables/results.csv", "tables/paired_auc.csv", "tables/problems.csv", "tables/xai_scores.csv"} <= tables
    csv = pd.read_csv(tracking.download(res.run_id, "tables/results.csv", tmp_path / "dl"))
    row = csv[csv["model"] == "densenet121"].iloc[0]
    assert row["test_auc"] == dn["test_auc"] and row["test_auc_runs"] == tiny["tests"]["densenet121"][0]
    assert not list(tmp_path.glob(".r.html.*"))  # no temp file left beside the page


@pytest.fixture
def plain(mlflow_store) -> str:
    """Experiment ``plain``: one finished test run with the basic metrics only (no training run)."""
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("plain", mlflow_store)
    y = np.array([0, 1] * 10)
    frame = _frame([f"i{k}" for k in range(20)], y, 0.3 + 0.4 * y)
    return _test_run(client, exp, "resnet50", "unknown-source", frame, clinical=False)


def test_sections_without_runs_that_logged_them_are_left_out(plain, tmp_path):
    res = report(ReportConfig(experiment="plain", out=str(tmp_path / "plain.html")))
    page = Page(res.path.read_text())
    assert not {"calibration", "operating_points", "subgroups", "clinical", "paper"} & page.ids
    assert "Oracle AUC (ceiling)" not in page.tables["results"][0]
    assert "No finished interpret run: the explanations are untested" in res.path.read_text()
    assert {r["What"] for r in page.rows("problems")} == {"not explained"}


def test_ui_url_links_numbers_to_run_pages(plain, tmp_path):
    res = report(ReportConfig(experiment="plain", out=str(tmp_path / "r.html"), ui_url="http://127.0.0.1:5000"))
    html = res.path.read_text()
    page = Page(html)
    exp = mlflow.MlflowClient().get_run(plain).info.experiment_id
    assert f'href="http://127.0.0.1:5000/#/experiments/{exp}/runs/{plain}"' in html
    assert not [r for r in page.resources if not r.startswith("data:")]  # links, never loads


def test_parse_xai_metrics_reads_sources_it_was_not_told_about():
    parsed = parse_xai_metrics(
        {
            "xai_transformer_lrp_morf_auc": 0.1,
            "xai_transformer_lrp_morf_auc_ci_low": 0.05,
            "xai_transformer_lrp_passes_sanity": 0.0,
            "xai_transformer_lrp_deletion_auc_passes": 0.0,
            "xai_baseline_randomized_transformer_lrp_insertion_auc": 0.4,
            "xai_baseline_edge_pointing_game": 0.2,
            "xai_oracle_road_new_score": 0.9,
            "xai_n_images": 8.0,
        },
        ["transformer-lrp"],
    )
    assert set(parsed) == {"transformer_lrp", "baseline_randomized_transformer_lrp", "baseline_edge", "oracle"}
    assert parsed["transformer_lrp"]["scores"]["morf_auc"][:2] == (0.1, 0.05)
    assert math.isnan(parsed["transformer_lrp"]["scores"]["morf_auc"][2])
    assert parsed["transformer_lrp"]["passes"] == {"deletion_auc": 0.0}
    assert parsed["oracle"]["scores"]["road_new_score"][0] == 0.9


# ---- bad input: one sentence, exit 2, nothing written, no run started -----------------------
def test_unknown_experiment_is_one_sentence(cli, one_error_line, mlflow_store, tmp_path, runs_in_store):
    out = tmp_path / "r.html"
    res = cli(["report", "--experiment", "nope", "--out", out], exit_code=2)
    one_error_line(res, "experiment 'nope' does not exist", only=True)
    assert not out.exists() and runs_in_store() == {}


def test_experiment_without_finished_runs_is_one_sentence(cli, one_error_line, mlflow_store, tmp_path, runs_in_store):
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment("empty-ish", mlflow_store)
    rid = client.create_run(exp, tags={tracking.TAG_KIND: "train", tracking.TAG_MODEL: "resnet50"}).info.run_id
    client.set_terminated(rid, "FAILED")
    out = tmp_path / "r.html"
    res = cli(["report", "--experiment", "empty-ish", "--out", out], exit_code=2)
    one_error_line(res, "has no finished train, test or interpret run", only=True)
    assert not out.exists() and runs_in_store() == {rid: "FAILED"}


@pytest.mark.parametrize("where", ["missing-folder", "file-as-folder"])
def test_unwritable_out_is_one_sentence(cli, one_error_line, plain, tmp_path, runs_in_store, where):
    before = runs_in_store()
    if where == "missing-folder":
        out = tmp_path / "no" / "such" / "r.html"
    else:
        (tmp_path / "plain-file").write_text("x")
        out = tmp_path / "plain-file" / "r.html"
    res = cli(["report", "--experiment", "plain", "--out", out], exit_code=2)
    one_error_line(res, "cannot write the report to", "choose another --out", only=True)
    assert not out.exists() and runs_in_store() == before


def test_out_that_is_a_folder_is_one_sentence(cli, one_error_line, plain, tmp_path):
    res = cli(["report", "--experiment", "plain", "--out", tmp_path], exit_code=2)
    one_error_line(res, "is a folder", only=True)


def test_pdf_without_chromium_is_one_sentence(cli, one_error_line, plain, tmp_path, monkeypatch, runs_in_store):
    before = runs_in_store()
    monkeypatch.setattr(report_stage, "CHROMIUM_CANDIDATES", (str(tmp_path / "no-chromium"),))
    out = tmp_path / "r.html"
    res = cli(["report", "--experiment", "plain", "--out", out, "--pdf"], exit_code=2)
    one_error_line(res, "--pdf needs headless Chromium", only=True)
    assert not out.exists() and runs_in_store() == before


def test_a_failed_write_leaves_neither_page_nor_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    target.write_text("the previous report")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_stage.os, "replace", broken)
    with pytest.raises(OSError):
        report_stage.write_atomic(target, b"<html>new</html>")
    assert target.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_cli_prints_the_page_and_how_to_open_it(cli, plain, tmp_path, monkeypatch):
    private = tmp_path / "tmpdir"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    out = tmp_path / "cli.html"
    res = cli(["report", "--experiment", "plain", "--out", out])
    assert list(private.iterdir()) == []  # downloads, the logged copies: nothing stays in the temp folder
    assert f"Wrote {out}" in res.output
    assert f"open it with: python -m webbrowser {out.as_uri()}" in res.output
    assert res.run_id and mlflow.MlflowClient().get_run(res.run_id).data.tags[tracking.TAG_KIND] == "report"


def test_bad_ui_url_is_refused():
    with pytest.raises(MedattnError, match="--ui-url must be an http"):
        ReportConfig(experiment="x", ui_url="ftp://host")


def test_paper_results_are_shipped_with_the_package():
    paper = report_stage.paper_results()
    # accuracy of 7 models × 3 data sets × 4 fractions; AUC at 3 fractions, and at 100 % for DeiT-Tiny only
    assert (paper["metric"] == "accuracy").sum() == 84 and (paper["metric"] == "auc").sum() == 63 + 3
    value = paper.set_index(["dataset", "model", "perc_train", "metric"])["value"]
    assert value[("aptos2019", "densenet121", 1.0, "accuracy")] == 0.976
    assert value[("isic2020", "deit_tiny", 1.0, "auc")] == 0.845
    assert ("aptos2019", "densenet121", 1.0, "auc") not in value.index


# ---- a real browser: the page renders, the results table shows, the PDF prints -------------
HEADLINE_RGB = np.array([0x0F, 0x51, 0x32]) / 255  # the results table's header (--headline in the template's CSS)


@pytest.mark.chromium
@pytest.mark.skipif(report_stage.find_chromium() is None, reason="needs headless Chromium (apt-get install chromium)")
def test_page_renders_in_chromium_and_prints_to_pdf(tiny, tmp_path):
    pypdf = pytest.importorskip("pypdf")
    res = report(ReportConfig(experiment="tiny-report", out=str(tmp_path / "r.html"), pdf=True))
    binary = report_stage.find_chromium()
    shot = tmp_path / "results.png"
    with tempfile.TemporaryDirectory() as profile:  # one browser start: the screenshot and the rendered DOM
        dom = subprocess.run(
            report_stage.chromium_command(
                binary,
                Path(profile),
                "--window-size=1280,3000",
                f"--screenshot={shot}",
                "--dump-dom",
                res.path.as_uri(),
            ),
            check=True,
            capture_output=True,
            timeout=120,
        ).stdout.decode()
    image = mpimg.imread(shot)[..., :3]
    assert image.shape[:2] == (3000, 1280)
    assert image.std() > 0.05  # a rendered page, not a blank one
    headline = np.abs(image - HEADLINE_RGB).max(axis=-1) < 0.03
    rows = np.flatnonzero(headline.sum(axis=1) > 400)  # pixel rows where the header band spans the table
    assert len(rows) >= 15, "the results table's header is not drawn in the first 3000 pixels"
    rendered = Page(dom)
    models = {r["Model"] for r in rendered.rows("results")}
    assert models == {"resnet50", "se_resnet50", "densenet121"}
    # the PDF: at least one page, with the results in it
    reader = pypdf.PdfReader(res.pdf)
    assert len(reader.pages) >= 1
    text = " ".join(page.extract_text() for page in reader.pages)
    assert "Results on the test split" in text and "densenet121" in text
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(res.pdf)], capture_output=True, text=True, check=True).stdout
        assert int(re.search(r"^Pages:\s+(\d+)", info, flags=re.MULTILINE)[1]) == len(reader.pages)
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id)}
    assert tracking.REPORT_PDF in logged


# ---- --paper on a real-format APTOS 2019 experiment -----------------------------------------
@pytest.mark.slow
def test_paper_puts_the_original_numbers_next_to_a_real_format_aptos_experiment(mlflow_store, tmp_path, tiny_train):
    from medattn.data.testing import write_fake_aptos
    from medattn.stages.evaluate import TestConfig
    from medattn.stages.evaluate import test as test_stage
    from medattn.stages.train import resolve_train_config, train

    data = write_fake_aptos(tmp_path / "aptos", n=40, seed=1)  # train.csv + train_images/<id_code>.png
    cfg = resolve_train_config(
        {**tiny_train, "dataset": "APTOS", "data_dir": str(data), "pretrained": "none", "experiment": "aptos-paper"}
    )
    trained = train(cfg, progress=False)
    tested = test_stage(TestConfig(run_id=trained.run_id, n_boot=50), progress=False)
    res = report(ReportConfig(experiment="aptos-paper", out=str(tmp_path / "paper.html"), paper=True))
    html = res.path.read_text()
    page = Page(html)
    rows = {(r["Model"], r["% train"]): r for r in page.rows("paper_aptos2019")}
    assert len(rows) == 7 * 4  # every model × fraction the original published for APTOS 2019
    mine = rows[("deit_tiny", "100 %")]
    acc, auc = tested.metrics["test_accuracy"], tested.metrics["test_auc"]
    assert (mine["Original accuracy"], mine["Original AUC"]) == ("0.971", "0.994")
    assert (mine["Your accuracy"], mine["Your AUC"]) == (f"{acc:.3f}", f"{auc:.3f}")
    assert mine["Δ accuracy"] == f"{acc - 0.971:+.3f}".replace("-", "\N{MINUS SIGN}")
    assert mine["Your cell"] == "tested"
    mine_nums = [n for n in page.numbers if n.get("data-runs") == tested.run_id and n["data-metric"] == "test_accuracy"]
    assert mine_nums and all(float(n["data-value"]) == acc for n in mine_nums)
    others = [r for k, r in rows.items() if k != ("deit_tiny", "100 %")]
    assert all(r["Your accuracy"] == "not run" and r["Your cell"] == "not run" for r in others)
    assert rows[("densenet121", "100 %")]["Original AUC"] == "not published"
    assert rows[("cbam_resnet50", "1 %")]["Original accuracy"] == "0.751"
    assert "seed 42" in html and "majority rate on ISIC 2020" in html
    assert "calibration" in page.ids  # the test stage's own calibration metrics reach the page
    ece = next(n for n in page.numbers if n["data-metric"] == "test_ece")
    assert float(ece["data-value"]) == tested.metrics["test_ece"]
    # the real runs carry the versions they were made with, and the page lists them
    versions = {r["Software"]: r for r in page.rows("versions")}
    assert versions["medattn"]["Runs made with"] == f"{medattn.__version__} (2 runs)"
    assert versions["torch"]["Runs made with"] == f"{torch.__version__} (2 runs)"
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id, tracking.REPORT_TABLES_DIR)}
    assert "tables/paper_aptos2019.csv" in logged


def test_the_models_table_names_the_vit_as_trained():
    # the demo's DeiT has 8-px patches and 4 blocks: the report must not call it DeiT-Tiny/16
    deit, resnet = MODELS.get("deit_tiny"), MODELS.get("resnet50")
    assert architecture_label(deit, {"patch_size": "8", "nr_layers": "4"}) == "DeiT-Tiny/8, 4 blocks"
    assert architecture_label(deit, {"patch_size": "16", "nr_layers": "12"}) == "DeiT-Tiny/16"
    assert architecture_label(deit, {}) == "DeiT-Tiny/16"  # runs from before patch_size was logged
    assert architecture_label(resnet, {"patch_size": "16", "nr_layers": "12"}) == "ResNet-50"
    assert architecture_label(None, {}) == "?"
