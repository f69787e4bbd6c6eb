"""`medattn models`: the table, and the one-line errors of building a model from the CLI."""

from __future__ import annotations

import urllib.error

import pytest
from typer.testing import CliRunner

from medattn.cli import app
from medattn.models import MODELS, model_table
from medattn.models import weights as weights_mod


def test_models_lists_every_name_and_parameter_count() -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for row in model_table():
        assert row["name"] in result.output
        assert f"{row['params']:,}" in result.output
    assert len(model_table()) == len(MODELS)


def test_offline_imagenet_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(backbone: str) -> dict:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(weights_mod, "fetch_imagenet_state_dict", offline)
    result = CliRunner().invoke(app, ["models", "--model", "DeiT-T", "--pretrained", "imagenet", "--nr-layers", "1"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1
    assert "--weights PATH" in lines[0] and "--pretrained none" in lines[0]
    assert "Traceback" not in result.output


def test_unknown_model_suggests() -> None:
    result = CliRunner().invoke(app, ["models", "--model", "cbam_resnet5"])
    assert result.exit_code == 2
    assert "did you mean 'cbam_resnet50'" in result.output
