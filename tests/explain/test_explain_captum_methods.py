"""DeepLIFT completeness, the LRP rule table's conservation, and model hygiene of the explainers.

Every registered model is explained by its default methods in ``tests/models/test_models_registry.py``
(LRP's conservation included); this file checks the methods on small hand-made networks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medattn.errors import ConfigError
from medattn.explain import EXPLAINERS, attribute, methods_for
from medattn.models.layers import Add, ChannelPool, GateMul


class ToyGated(nn.Module):
    """Conv/BN/ReLU with a residual Add, an SE-like gate and a CBAM-like spatial gate, then a head."""

    def __init__(self, head_bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(8, 8, 1)
        self.sig = nn.Sigmoid()
        self.mul = GateMul()
        self.cpool = ChannelPool()
        self.sconv = nn.Conv2d(2, 1, 3, padding=1)
        self.ssig = nn.Sigmoid()
        self.smul = GateMul()
        self.add = Add()
        self.act2 = nn.ReLU()
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(8, 3, bias=head_bias)

    def forward(self, x):
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        y = self.bn2(self.conv2(x))
        y = self.mul(y, self.sig(self.fc(self.squeeze(y))))
        y = self.smul(y, self.ssig(self.sconv(self.cpool(y))))
        return self.head(self.flat(self.avg(self.act2(self.add(y, x)))))


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.2)


def _zero_bn_shift(model: nn.Module) -> None:
    """Set β = μ·γ/σ so that each eval-mode BN is a pure scale (no bias to absorb relevance)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.copy_(m.running_mean * m.weight.data / torch.sqrt(m.running_var + m.eps))


@pytest.fixture()
def toy():
    torch.manual_seed(0)
    model = ToyGated()
    _randomise_bn(model, torch.Generator().manual_seed(0))
    _zero_bn_shift(model)
    return model.eval()


def _snapshot(model: nn.Module):
    return (
        {name: set(vars(m)) for name, m in model.named_modules()},
        {name: p.requires_grad for name, p in model.named_parameters()},
        {name: m.training for name, m in model.named_modules()},
    )


def _assert_no_hooks(model: nn.Module) -> None:
    for name, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks, name
        assert not getattr(m, "_backward_pre_hooks", None), name


def test_deeplift_completeness_small_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    x = torch.randn(5, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 1, 0])
    attr = attribute(model, x, "deeplift", target)
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None])[:, 0]
    assert attr.shape == x.shape
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), delta, rtol=1e-4, atol=1e-5)


def test_lrp_conserves_logit_without_biases():
    """Conv/ReLU/MaxPool/BN/Linear net without biases (BN shifts zero): Σ R_input = target logit."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3, bias=False),
    )
    _randomise_bn(model, torch.Generator().manual_seed(1))
    _zero_bn_shift(model)
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 0])
    relevance = attribute(model, x, "lrp", target)
    with torch.no_grad():
        logit = model(x).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logit, rtol=1e-4, atol=1e-6)


def test_lrp_rule_table_conservation_with_gates_and_residual(toy):
    """Add (z-rule), gates held constant, BN pass-through: Σ R_input = logit − head bias."""
    x = torch.randn(3, 3, 8, 8)
    target = torch.tensor([2, 0, 1])
    relevance = attribute(toy, x, "lrp", target)
    with torch.no_grad():
        logit = toy(x).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(
        relevance.sum(dim=(1, 2, 3)), logit - toy.head.bias[target].detach(), rtol=1e-4, atol=1e-6
    )


def test_lrp_batchnorm_equals_folded_conv():
    """Canonization: LRP through conv → BN (with shift) equals LRP through the folded conv with bias."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )
    _randomise_bn(model, torch.Generator().manual_seed(2))
    model.eval()
    conv, bn = model[0], model[1]
    scale = bn.weight.data / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(3, 6, 3, padding=1)
    folded.weight.data.copy_(conv.weight.data * scale.view(-1, 1, 1, 1))
    folded.bias.data.copy_(bn.bias.data - bn.running_mean * scale)
    canon = nn.Sequential(folded, *list(model)[2:]).eval()
    x = torch.randn(4, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        torch.testing.assert_close(model(x), canon(x), rtol=1e-5, atol=1e-5)
    lrp, lrp_folded = attribute(model, x, "lrp", target), attribute(canon, x, "lrp", target)
    # they differ only by ε at the conv output (z/(z + ε) factors): 1e-3 of the map maximum
    torch.testing.assert_close(lrp, lrp_folded, rtol=1e-3, atol=1e-3 * lrp_folded.abs().max().item())


def test_lrp_finite_with_trained_like_batchnorm():
    """Large BN shifts (as after training) made the old BN pass-through overflow to NaN; now finite."""
    from medattn.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet50", 2, img_size=32).eval()
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # pre-BN means far from 0, shifts that cancel most of them
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 2.0)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.05 + 0.01)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    maps = attribute(model, torch.randn(2, 3, 32, 32, generator=gen), "lrp", torch.tensor([0, 1]))
    assert torch.isfinite(maps).all()


