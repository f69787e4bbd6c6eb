"""DeiT-Tiny's patch size: 16 as in the paper, 8 on the demo (a demo-only deviation)."""

from __future__ import annotations

import pytest
import torch

from medattn.config import build_train_config, config_from_flat
from medattn.errors import ConfigError
from medattn.explain import attribute
from medattn.models import create_model
from medattn.stages.demo import DEMO_MODEL_OVERRIDES


def test_demo_deit_gets_8px_patches_and_a_finer_token_grid():
    cfg = build_train_config(
        {"dataset": "demo", "model": "deit_tiny", "img_size": 64, **DEMO_MODEL_OVERRIDES["deit_tiny"]}
    )
    assert cfg.model.patch_size == 8
    assert config_from_flat(cfg.flat()).model.patch_size == 8  # a test/interpret run rebuilds the same model
    assert build_train_config({"dataset": "demo", "model": "deit_tiny"}).model.patch_size == 16
    model = create_model("deit_tiny", 2, nr_layers=1, img_size=64, patch_size=8).eval()
    assert tuple(model.patch_embed.grid_size) == (8, 8)
    x = torch.randn(2, 3, 64, 64)
    logits, maps = model.forward_with_attention(x)
    assert logits.shape == (2, 2) and maps[0].shape == (2, 3, 65, 65)
    assert attribute(model, x, "transformer-lrp", torch.tensor([1, 0])).shape == (2, 8, 8)


def test_patch_size_errors_are_one_sentence():
    with pytest.raises(ConfigError, match="deit_tiny only"):
        create_model("resnet50", 2, img_size=64, patch_size=8)
    with pytest.raises(ConfigError, match="16-px patches"):
        create_model("deit_tiny", 2, img_size=64, patch_size=8, pretrained="imagenet")
    with pytest.raises(ConfigError, match="multiple of its patch size 8"):
        create_model("deit_tiny", 2, img_size=60, patch_size=8)
