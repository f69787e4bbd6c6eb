"""``medattn train`` builds its config by name: command line over the --config file (or the resumed
run's logged config) over the config classes' defaults, the same config the Python API resolves."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from medattn import api, config
from medattn.stages import train as train_stage


class _Reached(Exception):
    """Raised by the stand-in for :func:`medattn.api.train`: the command got this far with this config."""


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch):
    """``medattn train`` stops where it would train; returns the config it would have trained."""

    def stage(cfg, *args, **kwargs):
        raise _Reached(cfg)

    monkeypatch.setattr(api, "train", stage)

    def run(cli, args: list) -> config.TrainConfig:
        res = cli(["train", *args], exit_code=1)
        assert isinstance(res.exception, _Reached), res.output
        return res.exception.args[0]

    return run


def test_command_line_wins_over_config_file_wins_over_defaults(tmp_path, cli, captured):
    f = tmp_path / "exp.yaml"
    f.write_text("model: CBAMResNet50\nlr: '1e-5'\nbatchsize: 8\nepochs: 3\nclass-weights: yes\ndevice: cpu\n")
    cfg = captured(cli, ["--config", f, "--lr", "0.5", "--epochs", "2", "--no-class-weights", "--gpu-id", "1"])
    assert cfg.optim.lr == 0.5 and cfg.optim.epochs == 2  # command line over file
    assert cfg.optim.class_weights is False and cfg.device == "cuda:1"  # also a flag's "no" and --gpu-id
    assert cfg.model.model == "cbam_resnet50" and cfg.optim.batch_size == 8  # file over defaults
    assert cfg.optim.weight_decay == 0.0 and cfg.data.img_size == 224  # the classes' defaults
    same = {"lr": 0.5, "epochs": 2, "class_weights": False, "device": "cuda:1"}
    assert cfg == api.resolve_train_config(same, config_file=f)  # the CLI and the Python API agree


def test_resume_takes_the_logged_config_under_the_command_line(cli, captured, monkeypatch, tmp_path):
    logged = {
        **config.build_train_config({"model": "se_resnet50", "lr": 3e-4, "epochs": 2}).flat(),
        "tracking_uri": "http://elsewhere:5000",  # where the run went is never taken from the logged config
    }
    monkeypatch.setattr(train_stage.tracking, "connect", lambda uri: None)
    monkeypatch.setattr(train_stage.tracking, "run_config", lambda run_id: logged if run_id == "abc" else {})
    ignored = tmp_path / "ignored.yaml"
    ignored.write_text("lr: 0.9\n")  # --resume builds on the run, not on a file
    cfg = captured(cli, ["--resume", "abc", "--epochs", "5", "--config", ignored])
    assert (cfg.model.model, cfg.optim.lr, cfg.optim.epochs, cfg.resume) == ("se_resnet50", 3e-4, 5, "abc")
    assert cfg.tracking.tracking_uri is None


@pytest.mark.parametrize(
    "builder, part",
    [
        (config.data_config, config.DataConfig),
        (config.model_config, config.ModelConfig),
        (config.optim_config, config.OptimConfig),
        (config.tracking_config, config.TrackingConfig),
    ],
)
def test_every_config_field_is_a_named_keyword_of_its_builder(builder, part):
    """A field added to a config part without its keyword would be silently left at its default."""
    keywords = {n for n, p in inspect.signature(builder).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert keywords == {f.name for f in dataclasses.fields(part)}
    assert builder() == part()
