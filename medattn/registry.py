"""Name registries with aliases, "did you mean" suggestions, and the packages that fill them.

Names are matched case-insensitively and ignoring ``-``/``_`` so that the original project's
spellings (``SEResNet50``, ``DeiT-T-LRP``, ``MIMICCXR``) resolve to the canonical ones
(``se_resnet50``, ``deit_tiny``, ``mimic-cxr``). The same look-up checks every fixed choice of an
option (:func:`choose`: ``--head``, ``--split``, ``--metric``, ...), so every unknown value gets
the same kind of sentence.

Where the entries come from (:data:`PROVIDERS`): each registry kind names the package that fills
it. The first look-up in a registry (a name, the list of names, membership) imports that package;
it then imports every module of the package (:mod:`pkgutil`) whose source registers something
(names ``MODELS.``/``ATTENTION.``, ``@register``/``EXPLAINERS.``, ``DATASETS.``/``RESIZE_MODES.``;
the others, which may import timm, torchvision, captum or pandas, load when used), and every module that an installed distribution declares as an entry point of the kind's
group (``medattn.models`` / ``medattn.explainers``). So:

- a new file in ``medattn/models/`` or ``medattn/explain/`` that registers itself is found without
  editing any other file (see ``docs/extending.md``);
- another package adds its own by declaring, in its ``pyproject.toml``,
  ``[project.entry-points."medattn.models"] my_block = "my_package.my_block"`` (the value is the
  module to import; its registrations run on import);
- a name is never accepted or refused depending on what else happened to be imported: the lower
  layers (configuration checks) look registries up by kind (:func:`lookup`, :func:`canonical`)
  and the look-up loads the provider first.

The provider packages are named here as strings and imported at run time, so this low layer does
not import the higher layers that fill it (the import-linter layers stay as they are).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from medattn.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Provider:
    """Where the entries of one registry kind come from.

    Attributes:
        package: the package that creates and fills the registry (imported on first look-up).
        discover: also import the modules of ``package`` that register entries (a new file
            registers itself): those whose source contains one of ``marks``.
        marks: what the source of a registering module contains (the registries' names, the
            ``@register`` decorator). Modules without one (builders, rule tables) are left to
            load when they are used, so that listing names never imports timm, torchvision or
            captum.
        group: entry-point group through which other installed distributions add entries.
    """

    package: str
    discover: bool = False
    marks: tuple[str, ...] = ()
    group: str | None = None


#: Registry kind -> the package that fills it. Models and attention blocks share one provider
#: (a new attention block file usually registers its model variants too).
_MODELS = Provider("medattn.models", discover=True, marks=("MODELS.", "ATTENTION."), group="medattn.models")
_DATA = Provider("medattn.data", discover=True, marks=("DATASETS.", "RESIZE_MODES."))
PROVIDERS: dict[str, Provider] = {
    "dataset": _DATA,
    "resize mode": _DATA,
    "attention block": _MODELS,
    "model": _MODELS,
    "explanation method": Provider(
        "medattn.explain", discover=True, marks=("@register", "EXPLAINERS."), group="medattn.explainers"
    ),
}

# The registry of every kind in PROVIDERS, once its package has created it.
_BY_KIND: dict[str, Registry] = {}
_LOADED: set[Provider] = set()
# Re-entrant: importing a provider's modules may look a registry up again (it is then already marked).
_LOCK = threading.RLock()


def normalize(name: str) -> str:
    """Lower-case ``name`` and drop ``-``, ``_``, spaces and dots (the matching key)."""
    return "".join(ch for ch in str(name).lower() if ch not in "-_ .")


def load(provider: Provider) -> None:
    """Import ``provider``'s package, its modules (when it discovers) and its entry points, once.

    Raises:
        ConfigError: an entry point of an installed distribution that cannot be imported (named,
            with what to do); errors inside medattn's own modules propagate unchanged.
    """
    with _LOCK:
        if provider in _LOADED:
            return
        _LOADED.add(provider)  # first: the modules imported below register into the same registries
        try:
            package = importlib.import_module(provider.package)
            if provider.discover:
                for module in pkgutil.iter_modules(package.__path__, prefix=f"{provider.package}."):
                    if module.name not in sys.modules and _registers(module.name, provider.marks):
                        importlib.import_module(module.name)
            if provider.group:
                for point in entry_points(group=provider.group):
                    _load_entry_point(point, provider.group)
        except BaseException:
            _LOADED.discard(provider)  # a failed load is retried, never left half done
            raise


def _registers(name: str, marks: tuple[str, ...]) -> bool:
    """Whether the source of module ``name`` contains one of ``marks`` (read, not imported)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return True  # a compiled or namespace module: import it to find out
    try:
        with open(spec.origin, encoding="utf-8") as source:
            text = source.read()
    except OSError:
        return True
    return any(mark in text for mark in marks)


def _load_entry_point(point: Any, group: str) -> None:
    try:
        point.load()
    except Exception as exc:  # a third-party plugin: name it instead of a traceback from deep inside
        dist = getattr(getattr(point, "dist", None), "name", None) or "an installed distribution"
        raise ConfigError(
            f"the {group} entry point {point.name!r} = {point.value!r} of {dist} cannot be imported "
            f"({type(exc).__name__}: {exc}); fix or uninstall {dist}."
        ) from exc


