"""DeepLIFT through CBAM's channel gate equals DeepLIFT through the textbook two-MLP-copy CBAM.

captum's DeepLift runs inputs and baselines as one batch and splits every nonlinearity's input
into halves along dim 0. A gate that stacked its avg and max descriptors on dim 0 made the halves
pair avg with max; these tests fail on that layout.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from medattn.explain import attribute
from medattn.models import create_model
from medattn.models.attention import ChannelGate
from medattn.models.layers import Add, GateMul


class TwoCopyChannelGate(nn.Module):
    """The same gate written as in the CBAM paper: the shared MLP applied twice, one copy per descriptor.

    Each copy has its own ReLU module, so every nonlinearity runs once per forward and captum pairs
    every input with its own baseline. Weights are copied from ``gate``, so the logits are identical.
    """

    def __init__(self, gate: ChannelGate) -> None:
        super().__init__()
        self.avg_pool, self.max_pool = copy.deepcopy(gate.avg_pool), copy.deepcopy(gate.max_pool)
        self.fc1_avg, self.fc2_avg = copy.deepcopy(gate.fc1), copy.deepcopy(gate.fc2)
        self.fc1_max, self.fc2_max = copy.deepcopy(gate.fc1), copy.deepcopy(gate.fc2)
        self.act_avg, self.act_max = nn.ReLU(), nn.ReLU()
        self.add, self.gate, self.mul = Add(), nn.Sigmoid(), GateMul()

    def forward(self, x: Tensor) -> Tensor:
        avg = self.fc2_avg(self.act_avg(self.fc1_avg(self.avg_pool(x))))
        mx = self.fc2_max(self.act_max(self.fc1_max(self.max_pool(x))))
        return self.mul(x, self.gate(self.add(avg, mx)))


def two_copy_rewrite(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every :class:`ChannelGate` replaced by its two-copy equivalent."""
    out = copy.deepcopy(model)
    gates = [(name, m) for name, m in out.named_modules() if isinstance(m, ChannelGate)]
    assert gates, "the model has no CBAM channel gate"
    for name, gate in gates:
        parent_name, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent_name), child, TwoCopyChannelGate(gate))
    return out


def _spread_biases(model: nn.Module, gen: torch.Generator) -> None:
    """Random MLP biases, so that the hidden ReLUs sit on both sides of the kink for input and baseline."""
    for m in model.modules():
        if isinstance(m, ChannelGate):
            m.fc1.bias.data.copy_(torch.randn(m.fc1.out_channels, generator=gen) * 0.5)
            m.fc2.bias.data.copy_(torch.randn(m.fc2.out_channels, generator=gen) * 0.5)


def _assert_maps_equal(model: nn.Module, x: Tensor, target: Tensor) -> None:
    rewritten = two_copy_rewrite(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), rewritten(x), rtol=1e-5, atol=1e-6)
    maps = attribute(model, x, "deeplift", target)
    expected = attribute(rewritten, x, "deeplift", target)
    scale = expected.flatten(1).abs().amax(dim=1)  # each image's map maximum
    err = (maps - expected).flatten(1).abs().amax(dim=1) / scale
    assert (err <= 1e-5).all(), f"DeepLIFT differs from the two-copy CBAM by {err.tolist()} of the map maximum"


@pytest.mark.parametrize("seed", range(6))
def test_channel_gate_deeplift_equals_two_copy(seed: int) -> None:
    torch.manual_seed(seed)
    gate = ChannelGate(16, reduction=4)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), gate, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3)
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    _spread_biases(model, gen)
    x = torch.randn(4, 3, 8, 8, generator=gen)
    _assert_maps_equal(model, x, torch.tensor([0, 1, 2, 0]))


def test_channel_gate_descriptors_never_meet_on_the_batch_axis() -> None:
    """Every module inside the gate sees batch size B, never 2B (the layout captum relies on)."""
    gate = ChannelGate(8, reduction=2).eval()
    batches = []
    hooks = [m.register_forward_pre_hook(lambda _m, inp: batches.append(inp[0].shape[0])) for m in gate.children()]
    gate(torch.randn(3, 8, 4, 4))
    for h in hooks:
        h.remove()
    assert batches and set(batches) == {3}


@pytest.mark.parametrize("name", ["cbam_resnet50", "cbam_densenet121"])
def test_cbam_models_deeplift_equals_two_copy(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 2, img_size=32).eval()
    gen = torch.Generator().manual_seed(1)
    _spread_biases(model, gen)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    _assert_maps_equal(model, x, torch.tensor([0, 1]))
