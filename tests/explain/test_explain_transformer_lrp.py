"""transformer-lrp against an independent per-image float64 implementation written here.

The reference below follows docs/transformer-lrp.md with different code from the library: it runs
timm's own (non-fused) forward on a float64 copy of the model with hooks that capture the
activations, takes ``d y_t / d A_b`` from timm's attention tensors via ``retain_grad``, and applies
the rules one image at a time, head by head, with whole-tensor sums in the Add rule.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from medattn.errors import ConfigError
from medattn.explain import attribute
from medattn.explain.transformer_lrp import transformer_attribution, transformer_logits

DEPTH, IMG, PATCH = 3, 48, 16
GRID = IMG // PATCH


def _sdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b != 0, a / (b + 1e-9), torch.zeros_like(a))


def _ref_linear(x, weight, rel):
    """αβ (1, 0) rule, bias ignored: x (N, Din), weight (Dout, Din), rel (N, Dout)."""
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    z = torch.einsum("nj,kj->nk", xp, wp) + torch.einsum("nj,kj->nk", xn, wn)
    s = _sdiv(rel, z)
    return xp * torch.einsum("nk,kj->nj", s, wp) + xn * torch.einsum("nk,kj->nj", s, wn)


def _ref_matmul(m, b, rel):
    s = _sdiv(rel, m @ b)
    return m * (s @ b.T), b * (m.T @ s)


def _ref_add(u, w, rel):
    s = _sdiv(rel, u + w)
    a, b = u * s, w * s
    sa, sb, total = a.sum(), b.sum(), rel.sum()
    fa = total * _sdiv(sa.abs(), sa.abs() + sb.abs())
    fb = total * _sdiv(sb.abs(), sa.abs() + sb.abs())
    return a * _sdiv(fa, sa), b * _sdiv(fb, sb)


def _ref_clone(x, r1, r2):
    return x * (_sdiv(r1, x) + _sdiv(r2, x))


def reference_map(model, image: torch.Tensor, target: int, start_layer: int) -> torch.Tensor:
    """One image's raw (g, g) map, float64, straight from the document."""
    net = copy.deepcopy(model).double().eval()
    acts: dict = {}

    def keep(key, what):
        def hook(module, inputs, output):
            acts[key] = inputs[0] if what == "in" else output
            if what == "attn":
                output.retain_grad()

        return hook

    handles = []
    for i, blk in enumerate(net.blocks):
        blk.attn.fused_attn = False
        for key, mod, what in [
            ("x_in", blk.norm1, "in"),
            ("h", blk.attn.qkv, "in"),
            ("qkv", blk.attn.qkv, "out"),
            ("A", blk.attn.attn_drop, "attn"),
            ("merged", blk.attn.proj, "in"),
            ("attn_out", blk.attn.proj, "out"),
            ("x_mid", blk.norm2, "in"),
            ("g", blk.mlp.fc1, "in"),
            ("act", blk.mlp.fc2, "in"),
            ("mlp_out", blk.mlp.fc2, "out"),
        ]:
            handles.append(mod.register_forward_hook(keep((i, key), what)))
    handles.append(net.head.register_forward_hook(keep("cls", "in")))
    logits = net(image[None].double())
    logits[0, target].backward()
    for h in handles:
        h.remove()

    heads, dim = net.blocks[0].attn.num_heads, net.embed_dim
    hd = dim // heads
    cls = acts["cls"][0].detach()
    r_cls = _ref_linear(cls[None], net.head.weight.detach(), torch.eye(logits.shape[1], dtype=torch.float64)[[target]])[
        0
    ]
    n_tok = acts[(0, "x_in")].shape[1]
    r = torch.zeros(n_tok, dim, dtype=torch.float64)
    r[0] = cls * _sdiv(r_cls, cls)
    cams = {}
    for i in reversed(range(len(net.blocks))):
        blk = net.blocks[i]
        a = {
            k: acts[(i, k)][0].detach()
            for k in ("x_in", "h", "qkv", "merged", "attn_out", "x_mid", "g", "act", "mlp_out")
        }
        attn = acts[(i, "A")][0].detach()
        grad = acts[(i, "A")].grad[0]
        r_res, r_mlp = _ref_add(a["x_mid"], a["mlp_out"], r)
        r_mlp = _ref_linear(a["act"], blk.mlp.fc2.weight.detach(), r_mlp)
        r_mlp = _ref_linear(a["g"], blk.mlp.fc1.weight.detach(), r_mlp)
        r = _ref_clone(a["x_mid"], r_res, r_mlp)
        r_res, r_att = _ref_add(a["x_in"], a["attn_out"], r)
        r_merged = _ref_linear(a["merged"], blk.attn.proj.weight.detach(), r_att)
        qkv = a["qkv"].reshape(n_tok, 3, heads, hd)
        r_qkv = torch.zeros(n_tok, 3, heads, hd, dtype=torch.float64)
        r_attn = torch.zeros(heads, n_tok, n_tok, dtype=torch.float64)
        for hh in range(heads):
            q, k, v = qkv[:, 0, hh], qkv[:, 1, hh], qkv[:, 2, hh]
            r_a, r_v = _ref_matmul(attn[hh], v, r_merged[:, hh * hd : (hh + 1) * hd])
            r_a, r_v = r_a / 2, r_v / 2
            r_attn[hh] = r_a
            r_q, r_kt = _ref_matmul(q, k.T, r_a)
            r_qkv[:, 0, hh], r_qkv[:, 1, hh], r_qkv[:, 2, hh] = r_q / 2, r_kt.T / 2, r_v
        cams[i] = (grad * r_attn).clamp(min=0).mean(dim=0)
        r_att = _ref_linear(a["h"], blk.attn.qkv.weight.detach(), r_qkv.reshape(n_tok, 3 * dim))
        r = _ref_clone(a["x_in"], r_res, r_att)
    eye = torch.eye(n_tok, dtype=torch.float64)
    joint = cams[start_layer] + eye
    for i in range(start_layer + 1, len(net.blocks)):
        joint = (cams[i] + eye) @ joint
    return joint[0, 1:].reshape(GRID, GRID)


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=DEPTH, num_classes=2, img_size=IMG)
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, IMG, IMG, generator=gen), torch.tensor([0, 1, 1, 0])


