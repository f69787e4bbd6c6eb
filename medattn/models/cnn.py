"""ResNet-50 and DenseNet-121 with attention as a builder parameter, explainable by construction.

Both reuse torchvision's architectures (``torchvision.models.ResNet`` / ``DenseNet``) and keep
torchvision's parameter names, so torchvision's ImageNet state_dicts load into every variant;
only the attention modules (``*.attn*``) and the head are new. Changes, and why:

- torchvision's ``Bottleneck`` calls one ReLU three times and adds the residual in place
  (``out += identity``); captum's DeepLift raises on the reused ReLU. :class:`Bottleneck` has
  ``act1/act2/act3`` and an :class:`~medattn.models.layers.Add` module for the residual.
- every ``nn.ReLU`` is built with ``inplace=False`` (in-place ops hide activations from hooks).
- torchvision's DenseNet ends in ``F.relu(features, inplace=True)`` inside ``forward``; here it is
  the module ``features.relu5``.
- no ``nn.Identity`` placeholders (captum's LRP has no rule for them): a plain variant simply has
  no attention module.

Placement (as in the SE and CBAM papers): ResNet-50 puts the block inside every bottleneck after ``bn3`` and before
the residual add; DenseNet-121 puts one block after each of the 4 dense blocks
(``features.attn1..attn4``, before the transition or the final norm).

SE: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018. CBAM: Woo et al., "CBAM:
Convolutional Block Attention Module", ECCV 2018.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models import densenet as tv_densenet
from torchvision.models import resnet as tv_resnet

from medattn import config
from medattn.errors import ConfigError
from medattn.models.attention import create_attention
from medattn.models.layers import Add

HEADS = tuple(h for h in config.HEADS if h != "paper")
"""The heads the builders make (``config.HEADS`` less ``paper``, which :func:`medattn.models.resolve_head`
turns into one of them per family): ``pool``: global average pool + Linear; ``flatten``: Linear over
the flattened final map."""

_STRIDE = 32  # total downsampling of both backbones: the final map is img_size / 32 wide


def _head_in_features(channels: int, head: str, img_size: int) -> int:
    """Input width of the classifier for ``head`` at ``img_size`` (validated)."""
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose 'pool' or 'flatten'.")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < _STRIDE:
        raise ConfigError(f"img_size must be an integer of at least {_STRIDE} pixels, got {img_size!r}.")
    if head == "pool":
        return channels
    if img_size % _STRIDE:
        raise ConfigError(
            f"the flatten head needs an img_size that is a multiple of {_STRIDE} "
            f"(the final feature map is img_size/{_STRIDE} wide), got {img_size}; "
            "use --head pool or a size such as 224."
        )
    side = img_size // _STRIDE
    return channels * side * side


def _no_inplace(module: nn.Module) -> None:
    # torchvision builds its ReLUs in place; in-place ops overwrite the activations that
    # captum's hooks (and our forward hooks in tests) read.
    for m in module.modules():
        if hasattr(m, "inplace"):
            m.inplace = False


class _Classifier(nn.Module):
    """The forward both backbones share: features, the pool (``pool`` head only), flatten, the Linear head.

    A subclass sets ``avgpool`` (``None`` for the ``flatten`` head) and defines
    :meth:`forward_features` and :meth:`get_classifier` (the head keeps torchvision's name,
    ``fc`` or ``classifier``, so torchvision's state_dicts still load).
    """

    avgpool: nn.Module | None

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone: ``(B, 3, H, W) -> (B, C, H/32, W/32)``."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Linear:
        """The final Linear layer."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits.

        Args:
            x: images ``(B, 3, H, W)`` (``H = W = img_size`` for the flatten head).

        Returns:
            ``(B, num_classes)``.
        """
        x = self.forward_features(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
        # torch.flatten is a reshape, not a nonlinearity: no module needed for explainers.
        return self.get_classifier()(torch.flatten(x, 1))


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1) with an optional attention block before the residual add.

    Same parameter names as ``torchvision.models.resnet.Bottleneck`` (``conv1..3``, ``bn1..3``,
    ``downsample``) plus ``act1/act2/act3`` (one ReLU each), ``attn`` (only when attention is
    used) and ``add`` (the residual sum).

    Args:
        inplanes: input channels.
        planes: width of the 3x3 conv; the block outputs ``planes * 4`` channels.
        stride: stride of the 3x3 conv.
        downsample: projection of the shortcut when shape changes, or ``None``.
        groups: groups of the 3x3 conv.
        base_width: width per group (64 for ResNet-50).
        dilation: dilation of the 3x3 conv.
        norm_layer: normalisation constructor (``nn.BatchNorm2d``).
        attn: attention block name (``se``, ``cbam``, ``eca``) or ``None``.
        reduction: reduction ratio of the attention block.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        attn: str | None = None,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        out_channels = planes * self.expansion
        self.conv1 = tv_resnet.conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.act1 = nn.ReLU(inplace=False)
        self.conv2 = tv_resnet.conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.act2 = nn.ReLU(inplace=False)
        self.conv3 = tv_resnet.conv1x1(width, out_channels)
        self.bn3 = norm_layer(out_channels)
        # No Identity placeholder for the plain variant: captum's LRP raises on Identity.
        self.attn = create_attention(attn, out_channels, reduction) if attn else None
        self.downsample = downsample
        self.add = Add()
        self.act3 = nn.ReLU(inplace=False)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """Residual block.

        Args:
            x: ``(B, inplanes, H, W)``.

        Returns:
            ``(B, planes * 4, H / stride, W / stride)``.
        """
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attn is not None:
            out = self.attn(out)
        return self.act3(self.add(out, identity))


class _BlockFactory:
    """Hands torchvision's ``ResNet._make_layer`` a block constructor that carries ``attn``."""

    expansion = Bottleneck.expansion

    def __init__(self, attn: str | None, reduction: int) -> None:
        self.attn = attn
        self.reduction = reduction

    def __call__(self, *args, **kwargs) -> Bottleneck:
        return Bottleneck(*args, attn=self.attn, reduction=self.reduction, **kwargs)


class ResNet(_Classifier, tv_resnet.ResNet):
    """torchvision ResNet with explainable bottlenecks, optional attention and a choice of head.

    Args:
        layers: bottlenecks per stage (``(3, 4, 6, 3)`` for ResNet-50).
        num_classes: output classes.
        attn: attention block in every bottleneck (``se``, ``cbam``, ``eca``) or ``None``.
        head: ``pool`` (global average pool + ``fc``) or ``flatten`` (``fc`` over the flattened
            ``(2048, img_size/32, img_size/32)`` map).
        img_size: input side in pixels (sets the ``flatten`` head's width).
        reduction: reduction ratio of the attention blocks.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        *,
        attn: str | None = None,
        head: str = "pool",
        img_size: int = 224,
        reduction: int = 16,
    ) -> None:
        in_features = _head_in_features(512 * Bottleneck.expansion, head, img_size)
        super().__init__(_BlockFactory(attn, reduction), list(layers), num_classes=num_classes)  # type: ignore[arg-type]
        _no_inplace(self)
        self.attn_name = attn
        self.head_type = head
        if head == "flatten":
            del self.avgpool
            self.avgpool = None
        self.fc = nn.Linear(in_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone: ``(B, 3, H, W) -> (B, 2048, H/32, W/32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def get_classifier(self) -> nn.Linear:
        """The head, ``fc`` (torchvision's name)."""
        return self.fc


def zero_init_residual(model: nn.Module) -> int:
    """Start every bottleneck's residual branch at zero: its last BatchNorm's γ = 0 (Goyal et al. 2017).

    Each block then starts as the identity (plus the shortcut projection where shapes change).
    torchvision's ``ResNet(zero_init_residual=True)`` does the same but only recognises its own
    ``Bottleneck`` class, hence this function for medattn's. The attention gates of SE/CBAM (sigmoids
    near 0.5 at initialisation) scale the branch down too, so this is the control that separates
    an attention block's effect from that of a smaller residual branch at the start of training.

    Returns:
        The number of bottlenecks changed (0 for models without them).
    """
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    for block in blocks:
        nn.init.zeros_(block.bn3.weight)
    return len(blocks)


class DenseNet(_Classifier, tv_densenet.DenseNet):
    """torchvision DenseNet-BC with optional attention after every dense block and a choice of head.

    ``features`` keeps torchvision's names (``conv0, norm0, relu0, pool0, denseblock1..4,
    transition1..3, norm5``) and gains ``attn1..attn4`` (when ``attn`` is set) and ``relu5``
    (the final ReLU, a module here instead of torchvision's functional in-place call).

    ``block_config`` holds the dense layers per block (``(6, 12, 24, 16)`` for DenseNet-121); ``attn``
    follows each dense block; the other arguments are :class:`ResNet`'s (the ``flatten`` head's
    ``classifier`` reads the flattened ``(1024, s/32, s/32)`` map).
    """

    def __init__(
        self,
        block_config: tuple[int, int, int, int] = (6, 12, 24, 16),
        num_classes: int = 1000,
        *,
        attn: str | None = None,
        head: str = "pool",
        img_size: int = 224,
        reduction: int = 16,
    ) -> None:
        _head_in_features(1, head, img_size)  # validate the options before building anything
        super().__init__(growth_rate=32, block_config=block_config, num_init_features=64, num_classes=num_classes)
        _no_inplace(self)
        children = list(self.features.named_children())
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (name, module) in enumerate(children):
            layers[name] = module
            if attn and name.startswith("denseblock"):
                # The next module (transition norm or norm5) knows the block's output width.
                channels = children[i + 1][1]
                channels = channels.norm.num_features if isinstance(channels, nn.Sequential) else channels.num_features
                layers[f"attn{name.removeprefix('denseblock')}"] = create_attention(attn, channels, reduction)
        layers["relu5"] = nn.ReLU(inplace=False)
        self.features = nn.Sequential(layers)
        num_features = self.classifier.in_features
        self.attn_name = attn
        self.head_type = head
        self.avgpool = nn.AdaptiveAvgPool2d(1) if head == "pool" else None
        self.classifier = nn.Linear(_head_in_features(num_features, head, img_size), num_classes)
        nn.init.constant_(self.classifier.bias, 0)  # as torchvision's DenseNet init does

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone: ``(B, 3, H, W) -> (B, 1024, H/32, W/32)`` (after the final ReLU)."""
        return self.features(x)

    def get_classifier(self) -> nn.Linear:
        """The head, ``classifier`` (torchvision's name)."""
        return self.classifier


def resnet50(
    num_classes: int, *, attn: str | None = None, head: str = "pool", img_size: int = 224, reduction: int = 16
) -> ResNet:
    """ResNet-50 (He et al. 2016) with ``attn`` in every bottleneck (``resnet50(attn="cbam")``).

    Args:
        num_classes: output classes.
        attn: ``None``, ``se``, ``cbam`` or ``eca``.
        head: ``pool`` or ``flatten``.
        img_size: input side in pixels.
        reduction: reduction ratio of the attention blocks (16 as in SE/CBAM).

    Returns:
        A :class:`ResNet` mapping ``(B, 3, img_size, img_size) -> (B, num_classes)``.
    """
    return ResNet((3, 4, 6, 3), num_classes, attn=attn, head=head, img_size=img_size, reduction=reduction)


def densenet121(
    num_classes: int, *, attn: str | None = None, head: str = "pool", img_size: int = 224, reduction: int = 16
) -> DenseNet:
    """DenseNet-121 (Huang et al. 2017) with ``attn`` after each of its 4 dense blocks.

    The arguments are those of :func:`resnet50`; returns a :class:`DenseNet` mapping
    ``(B, 3, img_size, img_size) -> (B, num_classes)``.
    """
    return DenseNet((6, 12, 24, 16), num_classes, attn=attn, head=head, img_size=img_size, reduction=reduction)
