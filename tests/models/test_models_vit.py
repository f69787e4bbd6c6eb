"""DeiT-Tiny: timm's layout (strict state_dict exchange, identical logits) and attention capture."""

from __future__ import annotations

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from medattn.models import create_model, is_vit, load_weights


def test_timm_state_dict_loads_strictly_with_identical_logits() -> None:
    torch.manual_seed(0)
    reference = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=4, num_classes=2).eval()
    model = create_model("deit_tiny", num_classes=2, nr_layers=4).eval()
    assert isinstance(model, VisionTransformer) and is_vit(model)
    model.load_state_dict(reference.state_dict(), strict=True)
    reference.load_state_dict(model.state_dict(), strict=True)  # and back
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_attention_maps_are_probabilities_and_no_hooks_remain() -> None:
    torch.manual_seed(0)
    model = create_model("DeiT-T-LRP", num_classes=2, nr_layers=3, img_size=64).eval()
    fused_before = [blk.attn.fused_attn for blk in model.blocks]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
    logits, maps = model.forward_with_attention(x)
    n_tokens = 1 + (64 // 16) ** 2
    assert len(maps) == 3
    for attn in maps:
        assert attn.shape == (2, 3, n_tokens, n_tokens)
        assert torch.allclose(attn.sum(dim=-1), torch.ones(2, 3, n_tokens), atol=1e-5)
        assert (attn >= 0).all()
    assert torch.allclose(logits, plain, atol=1e-5)  # the non-fused path computes the same function
    assert [blk.attn.fused_attn for blk in model.blocks] == fused_before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_attention_maps_stay_in_the_graph() -> None:
    torch.manual_seed(0)
    model = create_model("deit_tiny", num_classes=2, nr_layers=2, img_size=32).eval()
    with model.record_attention() as maps:
        logits = model(torch.randn(1, 3, 32, 32))
    for attn in maps:
        attn.retain_grad()
    logits[0, 1].backward()
    assert all(attn.grad is not None and attn.grad.shape == attn.shape for attn in maps)


def test_224_weights_resample_to_another_size_and_drop_extra_blocks() -> None:
    torch.manual_seed(0)
    source = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=12).state_dict()
    model = create_model("deit_tiny", num_classes=2, nr_layers=4, img_size=64)
    report = load_weights(model, source, arch="deit_tiny", source="timm-224")
    assert report.resized == ("pos_embed",)
    assert set(report.shape_dropped) == {"head.weight", "head.bias"}
    assert set(report.missing) == {"head.weight", "head.bias"}
    assert all(k.startswith("blocks.") and int(k.split(".")[1]) >= 4 for k in report.unexpected)
    assert torch.equal(model.state_dict()["blocks.3.mlp.fc2.weight"], source["blocks.3.mlp.fc2.weight"])
    assert model.pos_embed.shape == (1, 17, 192)
