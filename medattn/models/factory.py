"""The model registry and :func:`create_model`: the seven architectures of the paper's case study.

Each registry entry is a :class:`ModelSpec` (architecture, attention block, placement, how to
build it). The builders take attention as a parameter (``resnet50(attn="cbam")``), so an entry
is one :meth:`MODELS.add <medattn.registry.Registry.add>` call, here or in a new module of this
package (found without an import: see ``docs/extending.md``); the tests are parametrized over
``MODELS.names()`` and cover new entries for free.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch
from torch import nn

from medattn import config
from medattn.errors import ConfigError
from medattn.models.weights import WeightsReport, imagenet_state_dict, load_weights, read_state_dict
from medattn.registry import Registry, choose

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")

# The choice lists are the config's (one source for the CLI, the configs and the factory).
PRETRAINED = config.PRETRAINED
INITS = config.INITS
PAPER_HEAD = "paper"
"""The ``head`` value that means "the original project's head for this family" (:attr:`ModelSpec.paper_head`)."""
HEAD_CHOICES = config.HEADS
"""Every accepted ``head`` value: ``pool``, ``flatten`` (:data:`medattn.models.cnn.HEADS`) and ``paper``."""


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes:
        name: canonical CLI name (``se_resnet50``).
        architecture: human name of the backbone (``ResNet-50``).
        backbone: weights family (``resnet50``, ``densenet121``, ``deit_tiny``).
        attention: attention block name, ``None`` for the plain CNNs, ``self-attention`` for DeiT.
        placement: where the attention sits, in words (shown by ``medattn models``).
        scratch_in_paper: the original project trained it from scratch (``init="paper"``).
        build: ``build(num_classes, head=, img_size=, nr_layers=) -> nn.Module`` (the ViT's also takes
            ``patch_size=``).
        paper_head: the head the original project gave this family, what ``head="paper"`` builds:
            ``flatten`` for the DenseNets (a Linear over 1024 x 7 x 7 = 50,176 inputs at 224 px),
            ``pool`` for the ResNets (2,048 inputs) and for DeiT (its class token).
    """

    name: str
    architecture: str
    backbone: str
    attention: str | None
    placement: str
    scratch_in_paper: bool
    build: Callable[..., nn.Module]
    paper_head: str = "pool"


def cnn_builder(family: str, attn: str | None) -> Callable[..., nn.Module]:
    """The :attr:`ModelSpec.build` of a ``resnet50`` or ``densenet121`` variant with attention block ``attn``.

    Args:
        family: ``resnet50`` or ``densenet121`` (:func:`medattn.models.cnn.resnet50` / ``densenet121``).
        attn: a name in :data:`~medattn.models.attention.ATTENTION`, or ``None`` for the plain CNN.

    Returns:
        ``build(num_classes, *, head, img_size, nr_layers) -> nn.Module`` (``nr_layers`` unused);
        torchvision is imported when it builds, not before.

    Raises:
        ValueError: another ``family`` (a programming error in a model module).
    """
    if family not in ("resnet50", "densenet121"):
        raise ValueError(f"cnn_builder builds resnet50 or densenet121, not {family!r}")

    def build(num_classes: int, *, head: str, img_size: int, nr_layers: int) -> nn.Module:
        del nr_layers  # only the ViT has a depth option, as in the original project
        # torchvision loads when a CNN is built, not when the names are listed (the command line's --help)
        from medattn.models import cnn

        builder = cnn.resnet50 if family == "resnet50" else cnn.densenet121
        return builder(num_classes, attn=attn, head=head, img_size=img_size)

    return build


def _vit(num_classes: int, *, head: str, img_size: int, nr_layers: int, patch_size: int = 16) -> nn.Module:
    if head != "pool":
        raise ConfigError(
            f"deit_tiny classifies from its class token; --head {head} applies to the CNNs only, use --head pool."
        )
    # timm loads when the ViT is built, not when the names are listed (the command line's --help)
    from medattn.models.vit import deit_tiny

    return deit_tiny(num_classes, nr_layers=nr_layers, img_size=img_size, patch_size=patch_size)


MODELS: Registry[ModelSpec] = Registry.for_kind("model")
"""All models by canonical name; the original project's spellings are aliases."""

