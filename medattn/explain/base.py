"""The explainer interface, the registry of explanation methods and :func:`attribute`.

Every method is an :class:`Explainer` registered by name in :data:`EXPLAINERS`; :func:`attribute`
looks it up, checks that it applies to the model, validates the batch and the targets, and runs
it in fp32 with autocast disabled and the model in eval mode, restoring the model's mode
afterwards. Explainers never leave hooks or attributes on the model (captum methods run on a
private deep copy; transformer-lrp only reads parameters).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from medattn.errors import ConfigError
from medattn.models import is_vit  # the one definition (also unwraps DDP / torch.compile); re-exported here
from medattn.registry import Registry


class Explainer(ABC):
    """One attribution method.

    Subclasses set :attr:`name`, implement :meth:`attribute` (keyword-only options after
    ``target``) and :meth:`applies_to`.
    """

    name: str = ""
    #: What the method applies to, for error messages ("the CNN models", "DeiT (timm ViT) models").
    applies_to_text: str = ""

    @abstractmethod
    def applies_to(self, model: nn.Module) -> bool:
        """Whether this method can explain ``model``."""

    @abstractmethod
    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, **options: object) -> Tensor:
        """Attribution maps for a batch.

        Args:
            model: the classifier (eval mode, left unchanged).
            x: ``(B, 3, H, W)`` float32 images.
            target: ``(B,)`` long class indices.
            **options: method-specific keyword options.

        Returns:
            Maps, ``(B, 3, H, W)`` or ``(B, g, g)`` depending on the method.
        """

    def option_names(self) -> list[str]:
        """Keyword options :meth:`attribute` accepts."""
        params = inspect.signature(self.attribute).parameters.values()
        return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


EXPLAINERS: Registry[Explainer] = Registry.for_kind("explanation method")
"""Explanation methods by name (``deeplift``, ``lrp``, ``transformer-lrp``, ...)."""


def register(explainer: type[Explainer]) -> type[Explainer]:
    """Class decorator: instantiate ``explainer`` and register it under its ``name``."""
    EXPLAINERS.add(explainer.name, explainer())
    return explainer


def methods_for(model: nn.Module) -> list[str]:
    """Default explanation methods for ``model``.

    Args:
        model: a medattn model.

    Returns:
        ``["transformer-lrp"]`` for the ViT, ``["deeplift", "lrp"]`` for the CNNs.
    """
    return ["transformer-lrp"] if is_vit(model) else ["deeplift", "lrp"]


@contextmanager
def explaining(model: nn.Module, device_type: str) -> Iterator[None]:
    """Eval mode and no autocast for the duration; every module's training flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        for module, training in modes:
            module.training = training


def attribute(model: nn.Module, images: Tensor, method: str, target: Tensor, **options: object) -> Tensor:
    """Explain a batch of images with one method.

    Args:
        model: a medattn classifier (one of the six CNNs or ``deit_tiny``); left exactly as found
            (mode, parameters, hooks, attributes).
        images: ``(B, 3, H, W)`` normalised images (any float dtype; explained in float32).
        method: a name in :data:`EXPLAINERS` (``deeplift``, ``lrp``, ``transformer-lrp``,
            ``integrated-gradients``), case- and dash-insensitive.
        target: ``(B,)`` integer class indices to explain (labels or predictions).
        **options: method options, e.g. ``start_layer`` for transformer-lrp, ``epsilon`` for lrp,
            ``n_steps`` for integrated-gradients.

    Returns:
        float32 maps: ``(B, 3, H, W)`` for the captum methods, the raw ``(B, g, g)`` patch-grid map
        for ``transformer-lrp``.

    Raises:
        ConfigError: unknown method (with a suggestion), a method that does not apply to the
            model, an unknown option, or images/targets of the wrong shape.
    """
    explainer = EXPLAINERS.get(method)
    if not explainer.applies_to(model):
        kind = "a ViT (deit_tiny)" if is_vit(model) else f"a {type(model).__name__}"
        raise ConfigError(
            f"method {explainer.name!r} does not apply to {kind}: it explains {explainer.applies_to_text}; "
            f"use {', '.join(methods_for(model))} for this model."
        )
    allowed = explainer.option_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"method {explainer.name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(allowed) or 'none'}."
        )
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"images must be a (B, 3, H, W) tensor, got {shape}.")
    target = torch.as_tensor(target, device=images.device)
    if target.shape != (images.shape[0],) or target.dtype.is_floating_point:
        raise ConfigError(
            f"target must be ({images.shape[0]},) integer class indices, got shape {tuple(target.shape)}."
        )
    x = images.detach().to(torch.float32)
    with explaining(model, images.device.type):
        maps = explainer.attribute(model, x, target.long(), **options)
    return maps.detach().to(torch.float32)