class Registry(Generic[T]):
    """Maps canonical names (plus aliases) to objects.

    ``Registry(kind)`` is a free-standing registry (fixed choices, tests); the registries that
    packages fill are made with :meth:`for_kind`, which also loads their provider on first look-up.

    Args:
        kind: what the registry holds, used in error messages ("model", "dataset", ...).
        option: the command-line option that takes these names, named in error messages.
    """

    def __init__(self, kind: str, *, option: str | None = None) -> None:
        self.kind = kind
        self.option = option
        self.provider: Provider | None = None
        self._items: dict[str, T] = {}
        self._keys: dict[str, str] = {}

    @classmethod
    def for_kind(cls, kind: str) -> Registry[Any]:
        """The one registry of ``kind`` (a key of :data:`PROVIDERS`), created by its provider package.

        Raises:
            KeyError: ``kind`` has no provider.
        """
        provider = PROVIDERS[kind]
        with _LOCK:
            if kind not in _BY_KIND:
                reg: Registry[Any] = cls(kind)
                reg.provider = provider
                _BY_KIND[kind] = reg
            return _BY_KIND[kind]

    def _load(self) -> None:
        if self.provider is not None and self.provider not in _LOADED:
            load(self.provider)

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` and ``aliases``."""

        def deco(obj: T) -> T:
            self.add(name, obj, *aliases)
            return obj

        return deco

    def add(self, name: str, obj: T, *aliases: str) -> None:
        """Register ``obj`` under the canonical ``name`` and optional ``aliases``.

        Raises:
            ValueError: a name or alias already taken by another entry (after normalisation).
        """
        for key in (name, *aliases):
            k = normalize(key)
            if k in self._keys and self._keys[k] != name:
                raise ValueError(f"{self.kind} name {key!r} is already registered for {self._keys[k]!r}")
        for key in (name, *aliases):
            self._keys[normalize(key)] = name
        self._items[name] = obj

    def canonical(self, name: str, *, shown: str | None = None) -> str:
        """The canonical name for ``name`` or an alias.

        Args:
            name: the name to look up (case, ``-``, ``_``, spaces and dots ignored).
            shown: the spelling the user typed, for the error message (default ``name``).

        Raises:
            ConfigError: an unknown name: one sentence with the closest name ("did you mean") or,
                when nothing is close, every choice.
        """
        self._load()
        key = normalize(name)
        if key in self._keys:
            return self._keys[key]
        choices = self.names()
        close = difflib.get_close_matches(str(name).lower(), choices, n=1, cutoff=0.5)
        if not close:
            by_key = difflib.get_close_matches(key, list(self._keys), n=1, cutoff=0.5)
            close = [self._keys[by_key[0]]] if by_key else []
        hint = f"; did you mean {close[0]!r}?" if close else f"; choose one of: {', '.join(choices)}."
        where = f" for {self.option}" if self.option else ""
        raise ConfigError(f"unknown {self.kind} {shown if shown is not None else name!r}{where}{hint}")

    def get(self, name: str) -> T:
        """The object registered under ``name`` (or an alias)."""
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        """Canonical names in registration order (medattn's own first, then discovered modules by
        file name, then entry points)."""
        self._load()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and normalize(name) in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def lookup(kind: str) -> Registry:
    """The registry of ``kind`` ("dataset", "model", "explanation method", ...), its provider loaded.

    Raises:
        KeyError: a kind no package provides.
    """
    if kind not in PROVIDERS:
        raise KeyError(f"no registry of kind {kind!r}; the kinds are: {', '.join(PROVIDERS)}")
    reg = Registry.for_kind(kind)  # the same object the provider package creates when it loads
    reg._load()
    return reg


def canonical(kind: str, name: str) -> str:
    """``name`` canonicalised by the registry of ``kind``.

    Raises:
        ConfigError: an unknown name, with a "did you mean" suggestion.
    """
    return lookup(kind).canonical(name)


def choose(
    value: object,
    choices: Iterable[str] | Mapping[str, str],
    *,
    what: str,
    option: str | None = None,
    shown: str | None = None,
) -> str:
    """The canonical spelling of ``value`` among fixed ``choices``, by the registries' look-up.

    Args:
        value: what the user gave (case, ``-``, ``_``, spaces and dots ignored).
        choices: the accepted names, or a mapping ``spelling -> canonical name`` (aliases).
        what: what the value is, for the error message ("head", "split", "metric").
        option: the option that takes it (``--head``), for the error message.
        shown: the spelling the user typed, when ``value`` was derived from it (error message only).

    Returns:
        The canonical name (``"Flatten"`` -> ``"flatten"``, ``"validation"`` -> ``"val"``).

    Raises:
        ConfigError: an unknown value: one sentence with "did you mean" or the list of choices.
    """
    pairs = tuple(choices.items()) if isinstance(choices, Mapping) else tuple((c, c) for c in choices)
    return _fixed(what, option, pairs).canonical(str(value), shown=shown)


@lru_cache(maxsize=256)
def _fixed(what: str, option: str | None, pairs: tuple[tuple[str, str], ...]) -> Registry[str]:
    reg: Registry[str] = Registry(what, option=option)
    for target in dict.fromkeys(t for _, t in pairs):
        reg.add(target, target, *(s for s, t in pairs if t == target and s != target))
    return reg
