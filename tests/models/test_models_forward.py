"""Every registered model: shape, finite gradients, each module called at most once, DeepLift."""

from __future__ import annotations

import collections

import pytest
import torch
from captum.attr import DeepLift

from medattn.models import MODELS, create_model, is_vit

IMG = 64  # DeiT: a 4x4 patch grid


def _small(name: str) -> torch.nn.Module:
    # Two transformer blocks keep the DeiT cases fast; the CNNs ignore nr_layers.
    return create_model(name, num_classes=3, img_size=IMG, nr_layers=2)


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_backward_and_single_use(name: str) -> None:
    torch.manual_seed(0)
    model = _small(name)
    calls: collections.Counter[str] = collections.Counter()
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, key=key: calls.update([key]))
        for key, module in model.named_modules()
    ]
    try:
        out = model(torch.randn(2, 3, IMG, IMG))
    finally:
        for handle in handles:
            handle.remove()
    reused = {k: n for k, n in calls.items() if n > 1}
    assert not reused, f"modules called more than once per forward: {reused}"
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert not any(m._forward_hooks for m in model.modules())


def _no_inplace(model: torch.nn.Module) -> list[str]:
    return [k for k, m in model.named_modules() if getattr(m, "inplace", False)]


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")
@pytest.mark.parametrize("name", [n for n in MODELS.names() if MODELS.get(n).backbone != "deit_tiny"])
def test_cnn_explainable_by_construction(name: str) -> None:
    torch.manual_seed(0)
    model = _small(name).eval()
    assert not is_vit(model)
    assert _no_inplace(model) == []
    assert not any(isinstance(m, torch.nn.Identity) for m in model.modules())
    x = torch.randn(1, 3, IMG, IMG, requires_grad=True)
    attributions = DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=1)
    assert attributions.shape == x.shape
    assert torch.isfinite(attributions).all()
    # DeepLift leaves no hooks behind on our modules.
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