def test_lrp_gate_gets_no_relevance(toy):
    """Relevance equals that of the same network with the gates frozen to their values as constants."""
    x = torch.randn(1, 3, 8, 8)
    target = torch.tensor([1])
    with torch.no_grad():
        feats = toy.pool(toy.act1(toy.bn1(toy.conv1(x))))
        y = toy.bn2(toy.conv2(feats))
        g1 = toy.sig(toy.fc(toy.squeeze(y)))
        g2 = toy.ssig(toy.sconv(toy.cpool(y * g1)))

    class Frozen(nn.Module):
        """The toy with each gate a fixed per-channel / per-pixel scale (a depthwise linear map)."""

        def __init__(self) -> None:
            super().__init__()
            self.t = copy.deepcopy(toy)

        def forward(self, inp):
            t = self.t
            h = t.pool(t.act1(t.bn1(t.conv1(inp))))
            out = t.bn2(t.conv2(h))
            out = t.smul(t.mul(out, g1), g2)
            return t.head(t.flat(t.avg(t.act2(t.add(out, h)))))

    frozen = Frozen().eval()
    for name in ("squeeze", "fc", "sig", "cpool", "sconv", "ssig"):
        setattr(frozen.t, name, nn.Identity())  # unused in Frozen.forward
    torch.testing.assert_close(
        attribute(toy, x, "lrp", target), attribute(frozen, x, "lrp", target), rtol=1e-4, atol=1e-7
    )


def test_lrp_unknown_module_type():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    with pytest.raises(ConfigError, match="GELU"):
        attribute(model, torch.randn(1, 3, 8, 8), "lrp", torch.tensor([0]))


@pytest.mark.parametrize("method", ["deeplift", "lrp", "integrated-gradients", "gradcam"])
def test_toy_left_as_found(method):
    torch.manual_seed(0)
    model = ToyGated()
    if method == "gradcam":
        model.layer4 = model.act2  # the layer gradcam reads (medattn's ResNets name it layer4)
    model.train()
    x = torch.randn(2, 3, 8, 8)
    before = _snapshot(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    options = {"n_steps": 4} if method == "integrated-gradients" else {}
    maps = attribute(model, x, method, torch.tensor([0, 1]), **options)
    assert maps.dtype == torch.float32 and maps.shape[0] == 2 and maps.shape[-2:] == x.shape[-2:]
    assert _snapshot(model) == before
    _assert_no_hooks(model)
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_registry_errors_and_defaults(toy):
    assert {"deeplift", "lrp", "transformer-lrp", "integrated-gradients", "gradcam"} <= set(EXPLAINERS.names())
    assert methods_for(toy) == ["deeplift", "lrp"]
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([0])
    with pytest.raises(ConfigError, match="did you mean 'deeplift'"):
        attribute(toy, x, "deeplft", t)
    with pytest.raises(ConfigError, match="does not apply"):
        attribute(toy, x, "transformer-lrp", t)
    with pytest.raises(ConfigError, match="no option 'start_layer'"):
        attribute(toy, x, "lrp", t, start_layer=1)
    with pytest.raises(ConfigError, match="target"):
        attribute(toy, x, "lrp", torch.tensor([0, 1]))
    assert attribute(toy, x, "DeepLIFT", t).shape == x.shape  # case/dash-insensitive names