def test_functional_forward_matches_timm(deit, batch):
    images, _ = batch
    with torch.no_grad():
        expected = deit(images)
    assert torch.allclose(transformer_logits(deit, images), expected, atol=1e-5)


@pytest.mark.parametrize("start_layer", [0, 1])
@pytest.mark.parametrize("which", ["label", "pred"])
def test_matches_independent_reference(deit, batch, start_layer, which):
    images, labels = batch
    with torch.no_grad():
        target = labels if which == "label" else deit(images).argmax(dim=1)
    maps = attribute(deit, images, "transformer-lrp", target, start_layer=start_layer)
    assert maps.shape == (4, GRID, GRID) and maps.dtype == torch.float32
    for i in range(len(images)):
        ref = reference_map(deit, images[i], int(target[i]), start_layer)
        assert ref.max() > 0
        err = (maps[i].double() - ref).abs().max() / ref.max()
        assert err < 0.01, f"image {i}: max error {err:.3%} of the map maximum"


def test_batched_equals_per_image(deit, batch):
    images, labels = batch
    together = transformer_attribution(deit, images, labels, start_layer=1)
    for i in range(len(images)):
        alone = transformer_attribution(deit, images[i : i + 1], labels[i : i + 1], start_layer=1)[0]
        assert (together[i] - alone).abs().max() <= 1e-3 * alone.max()


def test_maps_non_negative_and_scale_dependent(deit, batch):
    images, labels = batch
    maps = transformer_attribution(deit, images, labels)
    assert (maps >= 0).all()
    assert not torch.allclose(maps, transformer_attribution(deit, images, 1 - labels))


def test_start_layer_out_of_range(deit, batch):
    images, labels = batch
    with pytest.raises(ConfigError, match="start_layer"):
        attribute(deit, images, "transformer-lrp", labels, start_layer=DEPTH)


def test_model_left_as_found(deit, batch):
    images, labels = batch
    model = copy.deepcopy(deit).train()
    before_attrs = {name: set(vars(m)) for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        out_before = model(images)
    model.train()
    attribute(model, images, "transformer-lrp", labels)
    assert model.training and all(m.training for m in model.modules())
    assert {name: set(vars(m)) for name, m in model.named_modules()} == before_attrs
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), out_before)


def test_zoo_deit_tiny(batch):
    models = pytest.importorskip("medattn.models")
    model = models.create_model("deit_tiny", 2, img_size=IMG, nr_layers=2).eval()
    images, labels = batch
    maps = attribute(model, images[:2], "transformer-lrp", labels[:2])
    assert maps.shape == (2, GRID, GRID) and torch.isfinite(maps).all()
    with pytest.raises(ConfigError, match="does not apply"):
        attribute(model, images[:2], "lrp", labels[:2])
    with pytest.raises(ConfigError, match="does not apply"):
        attribute(model, images[:2], "deeplift", labels[:2])


def test_unsupported_vit_layout(batch):
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=1, num_classes=2, img_size=IMG, global_pool="avg"
    ).eval()
    images, labels = batch
    with pytest.raises(ConfigError, match="class token with token pooling"):
        attribute(model, images[:1], "transformer-lrp", labels[:1])