_RESNET_PLACEMENT = "in every bottleneck, after bn3 and before the residual add (16 blocks, reduction 16)"
_DENSENET_PLACEMENT = "after each of the 4 dense blocks, before the transition / final norm (reduction 16)"
for _spec, _aliases in (
    (
        ModelSpec(
            "densenet121",
            "DenseNet-121",
            "densenet121",
            None,
            "none",
            False,
            cnn_builder("densenet121", None),
            "flatten",
        ),
        ("DenseNet121",),
    ),
    (ModelSpec("resnet50", "ResNet-50", "resnet50", None, "none", False, cnn_builder("resnet50", None)), ("ResNet50",)),
    (
        ModelSpec(
            "se_densenet121",
            "DenseNet-121",
            "densenet121",
            "se",
            f"SE {_DENSENET_PLACEMENT}",
            True,
            cnn_builder("densenet121", "se"),
            "flatten",
        ),
        ("SEDenseNet121",),
    ),
    (
        ModelSpec(
            "se_resnet50",
            "ResNet-50",
            "resnet50",
            "se",
            f"SE {_RESNET_PLACEMENT}",
            False,
            cnn_builder("resnet50", "se"),
        ),
        ("SEResNet50",),
    ),
    (
        ModelSpec(
            "cbam_densenet121",
            "DenseNet-121",
            "densenet121",
            "cbam",
            f"CBAM {_DENSENET_PLACEMENT}",
            True,
            cnn_builder("densenet121", "cbam"),
            "flatten",
        ),
        ("CBAMDenseNet121",),
    ),
    (
        ModelSpec(
            "cbam_resnet50",
            "ResNet-50",
            "resnet50",
            "cbam",
            f"CBAM {_RESNET_PLACEMENT}",
            True,
            cnn_builder("resnet50", "cbam"),
        ),
        ("CBAMResNet50",),
    ),
    (
        ModelSpec(
            "deit_tiny",
            "DeiT-Tiny/16",
            "deit_tiny",
            "self-attention",
            "multi-head self-attention in every block (3 heads)",
            False,
            _vit,
        ),
        ("DeiT-T-LRP", "DeiT-T", "DeiT-Tiny"),
    ),
):
    MODELS.add(_spec.name, _spec, *_aliases)
del _spec, _aliases


def canonical_model_name(name: str) -> str:
    """The canonical registry name for ``name`` or one of its aliases.

    Args:
        name: e.g. ``SEResNet50``, ``DeiT-T-LRP`` (case and ``-``/``_`` ignored).

    Returns:
        e.g. ``se_resnet50``, ``deit_tiny``.

    Raises:
        ConfigError: unknown name, with a "did you mean" suggestion.
    """
    return MODELS.canonical(name)


def resolve_head(name: str, head: str) -> str:
    """The concrete head (``pool`` or ``flatten``) that ``head`` builds for model ``name``.

    ``paper`` resolves per family to the original project's head (:attr:`ModelSpec.paper_head`):
    the DenseNets flatten, the ResNets and DeiT pool. ``pool`` and ``flatten`` resolve to themselves.

    Args:
        name: registry name or alias (``cbam_resnet50``, ``DenseNet121``).
        head: ``pool``, ``flatten`` or ``paper`` (case-insensitive).

    Returns:
        ``pool`` or ``flatten``.

    Raises:
        ConfigError: unknown model name or head value.
    """
    spec = MODELS.get(name)
    head = choose(head, HEAD_CHOICES, what="head", option="--head")
    return spec.paper_head if head == PAPER_HEAD else head


def _check_patch_size(spec: ModelSpec, patch_size: int, *, loads_weights: bool) -> None:
    """A patch size other than the paper's 16 px: DeiT only, and only from scratch."""
    if patch_size != 16 and spec.backbone != "deit_tiny":
        raise ConfigError(f"--patch-size applies to deit_tiny only; drop it for {spec.name}.")
    if patch_size != 16 and loads_weights:
        raise ConfigError(
            f"DeiT weights have 16-px patches; --patch-size {patch_size} trains from scratch, so pass --pretrained none."
        )


