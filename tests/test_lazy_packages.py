"""``medattn.tracking`` and ``medattn.data`` load their submodules when a name is first used.

Every stage module imports both packages, and the command line imports the stage modules for their
configs, so importing either must not load MLflow (tracking) or pandas and torch (data). Each name
they export must still be there, the same object as in the submodule that defines it.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import medattn.data
import medattn.tracking


def _loaded_after(statement: str, packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` a fresh interpreter has loaded after running ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(p for p in {packages!r} if p in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_packages_loads_neither_mlflow_nor_pandas_nor_torch():
    statement = (
        "import medattn.tracking, medattn.data, medattn.data.ids\nfrom medattn.tracking import redact_url, BEST_CKPT"
    )
    assert _loaded_after(statement, ("mlflow", "requests", "pandas", "torch", "PIL")) == []


@pytest.mark.parametrize("package", [medattn.tracking, medattn.data], ids=lambda p: p.__name__)
def test_every_exported_name_is_its_submodules_object(package):
    lazy = package._SUBMODULE_OF if package is medattn.tracking else package._LAZY_NAMES
    for name in package.__all__:
        value = getattr(package, name)
        if name in lazy:
            where = lazy[name]
            module, attr = (where, name) if isinstance(where, str) else where
            assert value is getattr(importlib.import_module(f"{package.__name__}.{module}"), attr), name
    assert set(lazy) <= set(package.__all__) <= set(dir(package))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
        medattn.tracking.nonsense  # noqa: B018 - the access is the test
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
        medattn.data.nonsense  # noqa: B018 - the access is the test


def test_the_data_sets_register_without_importing_the_package_names():
    """A look-up by kind finds every data set of the package, whatever was imported before."""
    statement = "from medattn import registry\nprint(json.dumps(registry.lookup('dataset').names()))"
    code = f"import json\n{statement}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == ["aptos2019", "isic2020", "mimic-cxr", "demo"]
    assert medattn.data.get_dataset("APTOS").name == "aptos2019"


def test_listing_the_data_sets_loads_no_pandas():
    """``--help`` and completion list the data set names; pandas loads when a data set is read."""
    statement = "from medattn import registry\nassert 'demo' in registry.lookup('dataset').names()"
    assert _loaded_after(statement, ("pandas", "sklearn", "scipy")) == []


def test_a_lazy_module_imports_on_the_first_attribute_read(tmp_path, monkeypatch):
    from medattn import lazy

    (tmp_path / "lazy_probe.py").write_text(
        "import sys\nsys.lazy_probe_runs = getattr(sys, 'lazy_probe_runs', 0) + 1\nVALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_probe", raising=False)
    probe = lazy.module("lazy_probe")
    assert "lazy_probe" not in sys.modules and "imported on first use" in repr(probe)
    assert probe.VALUE == 42 and probe.VALUE == 42
    assert "lazy_probe" in sys.modules and sys.lazy_probe_runs == 1
    with pytest.raises(AttributeError):
        probe.missing  # noqa: B018 - the access is the test
    del sys.modules["lazy_probe"], sys.lazy_probe_runs  # leave the interpreter as found
