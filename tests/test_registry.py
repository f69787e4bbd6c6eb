"""The generic registry: canonical names, aliases, suggestions; loading a registry's provider
(package, its modules, entry points) on first look-up; the one validator of fixed choices."""

import sys

import pytest

from medattn import registry
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


# --- where a registry's entries come from ------------------------------------------------------


@pytest.fixture()
def widget_package(tmp_path, monkeypatch):
    """A provider package ``widgets_pkg`` (the registry and two discovered modules) and a
    distribution ``widget-extras`` whose entry point adds a third module from outside the package."""
    pkg = tmp_path / "widgets_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from medattn.registry import Registry\nWIDGETS = Registry.for_kind('widget')\nWIDGETS.add('builtin', 0)\n"
    )
    (pkg / "b_second.py").write_text("from widgets_pkg import WIDGETS\nWIDGETS.add('second', 2, 'Zweite')\n")
    (pkg / "a_first.py").write_text("from widgets_pkg import WIDGETS\nWIDGETS.add('first', 1)\n")
    # registers nothing (no "WIDGETS."): discovery leaves it alone, as it leaves medattn's builders
    (pkg / "c_builder.py").write_text("raise ImportError('a heavy library, needed only when building')\n")
    (tmp_path / "extra_widgets.py").write_text("from widgets_pkg import WIDGETS\nWIDGETS.add('extra', 3)\n")
    dist = tmp_path / "widget_extras-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: widget-extras\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[medattn.test-widgets]\nextra = extra_widgets\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    provider = registry.Provider("widgets_pkg", discover=True, marks=("WIDGETS.",), group="medattn.test-widgets")
    monkeypatch.setitem(registry.PROVIDERS, "widget", provider)
    yield tmp_path
    registry._BY_KIND.pop("widget", None)
    registry._LOADED.discard(provider)
    for name in ("widgets_pkg", "widgets_pkg.a_first", "widgets_pkg.b_second", "extra_widgets", "broken_widgets"):
        sys.modules.pop(name, None)


def test_lookup_by_kind_loads_the_package_its_modules_and_entry_points(widget_package):
    assert "widgets_pkg" not in sys.modules
    # a name in a discovered module is accepted by a check that imported nothing beforehand
    assert registry.canonical("widget", "ZWEITE") == "second"
    assert registry.lookup("widget").names() == ["builtin", "first", "second", "extra"]
    assert "widgets_pkg.c_builder" not in sys.modules
    with pytest.raises(ConfigError, match=r"unknown widget 'frist'; did you mean 'first'\?"):
        registry.canonical("widget", "frist")


def test_the_registry_itself_loads_on_first_use(widget_package):
    import widgets_pkg

    assert len(widgets_pkg.WIDGETS._items) == 1  # only what the package's __init__ registered
    assert "extra" in widgets_pkg.WIDGETS  # membership, like every look-up, loads the rest first
    assert len(widgets_pkg.WIDGETS) == 4


def test_a_broken_entry_point_is_one_sentence_naming_its_distribution(widget_package):
    (widget_package / "widget_extras-1.0.dist-info" / "entry_points.txt").write_text(
        "[medattn.test-widgets]\nbroken = broken_widgets\n"
    )
    (widget_package / "broken_widgets.py").write_text("raise ImportError('needs libfoo')\n")
    with pytest.raises(ConfigError, match=r"entry point 'broken' = 'broken_widgets' of widget-extras .*needs libfoo"):
        registry.lookup("widget").names()


def test_unknown_kind():
    with pytest.raises(KeyError, match="no registry of kind 'gadget'"):
        registry.lookup("gadget")


@pytest.mark.parametrize(
    ("value", "choices", "expected"),
    [
        ("Flatten", ("pool", "flatten", "paper"), "flatten"),
        (" val-auc ", ("val_loss", "val_auc"), "val_auc"),
        ("Validation", {"train": "train", "val": "val", "validation": "val", "test": "test"}, "val"),
    ],
)
def test_choose_accepts_any_spelling(value, choices, expected):
    assert registry.choose(value, choices, what="thing") == expected


def test_choose_refuses_with_one_sentence():
    with pytest.raises(ConfigError, match=r"^unknown head 'flat' for --head; did you mean 'flatten'\?$"):
        registry.choose("flat", ("pool", "flatten", "paper"), what="head", option="--head")
    with pytest.raises(ConfigError, match=r"^unknown split 'holdout'; choose one of: train, val, test\.$"):
        registry.choose("holdout", {"train": "train", "validation": "val", "test": "test"}, what="split")
    with pytest.raises(ConfigError, match=r"unknown per-epoch metric 'best_val_acc' for --metric; did you mean"):
        registry.choose(
            "val_acc", ("val_auc", "val_loss"), what="per-epoch metric", option="--metric", shown="best_val_acc"
        )
