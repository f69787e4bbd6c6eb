"""Config layering (defaults < YAML < CLI), validation, the experiment files in the repo."""

from pathlib import Path

import pytest

from medattn.config import build_train_config, config_from_flat, load_yaml, parse_batch_sizes, split_name
from medattn.errors import ConfigError
from medattn.stages.evaluate import TestConfig
from medattn.stages.figures import FiguresConfig
from medattn.stages.grid import grid_cells
from medattn.stages.interpret import InterpretConfig

REPO = Path(__file__).resolve().parents[1]


def test_defaults_yaml_and_overrides(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("model: CBAMResNet50\nbatchsize: 8\nlr: '1e-5'\nclass-weights: yes\nepochs: 3\n")
    cfg = build_train_config({"epochs": 7, "lr": None}, config_file=f)
    assert cfg.model.model == "cbam_resnet50"  # seed spelling canonicalised
    assert cfg.optim.batch_size == 8 and cfg.optim.lr == 1e-5 and cfg.optim.class_weights is True
    assert cfg.optim.epochs == 7  # CLI beats YAML; None means "not given"
    assert cfg.data.img_size == 224 and cfg.optim.select_metric == "val_loss"  # dataclass defaults


def test_pretrained_default_depends_on_dataset():
    assert build_train_config({"dataset": "demo"}).pretrained == "none"
    assert build_train_config({"dataset": "APTOS"}).pretrained == "imagenet"
    assert build_train_config({"dataset": "aptos2019", "pretrained": "none"}).pretrained == "none"


def test_perc_train_below_one_implies_low_data_regimen():
    cfg = build_train_config({"perc_train": 0.1})
    assert cfg.data.low_data_regimen is True


def test_flat_roundtrip():
    cfg = build_train_config({"model": "se_densenet121", "img_size": 96, "perc_train": 0.5, "seed": 3})
    again = config_from_flat(cfg.flat())
    assert again.flat() == {**cfg.flat(), "resume": None, "ckpt": None}


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"epochs": 0}, "--epochs must be positive"),
        ({"lr": -1}, "--lr must be positive"),
        ({"resize": "direct"}, "did you mean 'direct_resize'"),
        ({"select_metric": "auc"}, "unknown per-epoch metric .auc. for --select-metric; did you mean .val_auc."),
        ({"resume": "abc", "ckpt": "x.pt"}, "not both"),
        ({"epochs": "many"}, "not a valid int"),
    ],
)
def test_invalid_values(over, needle):
    with pytest.raises(ConfigError, match=needle):
        build_train_config(over)


def test_bad_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(f)


def test_split_names():
    assert split_name("Validation") == "val" and split_name("Test") == "test" and split_name("train") == "train"
    with pytest.raises(ConfigError):
        split_name("holdout")


@pytest.mark.parametrize("path", sorted((REPO / "experiments").rglob("*.yaml")), ids=lambda p: p.stem)
def test_repository_experiment_files_load(path):
    raw = load_yaml(path)
    if "grid" in raw:
        cells = grid_cells(path, {"data_dir": "/data"})
        assert len(cells) == 28  # 7 models x 4 fractions
        assert {c.data.perc_train for c in cells} == {0.01, 0.1, 0.5, 1.0}
        assert all(c.data.low_data_regimen == (c.data.perc_train < 1) for c in cells)
        assert {c.optim.lr for c in cells} == {1e-6} and {c.optim.epochs for c in cells} == {300}
        assert cells[0].model.init == path.parent.name
    else:
        assert build_train_config(config_file=path).data.dataset == "demo"


def test_paper_grid_settings():
    isic = load_yaml(REPO / "experiments/paper/isic2020.yaml")
    aptos = load_yaml(REPO / "experiments/paper/aptos2019.yaml")
    assert isic["class_weights"] is True and aptos["class_weights"] is False
    # head "paper": resolved per family by the model factory (DenseNets flatten, ResNets pool), as the
    # original project did
    assert isic["head"] == "paper" and isic["init"] == "paper" and isic["select_metric"] == "val_loss"


def test_parse_batch_sizes():
    assert parse_batch_sizes("32, 8,16,8") == (8, 16, 32)
    for text, needle in (("0,-4", "--batch-sizes"), (",", "no valid batch size"), ("8,x", "not an integer")):
        with pytest.raises(ConfigError, match=needle):
            parse_batch_sizes(text)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: TestConfig(run_id="r", n_boot=-1), "--n-boot must be 0 or more"),
        (lambda: TestConfig(run_id="r", split="holdout"), "unknown split 'holdout'"),
        (lambda: TestConfig(), "exactly one of --run-id, --model-uri or --ckpt"),
        (lambda: InterpretConfig(run_id="r", target="foo"), "--target must be label or pred"),
        (lambda: build_train_config({"select_metric": "val_acc"}), "--select-metric"),
        (lambda: FiguresConfig(run_id="r", saliency_maps="x"), "--saliency-maps"),
    ],
)
def test_configs_refuse_bad_values_in_their_constructor(make, needle):
    """The Python API refuses what the CLI refuses, before any work."""
    with pytest.raises(ConfigError, match=needle):
        make()


def test_every_method_interpret_logs_is_a_figures_choice():
    for method in ("deeplift", "lrp", "gradcam", "transformer-lrp"):
        FiguresConfig(run_id="r", saliency_maps=method)
