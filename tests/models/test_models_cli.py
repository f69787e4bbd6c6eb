"""`medattn models`: the table, and the one-line errors of building a model from the CLI."""

from __future__ import annotations

import urllib.error

import pytest
from typer.testing import CliRunner

from medattn.cli import app
from medattn.models import model_table
from medattn.models import weights as weights_mod

# The seven models of the paper with their parameter counts (2 classes, 224 px, pooled head, 12 DeiT
# blocks), counted once from real builds (see test_models_factory.EXPECTED_PARAMS).
TABLE = {
    "densenet121": "6,955,906",
    "resnet50": "23,512,130",
    "se_densenet121": "7,262,002",
    "se_resnet50": "26,043,122",
    "cbam_densenet121": "7,262,402",
    "cbam_resnet50": "26,044,722",
    "deit_tiny": "5,524,802",
}


def test_models_lists_every_name_and_parameter_count() -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[0]: line for line in result.output.splitlines() if line.split()[:1] and line.split()[0] in TABLE
    }
    assert set(rows) == set(TABLE), result.output
    for name, params in TABLE.items():
        assert params in rows[name], rows[name]
    assert [row["name"] for row in model_table()] == list(TABLE)


def test_offline_imagenet_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch, one_error_line) -> None:
    def offline(backbone: str) -> dict:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(weights_mod, "fetch_imagenet_state_dict", offline)
    result = CliRunner().invoke(app, ["models", "--model", "DeiT-T", "--pretrained", "imagenet", "--nr-layers", "1"])
    one_error_line(result, "--weights PATH", "--pretrained none")


def test_unknown_model_suggests(one_error_line) -> None:
    result = CliRunner().invoke(app, ["models", "--model", "cbam_resnet5"])
    one_error_line(result, "did you mean 'cbam_resnet50'")
