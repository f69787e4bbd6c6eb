"""LRP's BatchNorm canonization and the documented rule table."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from medattn.explain import EXPLAINERS, attribute, lrp_rules
from medattn.explain.canonize import fold_batchnorm
from medattn.models import create_model

REPO = Path(__file__).resolve().parents[2]


def _bn_names(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("name", ["resnet50", "cbam_resnet50"])
def test_every_resnet_batchnorm_is_folded_and_the_function_kept(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 2, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    net = copy.deepcopy(model)
    folded = fold_batchnorm(net, x[:1])
    assert set(folded) == _bn_names(model)  # stem, bn1..3, downsample (and CBAM's spatial BN)
    assert not _bn_names(net)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)


def test_densenet_keeps_batchnorm_after_concatenation() -> None:
    model = create_model("densenet121", 2, img_size=32).eval()
    folded = set(fold_batchnorm(copy.deepcopy(model), torch.randn(1, 3, 32, 32)))
    after_conv = {n for n in _bn_names(model) if n == "features.norm0" or n.endswith(".norm2")}
    assert folded == after_conv and len(folded) == 1 + 58
    # norm1 of every dense layer, the transition norms and norm5 read a concatenation: ε-rule, not folded
    assert all(n.endswith(".norm1") or ".transition" in n or n == "features.norm5" for n in _bn_names(model) - folded)


def test_conv_whose_output_is_also_read_elsewhere_is_not_folded() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            z = self.conv(x)
            return self.bn(z) + z  # folding would change the second reader's input

    assert fold_batchnorm(Shared().eval(), torch.randn(1, 3, 8, 8)) == []


def _nontrivial_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Running means far from 0, small variances and shifts: pre-BN and post-BN values differ a lot."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 2.0)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.05 + 0.01)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def test_lrp_float32_matches_float64_on_resnet50() -> None:
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    model = _nontrivial_bn(create_model("resnet50", 2, img_size=32), gen)
    before = copy.deepcopy(model.state_dict())
    x, target = torch.randn(2, 3, 32, 32, generator=gen), torch.tensor([0, 1])
    lrp = EXPLAINERS.get("lrp")
    maps32, maps64 = lrp.attribute(model, x, target), lrp.attribute(model, x.double(), target)
    assert maps32.dtype == torch.float32 and maps64.dtype == torch.float64
    err = (maps32.double() - maps64).flatten(1).abs().amax(1) / maps64.flatten(1).abs().amax(1)
    assert (err <= 1e-4).all(), f"float32 LRP differs from float64 by {err.tolist()} of the map maximum"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the user's model untouched


class _ConvBN(nn.Module):
    """conv -> BN -> ReLU -> head, the BN turning a near-zero conv output into an O(1) activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.act, self.pool, self.flat, self.head = nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.flat(self.pool(self.act(self.bn(self.conv(x))))))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lrp_does_not_divide_by_the_pre_batchnorm_output(dtype: torch.dtype) -> None:
    """Pre-BN outputs of ~1e-7 (below ε) with a BN scale of ~1e6: LRP equals the explicitly folded conv's.

    The ε-rule on BN composed with the conv's divided the relevance by the conv output plus ε, so
    where that output is below ε it lost ~3 orders of magnitude of the conv's relevance.
    """
    torch.manual_seed(0)
    model = _ConvBN().eval()
    with torch.no_grad():
        model.conv.weight.mul_(1e-7)
        model.bn.running_var.fill_(1e-12)
        model.bn.bias.copy_(torch.tensor([1.0, -0.5, 2.0, 0.3]))
        model.bn.eps = 0.0
    folded = copy.deepcopy(model)
    fold_batchnorm(folded, torch.zeros(1, 3, 6, 6))
    reference = nn.Sequential(folded.conv, folded.act, folded.pool, folded.flat, folded.head).eval()
    x, target = torch.randn(3, 3, 6, 6).to(dtype), torch.tensor([0, 1, 1])
    lrp = EXPLAINERS.get("lrp")
    maps, expected = lrp.attribute(model, x, target), lrp.attribute(reference, x, target)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def _documented_rules(text: str) -> dict[str, str]:
    """``{module type name: rule text}`` from the LRP table rows of ``docs/explanations.md`` (``| `Type`, ... | where | rule |``)."""
    rules: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for kind in re.findall(r"`(?:nn\.)?(\w+)`", cells[0]):
                rules.setdefault(kind, "")
                rules[kind] += " " + cells[2]
    return rules


def _expected_keyword(kind: type[nn.Module]) -> str:
    if kind in lrp_rules.NOT_VISITED:
        return "not visited"
    if kind in lrp_rules.CAPTUM_PASS_THROUGH:
        return "pass-through"
    rule = lrp_rules._rule_table(1e-6)[kind]()
    return "constant" if isinstance(rule, lrp_rules.GateRule) else "ε-rule"


def test_docs_list_the_rule_of_every_layer_type() -> None:
    page = (REPO / "docs" / "explanations.md").read_text()
    section = page.split("## LRP rules, by layer type", 1)[1]
    documented = _documented_rules(section)
    kinds = [*lrp_rules._rule_table(1e-6), *lrp_rules.NOT_VISITED, *lrp_rules.CAPTUM_PASS_THROUGH]
    for kind in kinds:
        assert kind.__name__ in documented, f"the LRP table of docs/explanations.md has no row for {kind.__name__}"
        assert _expected_keyword(kind) in documented[kind.__name__], kind.__name__
    assert "folded" in documented["BatchNorm2d"] and "passed through" not in page
    for kind in kinds:  # the code's own table names every type too
        assert f"``nn.{kind.__name__}``" in lrp_rules.__doc__ or f"``{kind.__name__}``" in lrp_rules.__doc__


def test_lrp_through_folded_copy_leaves_user_model_and_is_conservative() -> None:
    """With zero BN shifts (β = μ·γ/σ) the folded conv has no bias: Σ R = logit − head bias."""
    torch.manual_seed(0)
    model = create_model("resnet50", 2, img_size=32).eval()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 0])
    maps = attribute(model, x, "lrp", target)
    with torch.no_grad():
        expected = model(x).gather(1, target[:, None])[:, 0] - model.fc.bias[target]
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), expected, rtol=1e-3, atol=1e-4)
    assert len(_bn_names(model)) == 53
