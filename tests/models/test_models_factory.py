"""Registry, options, parameter counts and the user errors of create_model."""

from __future__ import annotations

import pytest
import torch

from medattn.errors import ConfigError
from medattn.models import ATTENTION, canonical_model_name, count_parameters, create_model, is_vit, model_table

# A fixed table on purpose: the parameter counts of the paper's seven models (num_classes=2,
# img_size=224, head=pool, 12 DeiT blocks), facts from outside the code that a change to a builder
# must not move. Models added later need no entry: test_models_registry.py checks every registered
# model's count in `medattn models` against the model create_model builds.
EXPECTED_PARAMS = {
    "densenet121": 6_955_906,
    "resnet50": 23_512_130,
    "se_densenet121": 7_262_002,
    "se_resnet50": 26_043_122,
    "cbam_densenet121": 7_262_402,
    "cbam_resnet50": 26_044_722,
    "deit_tiny": 5_524_802,
}


@pytest.fixture(scope="module")
def table() -> list[dict]:
    return model_table()


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_paper_models_keep_their_parameter_counts(name: str, table: list[dict]) -> None:
    row = next(r for r in table if r["name"] == name)
    assert row["params"] == EXPECTED_PARAMS[name]


def test_table_counts_match_real_models(table: list[dict]) -> None:
    # model_table counts on the meta device; check one CNN and the ViT against real builds.
    for name in ("se_resnet50", "deit_tiny"):
        assert count_parameters(create_model(name, 2)) == EXPECTED_PARAMS[name]
    assert set(table[0]) == {"name", "architecture", "attention", "placement", "params"}


# The original project's spellings (from outside: its configuration files and scripts).
@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("DenseNet121", "densenet121"),
        ("ResNet50", "resnet50"),
        ("SEDenseNet121", "se_densenet121"),
        ("SEResNet50", "se_resnet50"),
        ("CBAMDenseNet121", "cbam_densenet121"),
        ("CBAMResNet50", "cbam_resnet50"),
        ("DeiT-T-LRP", "deit_tiny"),
        ("DeiT-T", "deit_tiny"),
        ("deit_tiny", "deit_tiny"),
    ],
)
def test_original_spellings(alias: str, canonical: str) -> None:
    assert canonical_model_name(alias) == canonical


def test_unknown_name_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'cbam_resnet50'"):
        canonical_model_name("cbam_resnet5")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="deit_tiny", img_size=100), "multiple of its patch size 16"),
        (dict(name="resnet50", head="flatten", img_size=100), "multiple of 32"),
        (dict(name="densenet121", head="flatten", img_size=48), "multiple of 32"),
        (dict(name="resnet50", img_size=16), "at least 32"),
        (dict(name="resnet50", pretrained="imagenet21k"), "--pretrained"),
        (dict(name="resnet50", head="mean"), "--head"),
        (dict(name="resnet50", init="random"), "--init"),
        (dict(name="deit_tiny", head="flatten"), "--head pool"),
        (dict(name="deit_tiny", nr_layers=0), "nr_layers"),
        (dict(name="resnet50", weights="/nonexistent/w.pth"), "does not exist"),
    ],
)
def test_bad_options_are_one_sentence(kwargs: dict, message: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ConfigError, match=message) as info:
        create_model(name, 2, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["resnet50", "cbam_densenet121"])
def test_flatten_head_depends_on_image_size(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 2, head="flatten", img_size=64).eval()
    head = model.fc if hasattr(model, "fc") else model.classifier
    channels = 2048 if name == "resnet50" else 1024
    assert head.in_features == channels * 2 * 2
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_attention_is_a_builder_parameter() -> None:
    from medattn.models import ATTENTION, CBAMBlock, ECABlock, SEBlock, resnet50

    assert ATTENTION.names()[:3] == ["se", "cbam", "eca"]  # medattn's own, before any discovered module
    model = resnet50(2, attn="eca")
    assert isinstance(model.layer1[0].attn, ECABlock)
    assert isinstance(create_model("se_resnet50", 2).layer4[2].attn, SEBlock)
    dense = create_model("cbam_densenet121", 2)
    assert [type(getattr(dense.features, f"attn{i}")) for i in range(1, 5)] == [CBAMBlock] * 4
    # Placement: after each dense block, before the transition / final norm.
    names = [n for n, _ in dense.features.named_children()]
    for i in range(1, 5):
        assert names[names.index(f"denseblock{i}") + 1] == f"attn{i}"
    assert create_model("resnet50", 2).layer1[0].attn is None
    assert not is_vit(dense)


@pytest.mark.parametrize("attn", ATTENTION.names())
def test_attention_blocks_keep_shape(attn: str) -> None:
    from medattn.models import create_attention

    block = create_attention(attn, 64)
    x = torch.randn(2, 64, 5, 7)
    assert block(x).shape == x.shape


def test_cbam_channel_mlp_matches_two_separate_passes() -> None:
    from medattn.models import CBAMBlock

    torch.manual_seed(0)
    gate = CBAMBlock(32).channel.eval()
    x = torch.randn(3, 32, 4, 4)
    mlp = lambda d: gate.fc2(gate.act(gate.fc1(d)))  # noqa: E731 - the textbook CBAM formula
    expected = x * torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    assert torch.allclose(gate(x), expected, atol=1e-6)
