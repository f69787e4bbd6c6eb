"""Every registered explanation method, by parametrization over the explainer registry (a new
method is covered without editing this file): the shape of its maps, determinism, the model left
exactly as found, and a sanity check against a model with randomised weights (Adebayo et al.,
"Sanity Checks for Saliency Maps", NeurIPS 2018: maps that do not change when the weights do
explain nothing the model learned)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from medattn.explain import EXPLAINERS, attribute
from medattn.explain.sanity import randomize_weights
from medattn.models import MODELS, DenseNet, create_model

IMG = 32
TARGET = torch.tensor([1, 0])


def _tiny_models() -> list[nn.Module]:
    """Small members of the model zoo's families, so that every method runs in seconds: DeiT with
    one block (first: the cheapest, for methods that explain any model), and a DenseNet with one
    layer per dense block and CBAM after each (every leaf type of the CNNs: Add, GateMul,
    ChannelPool, both gates)."""
    torch.manual_seed(0)
    return [
        create_model("deit_tiny", 2, img_size=32, nr_layers=1).eval(),
        DenseNet((1, 1, 1, 1), num_classes=2, attn="cbam", img_size=32).eval(),
    ]


@pytest.fixture(scope="module")
def zoo() -> list[nn.Module]:
    """The tiny models, then (built on demand) every registered model, for a method that needs one."""
    return _tiny_models()


def _model_for(method: str, zoo: list[nn.Module]) -> nn.Module:
    """The first model ``method`` applies to: a tiny one, else a registered model at 32 px."""
    explainer = EXPLAINERS.get(method)
    for model in zoo:
        if explainer.applies_to(model):
            return model
    for name in MODELS.names():
        torch.manual_seed(0)
        zoo.append(create_model(name, 2, img_size=32, nr_layers=1))
        if explainer.applies_to(zoo[-1]):
            return zoo[-1]
    pytest.fail(f"{method} applies to no registered model")


def _snapshot(model: nn.Module) -> tuple:
    return (
        {name: sorted(vars(m)) for name, m in model.named_modules()},
        {name: m.training for name, m in model.named_modules()},
        {name: (p.requires_grad, p.grad is None) for name, p in model.named_parameters()},
        [
            name
            for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        ],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


@dataclass
class Explained:
    model: nn.Module
    x: torch.Tensor
    maps: torch.Tensor
    again: torch.Tensor
    before: tuple
    after: tuple


@pytest.fixture(scope="module", params=EXPLAINERS.names())
def explained(request: pytest.FixtureRequest, zoo: list[nn.Module]) -> Explained:
    """One method's maps of two images, twice, on a model in train mode; snapshots around the first call."""
    model = _model_for(request.param, zoo).train()
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    before = _snapshot(model)
    maps = attribute(model, x, request.param, TARGET)
    after = _snapshot(model)
    return Explained(model, x, maps, attribute(model, x, request.param, TARGET), before, after)


def test_maps_have_one_map_per_image(explained: Explained) -> None:
    maps = explained.maps
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert maps.shape[0] == 2
    # (B, C, H, W) with one or three channels at the image size, or a (B, g, g) patch grid
    if maps.dim() == 4:
        assert maps.shape[1] in (1, 3) and maps.shape[-2:] == explained.x.shape[-2:], maps.shape
    else:
        assert maps.dim() == 3 and maps.shape[1] == maps.shape[2], maps.shape
        assert explained.x.shape[-1] % maps.shape[1] == 0, maps.shape
    assert maps.abs().sum() > 0


def test_deterministic(explained: Explained) -> None:
    torch.testing.assert_close(explained.again, explained.maps, rtol=0, atol=0)


def test_model_left_as_found(explained: Explained) -> None:
    """Same attributes, modes (train mode stays), gradients, hooks and weights as before."""
    before, after = explained.before, explained.after
    assert after[:4] == before[:4]
    assert before[3] == []
    assert all(torch.equal(v, before[4][k]) for k, v in after[4].items())


def test_maps_change_when_the_weights_are_randomised(explained: Explained, request: pytest.FixtureRequest) -> None:
    method = request.node.callspec.params["explained"]
    randomised = randomize_weights(explained.model, seed=1)
    maps = attribute(randomised, explained.x, method, TARGET)
    scale = explained.maps.abs().max().item()
    assert not torch.allclose(maps, explained.maps, rtol=1e-2, atol=1e-2 * scale), method


@pytest.fixture(scope="module")
def help_lines() -> dict[str, str]:
    """The ``--methods`` line of ``medattn interpret --help`` and ``--saliency-maps`` of ``figures --help``."""
    from typer.testing import CliRunner

    from medattn.cli import app

    lines = {}
    for command, option in (("interpret", "--methods"), ("figures", "--saliency-maps")):
        out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "2000"}).output
        lines[option] = next(ln for ln in out.splitlines() if option in ln)
    return lines


@pytest.mark.parametrize("method", EXPLAINERS.names())
def test_cli_offers_the_method(method: str, help_lines: dict[str, str]) -> None:
    assert re.search(rf"(?<![\w-]){re.escape(method)}(?![\w-])", help_lines["--methods"]), help_lines["--methods"]
    assert f"|{method.upper()}" in help_lines["--saliency-maps"], help_lines["--saliency-maps"]
