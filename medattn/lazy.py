"""A module imported on its first use, for the libraries that modules on the command line's path need
only inside their functions.

``pd = lazy.module("pandas")`` at the top of a module keeps every ``pd.DataFrame(...)`` in its
functions as written, while importing the module costs nothing: pandas loads when a function first
touches ``pd``. The data set, stage and score modules use it for pandas (and the search stage for
optuna), so that ``--help`` and shell completion, which import them for the configs and read the
``dataset`` registry for the names, do not load it.

Hand-written rather than :class:`importlib.util.LazyLoader` (or the ``lazy_loader`` package, which
uses it): those put a half-loaded module into :data:`sys.modules`, so that ``"pandas" in sys.modules``
becomes true before pandas is loaded, and Python 3.11's ``LazyLoader`` can run a module twice when two
threads touch it first at once. This proxy only calls :func:`importlib.import_module` (thread-safe
under the import lock) and forwards attribute reads to the real module.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Module:
    """Stands for the module ``name`` and imports it on the first attribute read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        # only reached for names not cached yet on this proxy
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def module(name: str) -> ModuleType:
    """The module ``name``, imported when one of its attributes is first read."""
    return _Module(name)  # type: ignore[return-value] - reads as the module it stands for