def create_model_with_report(
    name: str,
    num_classes: int,
    *,
    pretrained: str = "none",
    weights: str | Path | None = None,
    head: str = "pool",
    nr_layers: int = 12,
    img_size: int = 224,
    init: str = "fair",
    zero_init_residual_branches: bool = False,
    patch_size: int = 16,
) -> tuple[nn.Module, WeightsReport | None]:
    """Build a registered model, initialise its backbone, and say what was loaded.

    Weights: ``weights=PATH`` loads a local state_dict or checkpoint (it takes the place of the
    download, e.g. on a machine without network); otherwise ``pretrained="imagenet"`` downloads
    the torchvision/timm ImageNet weights. Either way only attention modules and the head may
    start fresh (see :func:`medattn.models.load_weights`); the :class:`WeightsReport` is logged and
    returned next to the model (``None`` when nothing was loaded; nothing is written onto the
    model). With ``init="paper"``,
    SE-DenseNet121, CBAM-DenseNet121 and CBAM-ResNet50 start from scratch whatever the weights,
    as in the original project; ``init="fair"`` initialises every variant's backbone.

    Args:
        name: registry name or alias (``cbam_resnet50``, ``CBAMResNet50``).
        num_classes: output classes (>= 1).
        pretrained: ``none`` or ``imagenet``.
        weights: local weights file, or ``None``.
        head: ``pool`` (global average pool + Linear), ``flatten`` (Linear over the flattened
            final feature map, CNNs only; needs ``img_size`` a multiple of 32) or ``paper`` (the
            original project's head for the family: DenseNets flatten, ResNets and DeiT pool).
        nr_layers: transformer blocks of ``deit_tiny`` (ignored by the CNNs).
        img_size: input side in pixels (a multiple of 16 for ``deit_tiny``).
        init: ``fair`` or ``paper``.
        zero_init_residual_branches: start every ResNet bottleneck's residual branch at zero
            (:func:`medattn.models.cnn.zero_init_residual`; ResNet variants only). Weights loaded
            afterwards replace it.
        patch_size: ``deit_tiny``'s patch side (16 as in the paper; another value cannot load
            ImageNet weights). The CNNs accept only 16, the default.

    Returns:
        ``(model, report)``: the model, mapping ``(B, 3, img_size, img_size) -> (B, num_classes)``,
        in train mode, and the :class:`WeightsReport` of the loaded weights (``None`` if none).

    Raises:
        ConfigError: unknown name or option value, bad size, a missing or foreign weights
            file, or ImageNet weights that cannot be downloaded.
    """
    spec = MODELS.get(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}.")
    pretrained = choose(pretrained, PRETRAINED, what="pretrained weights", option="--pretrained")
    init = choose(init, INITS, what="init", option="--init")
    head = resolve_head(spec.name, head)
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"weights file '{weights}' does not exist; pass an existing file with --weights PATH.")

    # Build first: option errors (sizes, head) should not wait for a download.
    _check_patch_size(spec, patch_size, loads_weights=weights is not None or pretrained == "imagenet")
    # only the ViT takes a patch size; other builders keep the four-argument signature
    extra = {"patch_size": patch_size} if patch_size != 16 else {}
    model = spec.build(num_classes, head=head, img_size=img_size, nr_layers=nr_layers, **extra)
    # torchvision's ResNet classes load with the CNN builders (see cnn_builder)
    from medattn.models.cnn import zero_init_residual

    if zero_init_residual_branches and not zero_init_residual(model):
        raise config.zero_init_error(spec.name)
    state, source = None, ""
    if weights is not None or pretrained == "imagenet":
        if init == "paper" and spec.scratch_in_paper:
            log.info("%s starts from scratch: init='paper' reproduces the original project", spec.name)
        elif weights is not None:
            state, source = read_state_dict(weights), str(weights)
        else:
            state, source = imagenet_state_dict(spec.backbone, spec.name), f"imagenet:{spec.backbone}"
    report: WeightsReport | None = None
    if state is not None:
        report = load_weights(model, state, arch=spec.name, source=source)
    return model, report


def _parameters_of(source: Callable[_P, object]) -> Callable[[Callable[..., _R]], Callable[_P, _R]]:
    """Give the decorated function ``source``'s parameters: for type checkers (through ``ParamSpec``)
    and for ``inspect.signature`` / ``help()``, so a wrapper that passes its options on declares them once.
    """

    def apply(wrapper: Callable[..., _R]) -> Callable[_P, _R]:
        returns = inspect.signature(wrapper).return_annotation
        wrapper.__signature__ = inspect.signature(source).replace(return_annotation=returns)  # type: ignore[attr-defined]
        return wrapper

    return apply


@_parameters_of(create_model_with_report)
def create_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model and initialise its backbone: :func:`create_model_with_report` without the report.

    Args:
        name: registry name or alias (``cbam_resnet50``, ``CBAMResNet50``).
        num_classes: output classes (>= 1).
        **options: the keyword options of :func:`create_model_with_report`, with its defaults
            (``help(create_model)`` lists them).

    Returns:
        The model, mapping ``(B, 3, img_size, img_size) -> (B, num_classes)``, in train mode.
    """
    model, _ = create_model_with_report(name, num_classes, **options)
    return model


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` (possibly wrapped by DDP or ``torch.compile``) is a vision transformer."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)
    # Without timm loaded no ViT can exist; looking it up in sys.modules keeps timm out of CNN-only runs.
    vision_transformer = sys.modules.get("timm.models.vision_transformer")
    return vision_transformer is not None and isinstance(inner, vision_transformer.VisionTransformer)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_table() -> list[dict]:
    """One row per registered model: ``name``, ``architecture``, ``attention``, ``placement``, ``params``.

    ``params`` is counted at ``num_classes=2``, ``img_size=224``, ``head="pool"``, 12 DeiT blocks.
    Models are built on the ``meta`` device, so no memory is allocated and no weights computed.
    """
    rows = []
    for name in MODELS.names():
        spec = MODELS.get(name)
        with torch.device("meta"):
            model = spec.build(2, head="pool", img_size=224, nr_layers=12)
        rows.append(
            {
                "name": spec.name,
                "architecture": spec.architecture,
                "attention": spec.attention or "none",
                "placement": spec.placement,
                "params": count_parameters(model),
            }
        )
    return rows


__all__ = [
    "MODELS",
    "ModelSpec",
    "HEAD_CHOICES",
    "PAPER_HEAD",
    "canonical_model_name",
    "cnn_builder",
    "count_parameters",
    "create_model",
    "create_model_with_report",
    "is_vit",
    "load_weights",
    "model_table",
    "resolve_head",
]
