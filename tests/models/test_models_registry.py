"""Every registered model, by parametrization over the model registry (a new model is covered
without editing this file): forward/backward with each module called once, its parameter count
in ``medattn models``, explainable without leftover hooks, and offered by the CLI's ``--model``."""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from typer.testing import CliRunner

from medattn.cli import app
from medattn.explain import attribute, methods_for
from medattn.models import MODELS, count_parameters, create_model, is_vit

IMG = 32  # the smallest size every registered model takes (DeiT: a 2x2 patch grid; CNNs: a 1x1 final map)
NAMES = MODELS.names()


@pytest.fixture(scope="module", params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    """Each registered model in turn (module scope: pytest runs all tests of one model together)."""
    return request.param


@pytest.fixture(scope="module")
def small(name: str) -> torch.nn.Module:
    """The model at 32 px with 3 classes, built once per name; two transformer blocks for DeiT."""
    torch.manual_seed(0)
    return create_model(name, num_classes=3, img_size=IMG, nr_layers=2)


def _hooks(model: torch.nn.Module) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or getattr(m, "_backward_pre_hooks", None)
    ]


def test_forward_backward_each_module_once(small: torch.nn.Module) -> None:
    model = copy.deepcopy(small).train()  # a copy: train mode moves BatchNorm's running statistics
    calls: collections.Counter[str] = collections.Counter()
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, key=key: calls.update([key]))
        for key, module in model.named_modules()
    ]
    try:
        out = model(torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0)))
    finally:
        for handle in handles:
            handle.remove()
    reused = {k: n for k, n in calls.items() if n > 1}
    assert not reused, f"modules called more than once per forward: {reused}"
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.fixture(scope="module")
def models_rows() -> dict[str, str]:
    """``medattn models``: its output line per model name."""
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return {line.split()[0]: line for line in result.output.splitlines() if line.split()[:1]}


def test_models_command_lists_the_parameter_count(name: str, models_rows: dict[str, str]) -> None:
    # the count of the model create_model builds (2 classes, 224 px, pooled head, 12 DeiT blocks)
    with torch.device("meta"):
        params = count_parameters(create_model(name, 2, img_size=224, nr_layers=12))
    assert name in models_rows, f"{name} missing from `medattn models`"
    assert f"{params:,}" in models_rows[name], models_rows[name]


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")
def test_explainable_without_leftover_hooks(small: torch.nn.Module) -> None:
    """The default methods of ``medattn interpret`` explain it and leave it exactly as found; LRP
    conserves the target logit less the head's bias (what its rule table promises)."""
    model = small.eval()
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 2])
    with torch.no_grad():
        before = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if not is_vit(model):
        # what captum's DeepLift and LRP need: no in-place ReLU, no Identity placeholder
        assert [k for k, m in model.named_modules() if getattr(m, "inplace", False)] == []
        assert not any(isinstance(m, torch.nn.Identity) for m in model.modules())
    for method in methods_for(model):
        maps = attribute(model, x, method, target)
        assert maps.shape[0] == 2 and torch.isfinite(maps).all(), method
        if method == "lrp":
            head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            expected = before.gather(1, target[:, None])[:, 0] - head.bias[target].detach()
            # 1 %: LRP runs on a copy with BatchNorm folded into the convolutions, whose float32 logits
            # differ from the model's by up to ~0.4 % at initialisation (scse_resnet50; float64 agrees
            # to 1e-4); a wrong rule misses by far more
            torch.testing.assert_close(
                maps.sum(dim=(1, 2, 3)), expected, rtol=1e-2, atol=max(1e-3 * before.abs().max().item(), 1e-5)
            )
    assert _hooks(model) == []
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x), before)


@pytest.fixture(scope="module")
def train_help() -> str:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_offers_the_model(name: str, train_help: str) -> None:
    line = next(ln for ln in train_help.splitlines() if "--model" in ln)
    assert name in line.split("[", 1)[1].split("]", 1)[0].split("|"), line
