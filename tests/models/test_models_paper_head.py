"""The paper configs build the original project's heads: DenseNets flatten, ResNets and DeiT pool.

Expected parameter counts are computed here independently of medattn's builders: the backbones
from torchvision's reference ResNet-50 / DenseNet-121 (what the original project wrapped), the
attention blocks and DeiT-Tiny from their formulas, the heads as the original project built them
(``fc1 = Linear(flattened backbone output, classes)``: 1024 x 7 x 7 for the DenseNets, whose
backbone is ``densenet121().features``; 2048 for the ResNets, whose backbone keeps ``avgpool``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from medattn import config
from medattn.errors import ConfigError
from medattn.models import HEAD_CHOICES, count_parameters, create_model, resolve_head

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = sorted((REPO / "experiments" / "paper").glob("*.yaml"))
NUM_CLASSES = 2

RESNET_STAGE_CHANNELS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3  # output of every bottleneck
DENSENET_BLOCK_CHANNELS = [256, 512, 1024, 1024]  # output of each of the 4 dense blocks


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _se(c: int, r: int = 16) -> int:
    # senet.pytorch's SELayer, as the original project used it: Linear(C, C/r) and Linear(C/r, C), no biases
    return 2 * c * (c // r)


def _se_fc_biases(c: int, r: int = 16) -> int:
    # medattn's SE (like Hu et al.'s reference and timm) gives its two FC layers biases: a known deviation
    return c // r + c


def _cbam(c: int, r: int = 16) -> int:
    # CBAM (Jongchan/attention-module): MLP Linear(C, C/r) + Linear(C/r, C) with biases; spatial 7x7 conv 2->1
    # without bias + BatchNorm2d(1)
    h = c // r
    return (c * h + h) + (h * c + c) + 2 * 7 * 7 + 2


def _deit_tiny(classes: int, depth: int = 12, dim: int = 192, mlp: int = 768, patch: int = 16, side: int = 224) -> int:
    tokens = (side // patch) ** 2 + 1
    block = 2 * (2 * dim) + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * mlp + mlp) + (mlp * dim + dim)
    return (3 * patch * patch * dim + dim) + dim + tokens * dim + depth * block + 2 * dim + (dim * classes + classes)


def _original_counts() -> dict[str, int]:
    """Parameter counts of the original project's seven models at 224 px, 2 classes."""
    with torch.device("meta"):
        resnet = _count(torchvision.models.resnet50()) - (2048 * 1000 + 1000)  # backbone incl. avgpool, no fc
        densenet = _count(torchvision.models.densenet121().features)
    pool_head = 2048 * NUM_CLASSES + NUM_CLASSES
    flatten_head = 1024 * 7 * 7 * NUM_CLASSES + NUM_CLASSES
    se_res = sum(_se(c) + _se_fc_biases(c) for c in RESNET_STAGE_CHANNELS)
    se_dense = sum(_se(c) + _se_fc_biases(c) for c in DENSENET_BLOCK_CHANNELS)
    return {
        "densenet121": densenet + flatten_head,
        "resnet50": resnet + pool_head,
        "se_densenet121": densenet + se_dense + flatten_head,
        "se_resnet50": resnet + se_res + pool_head,
        "cbam_densenet121": densenet + sum(map(_cbam, DENSENET_BLOCK_CHANNELS)) + flatten_head,
        "cbam_resnet50": resnet + sum(map(_cbam, RESNET_STAGE_CHANNELS)) + pool_head,
        "deit_tiny": _deit_tiny(NUM_CLASSES),
    }


def test_flatten_head_width_matches_the_paper() -> None:
    assert 1024 * 7 * 7 == 50_176  # the DenseNets' head input at 224 px, as the issue states


@pytest.fixture(scope="module")
def paper_settings() -> dict:
    """``head`` and ``img_size`` of the paper configs (read as plain YAML: the model side only)."""
    settings = [yaml.safe_load(p.read_text()) for p in PAPER_CONFIGS]
    assert len(settings) == 3
    assert len({(s["head"], s["img_size"]) for s in settings}) == 1, "the three paper configs disagree"
    return settings[0]


# A fixed list on purpose: the paper's seven models, whose counts come from outside medattn's builders.
@pytest.mark.parametrize("name", list(_original_counts()))
def test_paper_config_parameter_counts_match_the_original(name: str, paper_settings: dict) -> None:
    with torch.device("meta"):
        model = create_model(name, NUM_CLASSES, head=paper_settings["head"], img_size=paper_settings["img_size"])
    assert count_parameters(model) == _original_counts()[name]


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("densenet121", "flatten"),
        ("se_densenet121", "flatten"),
        ("cbam_densenet121", "flatten"),
        ("resnet50", "pool"),
        ("se_resnet50", "pool"),
        ("CBAMResNet50", "pool"),
        ("DeiT-T-LRP", "pool"),
    ],
)
def test_paper_head_resolves_per_family(name: str, head: str) -> None:
    assert resolve_head(name, "paper") == head
    assert resolve_head(name, "Pool") == "pool"


def test_paper_head_builds_and_runs_deit() -> None:
    model = create_model("deit_tiny", NUM_CLASSES, head="paper", nr_layers=1, img_size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, NUM_CLASSES)


def test_unknown_head_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="did you mean 'paper'"):
        create_model("resnet50", NUM_CLASSES, head="papr")
    with pytest.raises(ConfigError, match="choose one of: pool, flatten, paper"):
        create_model("resnet50", NUM_CLASSES, head="xyz")


def test_paper_config_file_builds_deit() -> None:
    """`medattn train --config experiments/paper/aptos2019.yaml --model deit_tiny` gets past config and model."""
    assert set(config.HEADS) == set(HEAD_CHOICES)  # the config layer accepts exactly the heads the factory builds
    cfg = config.build_train_config(
        {"model": "deit_tiny", "data_dir": "/data"}, config_file=REPO / "experiments/paper/aptos2019.yaml"
    )
    model = create_model(cfg.model.model, NUM_CLASSES, head=cfg.model.head, img_size=32, nr_layers=1)
    assert model.head.in_features == 192
