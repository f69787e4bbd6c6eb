"""``medattn bench --quick``: runs on CPU and writes every field of the result schema; the ratios
are those of known rates."""

from __future__ import annotations

import json
import types

import pytest
from typer.testing import CliRunner

from medattn.cli import app
from medattn.stages import bench, bench_result
from medattn.stages.bench import default_out
from medattn.stages.bench_result import RATE_FIELDS, SCHEMA, BenchResult, markdown_table

# Known training rates (images/s) per measurement, told apart by the batches and the step count
# each measurement asks for (the quick config below gives every measurement its own step count).
STEPS = {"steps": 2, "files_steps": 3, "seed_steps": 5}
# "batch": one batch repeated (the pure model rate); "loader": batches drawn from a loader.
KNOWN_RATES = {("batch", 2): 400.0, ("loader", 2): 300.0, ("loader", 3): 50.0, ("loader", 5): 12.0}


def test_bench_quick_writes_every_field(tmp_path):
    out = tmp_path / "results" / "cpu.json"
    res = CliRunner().invoke(app, ["bench", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == SCHEMA
    assert set(doc) == {"schema", "device", "versions", "date", "settings", "models", "targets", "errors", "prepare"}
    assert doc["errors"] == [] and doc["prepare"] is None  # measured only with --prepare
    assert doc["device"]["type"] == "cpu" and doc["device"]["name"]
    assert {"python", "torch", "torchvision", "timm", "captum", "cuda", "cudnn"} <= set(doc["versions"])
    assert doc["date"][:4].isdigit()
    for key in ("batch_size", "img_size", "steps", "seed_batch_size", "amp", "channels_last", "models", "quick"):
        assert key in doc["settings"], key
    assert doc["settings"]["quick"] is True and doc["settings"]["models"] == ["resnet50", "deit_tiny"]
    assert [m["model"] for m in doc["models"]] == ["resnet50", "deit_tiny"]
    for m in doc["models"]:
        for key in RATE_FIELDS:
            assert isinstance(m[key], float) and m[key] > 0, (m["model"], key)
        methods = ["transformer-lrp"] if m["model"] == "deit_tiny" else ["deeplift", "lrp"]
        assert list(m["attr_img_s"]) == methods and list(m["attr_single_img_s"]) == methods
        assert all(v > 0 for v in [*m["attr_img_s"].values(), *m["attr_single_img_s"].values()])
    # CPU numbers are never judged against the GPU targets
    assert doc["targets"]["met"]["evaluated"] is False
    assert all(v is None for k, v in doc["targets"]["met"].items() if k != "evaluated")
    table = out.with_suffix(".md").read_text()
    assert "| resnet50 |" in table and "pipeline/pure" in table and table == markdown_table(doc) + "\n"
    assert "pipeline/pure" in res.output


def _known_train_rate(self, model, make_batches, steps, *, amp):
    """Stands in for ``_Bench.train_rate``: the known rate of the measurement (no timing at all)."""
    source = "batch" if isinstance(make_batches(0), types.GeneratorType) else "loader"
    return KNOWN_RATES[(source, steps)]


def test_ratios_are_those_of_the_measured_rates(tmp_path, monkeypatch):
    """pipeline/pure and pipeline/seed-config come from the rates measured, here 300/400 and 300/12."""
    monkeypatch.setattr(bench._Bench, "train_rate", _known_train_rate)
    cfg = bench.quick_config(models=["resnet50"], out=str(tmp_path / "r.json"), **STEPS)
    result = bench.bench(cfg, echo=lambda line: None)
    (rec,) = result.models
    assert not [e for e in result.errors if "train" in e.split(":")[0]], result.errors
    assert rec["pure_train_img_s"] == 400.0 and rec["pipeline_train_img_s"] == 300.0
    assert rec["files_train_img_s"] == 50.0 and rec["seed_config_train_img_s"] == 12.0
    assert rec["pipeline_over_pure"] == pytest.approx(0.75)
    assert rec["pipeline_over_seed_config"] == pytest.approx(25.0)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["models"][0]["pipeline_over_pure"] == pytest.approx(0.75)
    assert "| 0.75 |" in (tmp_path / "r.md").read_text()


def test_default_out_keeps_cpu_runs_out_of_the_gpu_results():
    assert (
        str(default_out({"type": "cuda", "name": "NVIDIA H200"}, "2026-11-26T10:00:00", False))
        == "benchmarks/results/nvidia-h200-2026-11-26.json"
    )
    assert "benchmarks" not in str(default_out({"type": "cuda", "name": "NVIDIA H200"}, "2026-11-26", True))
    assert "benchmarks" not in str(default_out({"type": "cpu", "name": "x86_64"}, "2026-11-26", False))


def test_targets_are_evaluated_on_cuda_only():
    rec = {
        "model": "resnet50",
        "pipeline_over_pure": 0.95,
        "pipeline_over_seed_config": 20.0,
        "attr_img_s": {"deeplift": 600.0},
        "attr_single_img_s": {"deeplift": 40.0},
    }
    gpu = BenchResult(device={"type": "cuda"}, versions={}, date="", settings={}, models=[rec])
    met = gpu.targets()
    assert met["evaluated"] and met["pipeline_over_pure_all_models"] and met["resnet50_pipeline_over_seed_config"]
    assert met["resnet50_deeplift"] and met["deit_tiny_transformer_lrp_batched_over_single"] is None


def test_bench_prepare_adds_the_prepare_field(tmp_path, monkeypatch):
    """``bench --quick --prepare``: the JSON's ``prepare`` holds the prepare rates (model rates are stubbed)."""
    monkeypatch.setattr(bench._Bench, "measure", lambda self, name, record, errors: None)
    out = tmp_path / "p.json"
    res = CliRunner().invoke(
        app, ["bench", "--quick", "--models", "resnet50", "--prepare", "--prepare-workers", "1", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    prep = json.loads(out.read_text())["prepare"]
    assert prep["workers"] == 1 and prep["img_size"] == 32
    assert prep["prepare_img_s"] > 0 and prep["serial_full_decode_img_s"] > 0
    assert set(prep["layouts"]) == set(bench.QUICK_PREPARE_LAYOUTS)
    assert prep["prepare_img_s"] == prep["layouts"]["isic_jpeg"]["prepare_img_s"]
    assert bench_result.prepare_line(prep) in out.with_suffix(".md").read_text()
    bad = CliRunner().invoke(app, ["bench", "--quick", "--prepare", "--prepare-workers", "0"])
    assert bad.exit_code == 2 and "--prepare-workers must be 1 or more" in bad.output
