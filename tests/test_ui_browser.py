"""The MLflow UI in headless Chromium lists medattn's runs and metrics (scripts/ui_check.py).

The screenshots are kept: under this test's pytest tmp dir (``<tmp>/ui_check/experiment.png`` and
``run.png``) and, in the store the test used, as artifacts ``ui_check/*.png`` of a ``ui-check`` run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import matplotlib.image as mpimg
import mlflow
import pytest

from medattn import tracking

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ui_check.py"

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").is_file(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)",
    ),
]


def _load_script():
    spec = importlib.util.spec_from_file_location("ui_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ui_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_mlflow_ui_lists_runs_in_chromium(mlflow_store, tmp_path):
    ui_check = _load_script()
    tracking.ensure_experiment("medattn-ui-check", mlflow_store)
    run_ids = ui_check.seed_store(mlflow_store, tmp_path, "medattn-ui-check")
    out = tmp_path / "ui_check"
    result = ui_check.check_ui(mlflow_store, "medattn-ui-check", out)
    assert result.ok, result
    assert result.expected_runs == ["ui-check-lr1e-3", "ui-check-lr3e-4"]
    assert not result.missing_in_dom and not result.missing_in_api and not result.metrics_missing
    for shot in result.screenshots:
        image = mpimg.imread(shot)
        assert image.shape[:2] == (900, 1400)
        assert image[..., :3].std() > 0.05  # a rendered page, not a blank one
    # the screenshots are logged to the store the check used
    client = mlflow.MlflowClient()
    logged = {a.path for a in client.list_artifacts(result.log_run_id, ui_check.SCREENSHOT_ARTIFACT_DIR)}
    assert logged == {"ui_check/experiment.png", "ui_check/run.png"}
    assert client.get_run(result.log_run_id).data.tags["medattn.kind"] == ui_check.UI_CHECK_KIND
    assert len(run_ids) == 2
    # the server was stopped
    assert "Shutting down" in (out / "mlflow-ui.log").read_text()


def test_script_exits_2_without_chromium(tmp_path, capsys):
    ui_check = _load_script()
    assert ui_check.main(["--chromium", str(tmp_path / "no-chromium"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("Error: no Chromium")
