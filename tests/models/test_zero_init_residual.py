"""``--zero-init-residual``: every ResNet bottleneck starts as the identity (the control for the
attention gates' down-scaling of the residual branch when training from scratch)."""

from __future__ import annotations

import mlflow
import pytest
import torch

from medattn.config import build_train_config
from medattn.errors import ConfigError
from medattn.models import Bottleneck, create_model
from medattn.stages.common import LoadedModel, build_model
from medattn.stages.grid import grid_cells
from medattn.stages.interpret import randomized_model


@pytest.mark.parametrize("name", ["resnet50", "se_resnet50", "cbam_resnet50"])
def test_every_bottleneck_starts_as_its_shortcut(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 2, img_size=32, zero_init_residual_branches=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16  # 3 + 4 + 6 + 3
    x = torch.randn(2, 256, 8, 8)
    block = model.layer1[1]  # no projection: output = relu(x)
    assert torch.equal(block(x), torch.relu(x))
    for b in blocks:
        assert torch.count_nonzero(b.bn3.weight) == 0
    torch.manual_seed(0)
    default = create_model(name, 2, img_size=32)
    changed = {k for k, v in default.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert changed and all(k.endswith("bn3.weight") for k in changed)  # nothing else differs


def test_the_training_config_reaches_the_model() -> None:
    cfg = build_train_config({"dataset": "demo", "model": "resnet50", "img_size": 32, "zero_init_residual": True})
    assert cfg.flat()["zero_init_residual"] is True
    model = build_model(cfg, 2)
    assert all(torch.count_nonzero(m.bn3.weight) == 0 for m in model.modules() if isinstance(m, Bottleneck))
    plain = build_model(build_train_config({"dataset": "demo", "model": "resnet50", "img_size": 32}), 2)
    assert all(torch.count_nonzero(m.bn3.weight) > 0 for m in plain.modules() if isinstance(m, Bottleneck))


@pytest.mark.parametrize("name", ["densenet121", "cbam_densenet121", "deit_tiny"])
def test_models_without_bottlenecks_refuse_it(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"applies to the ResNet-50 variants .*; {name} has no such residual branch"):
        build_train_config({"dataset": "demo", "model": name, "zero_init_residual": True})
    with pytest.raises(ConfigError, match="applies to the ResNet-50 variants"):
        create_model(name, 2, img_size=32, zero_init_residual_branches=True)


def test_cli_refuses_it_for_densenet_before_any_run(mlflow_store, demo_dir, cli, one_error_line) -> None:
    res = cli(
        ["train", "--dataset", "demo", "--data-dir", demo_dir, "--model", "densenet121", "--zero-init-residual"],
        exit_code=2,
    )
    one_error_line(res, "--zero-init-residual applies to the ResNet-50 variants", only=True)
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.parametrize(
    "extra",
    [{"dataset": "isic2020"}, {"pretrained": "imagenet"}, {"weights": "w.pt"}, {"ckpt": "last.pt"}],
    ids=["imagenet-by-default", "imagenet", "weights", "ckpt"],
)
def test_loaded_weights_would_replace_it_so_it_is_refused(extra) -> None:
    with pytest.raises(ConfigError, match="loaded weights would replace it; add --pretrained none"):
        build_train_config({"dataset": "demo", "model": "resnet50", "zero_init_residual": True, **extra})
    build_train_config({"dataset": "isic2020", "model": "resnet50", "zero_init_residual": True, "pretrained": "none"})


def test_a_grid_applies_it_to_the_resnets_only(tmp_path) -> None:
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(
        "dataset: demo\nzero_init_residual: true\ngrid:\n  model: [resnet50, densenet121, se_resnet50]\n"
    )
    cells = grid_cells(grid_file)
    assert {c.model.model: c.model.zero_init_residual for c in cells} == {
        "resnet50": True,
        "densenet121": False,
        "se_resnet50": True,
    }


def test_the_randomised_twin_of_a_zero_init_model_has_live_residual_branches() -> None:
    cfg = build_train_config({"dataset": "demo", "model": "resnet50", "img_size": 32, "zero_init_residual": True})
    loaded = LoadedModel(build_model(cfg, 2), cfg, cfg.flat(), 2, ("a", "b"), None, "")
    twin = randomized_model(loaded, seed=0, device=torch.device("cpu"))
    assert all(torch.count_nonzero(m.bn3.weight) > 0 for m in twin.modules() if isinstance(m, Bottleneck))
