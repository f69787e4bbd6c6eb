"""The generic registry: canonical names, aliases, suggestions."""

import pytest

from medattn.errors import ConfigError
from medattn.registry import Registry, normalize


def _reg():
    reg = Registry("model")
    reg.add("se_resnet50", object(), "SEResNet50")
    reg.add("deit_tiny", object(), "DeiT-T-LRP", "DeiT-T")
    reg.add("mimic-cxr", object())
    return reg


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("se_resnet50", "se_resnet50"),
        ("SEResNet50", "se_resnet50"),
        ("se-resnet50", "se_resnet50"),
        ("DeiT-T-LRP", "deit_tiny"),
        ("deit-t", "deit_tiny"),
        ("MIMICCXR", "mimic-cxr"),
        ("mimic_cxr", "mimic-cxr"),
    ],
)
def test_spellings_resolve(spelling, name):
    assert _reg().canonical(spelling) == name


def test_unknown_name_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown model 'se_resnet5'; did you mean 'se_resnet50'\?"):
        _reg().canonical("se_resnet5")


def test_unknown_name_without_match_lists_choices():
    with pytest.raises(ConfigError, match="choose one of: se_resnet50, deit_tiny, mimic-cxr"):
        _reg().canonical("zzzzzz")


def test_duplicate_alias_refused():
    reg = _reg()
    with pytest.raises(ValueError):
        reg.add("other", object(), "SEResNet50")


def test_normalize_and_membership():
    assert normalize("DeiT-T_LRP") == "deittlrp"
    reg = _reg()
    assert "SEResNet50" in reg and "nope" not in reg
    assert reg.names() == ["se_resnet50", "deit_tiny", "mimic-cxr"] and len(reg) == 3
