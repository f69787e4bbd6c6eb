"""A small generic name registry with aliases and "did you mean" suggestions.

Names are matched case-insensitively and ignoring ``-``/``_`` so that the original project's
spellings (``SEResNet50``, ``DeiT-T-LRP``, ``MIMICCXR``) resolve to the canonical ones
(``se_resnet50``, ``deit_tiny``, ``mimic-cxr``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medattn.errors import ConfigError

T = TypeVar("T")

# Every registry by kind, so that a lower layer (config validation) can check a name against the
# registry a higher layer (data, models, explain) fills, without importing that layer.
_BY_KIND: dict[str, Registry] = {}


def normalize(name: str) -> str:
    """Lower-case ``name`` and drop ``-``, ``_``, spaces and dots (the matching key)."""
    return "".join(ch for ch in str(name).lower() if ch not in "-_ .")


class Registry(Generic[T]):
    """Maps canonical names (plus aliases) to objects.

    Args:
        kind: what the registry holds, used in error messages ("model", "dataset", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._keys: dict[str, str] = {}
        _BY_KIND.setdefault(kind, self)

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` and ``aliases``."""

        def deco(obj: T) -> T:
            self.add(name, obj, *aliases)
            return obj

        return deco

    def add(self, name: str, obj: T, *aliases: str) -> None:
        """Register ``obj`` under the canonical ``name`` and optional ``aliases``."""
        for key in (name, *aliases):
            k = normalize(key)
            if k in self._keys and self._keys[k] != name:
                raise ValueError(f"{self.kind} name {key!r} is already registered for {self._keys[k]!r}")
            self._keys[k] = name
        self._items[name] = obj

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` or an alias; raises :class:`ConfigError` with a suggestion."""
        key = normalize(name)
        if key in self._keys:
            return self._keys[key]
        choices = self.names()
        close = difflib.get_close_matches(str(name).lower(), choices, n=1, cutoff=0.5)
        if not close:
            by_key = difflib.get_close_matches(key, list(self._keys), n=1, cutoff=0.5)
            close = [self._keys[by_key[0]]] if by_key else []
        hint = f"; did you mean {close[0]!r}?" if close else f"; choose one of: {', '.join(choices)}."
        raise ConfigError(f"unknown {self.kind} {name!r}{hint}")

    def get(self, name: str) -> T:
        """The object registered under ``name`` (or an alias)."""
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        """Canonical names in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize(name) in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def lookup(kind: str) -> Registry | None:
    """The registry of ``kind`` ("dataset", "model", "explanation method", ...), or ``None`` while
    the package that fills it has not been imported."""
    return _BY_KIND.get(kind)


def canonical(kind: str, name: str) -> str:
    """``name`` canonicalised by the registry of ``kind`` (unchanged when that registry is not loaded).

    Raises:
        ConfigError: an unknown name, with a "did you mean" suggestion.
    """
    reg = lookup(kind)
    return reg.canonical(name) if reg is not None else name
