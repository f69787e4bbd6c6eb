"""The served model is rebuilt with the patch size it was trained with (the demo's DeiT uses 8-px patches)."""

from __future__ import annotations

import torch

from medattn.config import build_train_config
from medattn.models import create_model
from medattn.tracking.pyfunc import build_eager


def _payload(patch_size: int) -> tuple[dict, torch.nn.Module]:
    cfg = build_train_config(
        {"model": "deit_tiny", "patch_size": patch_size, "img_size": 32, "nr_layers": 1, "pretrained": "none"}
    )
    torch.manual_seed(0)
    model = create_model("deit_tiny", 2, nr_layers=1, img_size=32, patch_size=patch_size).eval()
    return {"config": cfg.flat(), "num_classes": 2, "model": model.state_dict()}, model


def test_build_eager_restores_a_deit_with_8_px_patches_and_its_outputs():
    payload, trained = _payload(8)
    served = build_eager(payload)
    assert served.patch_embed.proj.kernel_size == (8, 8)
    assert served.patch_embed.num_patches == 16  # a 4 x 4 grid at 32 px, not 2 x 2
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(served(x), trained(x))


def test_build_eager_keeps_the_paper_patch_size_by_default():
    payload, _ = _payload(16)
    assert build_eager(payload).patch_embed.proj.kernel_size == (16, 16)
