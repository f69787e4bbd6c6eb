"""Models of the case study: ResNet-50 / DenseNet-121 with SE or CBAM attention, and DeiT-Tiny.

Public API::

    from medattn.models import MODELS, create_model, canonical_model_name, model_table, is_vit, load_weights

    model = create_model("cbam_resnet50", num_classes=2, pretrained="imagenet")
    model = create_model("SEDenseNet121", num_classes=2, weights="densenet121.pth", head="flatten")
    model = create_model("resnet50", num_classes=2, head="paper")  # the original's head: pool here
    vit = create_model("DeiT-T-LRP", num_classes=2, nr_layers=4, img_size=224)
    with vit.record_attention() as maps:   # maps: one (B, 3, N, N) tensor per block
        logits = vit(x)

Leaf module types, for explainers that attach one rule per type (every module is called at
most once per forward, every ReLU is ``inplace=False``, there is no ``nn.Identity``):

- ``resnet50``: ``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU``, ``nn.MaxPool2d`` (stem),
  ``nn.AdaptiveAvgPool2d`` (``avgpool``, pool head only), ``nn.Linear`` (``fc``),
  :class:`~medattn.models.layers.Add` (``layerX.Y.add``: residual sum, followed by ``act3``).
- ``se_resnet50``: the above plus, in every bottleneck's ``attn`` (:class:`SEBlock`):
  ``nn.AdaptiveAvgPool2d`` (``pool``), ``nn.Conv2d`` (``fc1``, ``fc2``), ``nn.ReLU`` (``act``),
  ``nn.Sigmoid`` (``gate``), :class:`~medattn.models.layers.GateMul` (``mul``).
- ``cbam_resnet50``: ``resnet50`` plus, in every ``attn`` (:class:`CBAMBlock`), ``channel``:
  ``nn.AdaptiveAvgPool2d``, ``nn.AdaptiveMaxPool2d``, ``nn.Conv2d`` (``fc1``, ``fc2``, run once on
  the avg/max descriptors stacked as ``(B, C, 1, 2)``, never on dim 0), ``nn.ReLU``, ``Add`` (sums the two MLP
  outputs), ``nn.Sigmoid``, ``GateMul``; then ``spatial``:
  :class:`~medattn.models.layers.ChannelPool` (channel mean and max), ``nn.Conv2d`` (7x7),
  ``nn.BatchNorm2d``, ``nn.Sigmoid``, ``GateMul``.
- ``densenet121``: ``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU`` (including ``features.relu5``),
  ``nn.MaxPool2d`` (``pool0``), ``nn.AvgPool2d`` (transitions), ``nn.AdaptiveAvgPool2d``
  (``avgpool``, pool head only), ``nn.Linear`` (``classifier``). Dense connectivity is
  ``torch.cat`` (no module, linear). No ``Add``.
- ``se_densenet121`` / ``cbam_densenet121``: ``densenet121`` plus ``features.attn1..attn4`` (an
  ``SEBlock`` / ``CBAMBlock`` with the leaf types listed above).
- ``deit_tiny``: timm's ``VisionTransformer`` leaves (``Conv2d`` patch embedding, ``LayerNorm``,
  ``Linear``, ``GELU``, ``Dropout`` and ``Identity`` placeholders); transformer attribution uses
  its parameter names directly, not per-module rules.

Both gates are ``x * sigmoid(...)`` through ``GateMul.forward(x, gate)``; the residual and the
CBAM MLP sum are ``Add.forward(a, b)``. The heads flatten with ``torch.flatten`` (a reshape).

SE: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018. CBAM: Woo et al., "CBAM:
Convolutional Block Attention Module", ECCV 2018. DeiT: Touvron et al., ICML 2021.
"""

import importlib

from medattn.models.attention import ATTENTION, CBAMBlock, ECABlock, SEBlock, create_attention
from medattn.models.factory import (
    HEAD_CHOICES,
    MODELS,
    PAPER_HEAD,
    ModelSpec,
    canonical_model_name,
    count_parameters,
    create_model,
    create_model_with_report,
    is_vit,
    model_table,
    resolve_head,
)
from medattn.models.layers import Add, ChannelPool, GateMul
from medattn.models.weights import WeightsReport, load_weights, read_state_dict

# The CNN and ViT classes load on first use: they subclass torchvision's and timm's models, whose
# imports take seconds, and listing the models (the command line's --help) needs only the registry.
_LAZY = {
    "Bottleneck": "medattn.models.cnn",
    "DenseNet": "medattn.models.cnn",
    "ResNet": "medattn.models.cnn",
    "densenet121": "medattn.models.cnn",
    "resnet50": "medattn.models.cnn",
    "DeiT": "medattn.models.vit",
    "deit_tiny": "medattn.models.vit",
}


def __getattr__(name: str):
    """``medattn.models.ResNet`` etc., imported from their module when first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTENTION",
    "MODELS",
    "Add",
    "Bottleneck",
    "CBAMBlock",
    "ChannelPool",
    "DeiT",
    "DenseNet",
    "ECABlock",
    "GateMul",
    "HEAD_CHOICES",
    "ModelSpec",
    "PAPER_HEAD",
    "ResNet",
    "SEBlock",
    "WeightsReport",
    "canonical_model_name",
    "count_parameters",
    "create_attention",
    "create_model",
    "create_model_with_report",
    "deit_tiny",
    "densenet121",
    "is_vit",
    "load_weights",
    "model_table",
    "read_state_dict",
    "resnet50",
    "resolve_head",
]
