"""`medattn models`: the one-line errors of building a model from the CLI (its table, one row per
registered model with its parameter count, is checked in test_models_registry.py)."""

from __future__ import annotations

import urllib.error

import pytest
from typer.testing import CliRunner

from medattn.cli import app
from medattn.models import weights as weights_mod


def test_offline_imagenet_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch, one_error_line) -> None:
    def offline(backbone: str) -> dict:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(weights_mod, "fetch_imagenet_state_dict", offline)
    result = CliRunner().invoke(app, ["models", "--model", "DeiT-T", "--pretrained", "imagenet", "--nr-layers", "1"])
    one_error_line(result, "--weights PATH", "--pretrained none")


def test_unknown_model_suggests(one_error_line) -> None:
    result = CliRunner().invoke(app, ["models", "--model", "cbam_resnet5"])
    one_error_line(result, "did you mean 'cbam_resnet50'")
