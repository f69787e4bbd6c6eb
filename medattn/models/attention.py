"""Channel and spatial attention blocks, written to be explainable, and their registry.

- **SE**: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018 / TPAMI 2020.
- **CBAM**: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.
- **ECA**: Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep
  Convolutional Neural Networks", CVPR 2020 (offered for new experiments; not in the paper's grid).

Why not timm's blocks: timm's CBAM passes the average and the max descriptor through the same
``fc1/act/fc2`` twice, so its ReLU runs twice per forward and captum's DeepLift raises. Here
every nonlinearity is its own module called exactly once per forward, CBAM's shared MLP runs
once on both descriptors stacked along a *non-batch* axis (see :class:`ChannelGate`), and all
arithmetic that joins two tensors is a leaf module from :mod:`medattn.models.layers` (``Add``,
``GateMul``, ``ChannelPool``). No block joins two different tensors along dim 0.

Every block maps ``(B, C, H, W) -> (B, C, H, W)`` and is built as ``Block(channels, reduction)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medattn.models.layers import Add, ChannelPool, GateMul
from medattn.registry import Registry

ATTENTION: Registry[type[nn.Module]] = Registry.for_kind("attention block")
"""Attention blocks by name (``se``, ``cbam``, ``eca``); values are classes ``Block(channels, reduction)``."""


def _hidden(channels: int, reduction: int) -> int:
    # The papers use C / r; at least one unit so tiny test networks still build.
    return max(channels // reduction, 1)


class _Gate(nn.Module):
    """What every gate here computes: ``x * sigmoid(score(x))``, the score broadcast over ``x``.

    A subclass builds the layers of :meth:`score`, then calls :meth:`_add_gate`, which registers
    the ``gate`` (sigmoid) and ``mul`` (:class:`~medattn.models.layers.GateMul`) leaf modules after
    them, in the order the forward calls them. Neither holds a tensor, so the state_dict keys are
    the score layers' alone.
    """

    def _add_mlp(self, channels: int, reduction: int) -> None:
        # the excitation MLP of SE and of CBAM's channel gate: 1x1 convs C -> C/r -> C, one ReLU
        hidden = _hidden(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=False)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def _add_gate(self) -> None:
        self.gate = nn.Sigmoid()
        self.mul = GateMul()

    def score(self, x: Tensor) -> Tensor:
        """The gate's logits: ``(B, C, 1, 1)`` for a channel gate, ``(B, 1, H, W)`` for a spatial one."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Gate ``x`` by ``sigmoid(score(x))``.

        Args:
            x: features ``(B, C, H, W)``.

        Returns:
            ``(B, C, H, W)``.
        """
        return self.mul(x, self.gate(self.score(x)))


@ATTENTION.register("se", "squeeze_excitation")
class SEBlock(_Gate):
    """Squeeze-and-Excitation (Hu et al. 2018): re-weight channels by a gate from their means.

    ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with 1x1 convolutions as the two FC layers.

    Args:
        channels: number of input channels ``C``.
        reduction: bottleneck ratio ``r`` of the excitation MLP (hidden units ``C // r``).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._add_mlp(channels, reduction)
        self._add_gate()

    def score(self, x: Tensor) -> Tensor:
        """Channel logits ``(B, C, 1, 1)`` from the channel means."""
        return self.fc2(self.act(self.fc1(self.pool(x))))


class ChannelGate(_Gate):
    """CBAM's channel attention: one shared MLP over the average and the max descriptor.

    The two descriptors are stacked along the last spatial axis, ``(B, C, 1, 2)``, and pass through
    the MLP (1x1 convolutions) once, so each module runs once per forward; the two columns are then
    split and summed by an ``Add``. Never stack them along dim 0: captum's DeepLift runs inputs and
    baselines through the network as one batch and splits every nonlinearity's input into halves
    along dim 0, so batch-axis stacking would pair the average with the max descriptor instead of
    the input with its baseline (wrong maps, identical logits).

    Args:
        channels: number of input channels ``C``.
        reduction: bottleneck ratio ``r`` of the shared MLP.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self._add_mlp(channels, reduction)
        self.add = Add()
        self._add_gate()

    def score(self, x: Tensor) -> Tensor:
        """Channel logits ``(B, C, 1, 1)``: the MLP of the average plus the MLP of the max descriptor."""
        desc = torch.cat([self.avg_pool(x), self.max_pool(x)], dim=3)  # (B, C, 1, 2): avg | max
        out = self.fc2(self.act(self.fc1(desc)))  # (B, C, 1, 2); 1x1 convs act per column
        avg_out, max_out = out[..., :1], out[..., 1:]  # (B, C, 1, 1) each
        return self.add(avg_out, max_out)


class SpatialGate(_Gate):
    """CBAM's spatial attention: a 7x7 conv (+ BN) over the channel mean and max, then a sigmoid.

    Args:
        kernel_size: size of the convolution over the ``(B, 2, H, W)`` pooled map.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.pool = ChannelPool()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self._add_gate()

    def score(self, x: Tensor) -> Tensor:
        """Position logits ``(B, 1, H, W)`` from the channel mean and max."""
        return self.bn(self.conv(self.pool(x)))


@ATTENTION.register("cbam")
class CBAMBlock(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel gate, then spatial gate.

    Args:
        channels: number of input channels ``C``.
        reduction: bottleneck ratio ``r`` of the channel MLP.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        """Apply channel then spatial attention.

        Args:
            x: features ``(B, C, H, W)``.

        Returns:
            ``(B, C, H, W)``.
        """
        return self.spatial(self.channel(x))


@ATTENTION.register("eca")
class ECABlock(_Gate):
    """Efficient Channel Attention (Wang et al. 2020): a 1-D conv across pooled channels.

    Args:
        channels: number of input channels ``C`` (sets the adaptive kernel size).
        reduction: unused (ECA has no bottleneck); accepted so all blocks share one signature.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        del reduction  # ECA avoids dimensionality reduction by design.
        t = int(abs((math.log2(channels) + 1) / 2))
        k = t if t % 2 else t + 1
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)
        self._add_gate()

    def score(self, x: Tensor) -> Tensor:
        """Channel logits ``(B, C, 1, 1)``: a 1-D conv across the channel means."""
        y = self.pool(x).flatten(2).transpose(1, 2)  # (B, 1, C)
        return self.conv(y).transpose(1, 2).unsqueeze(-1)  # (B, C, 1, 1)


def create_attention(name: str, channels: int, reduction: int = 16) -> nn.Module:
    """Build the attention block registered as ``name``.

    Args:
        name: ``se``, ``cbam`` or ``eca`` (case-insensitive).
        channels: number of channels ``C`` of the features it gates.
        reduction: bottleneck ratio of the channel MLP (16 in the paper).

    Returns:
        A module mapping ``(B, C, H, W) -> (B, C, H, W)``.

    Raises:
        ConfigError: unknown block name (with a suggestion).
    """
    return ATTENTION.get(name)(channels, reduction)


def is_attention_module(module: nn.Module) -> bool:
    """Whether ``module`` is one of the registered attention blocks."""
    return isinstance(module, tuple(ATTENTION.get(n) for n in ATTENTION.names()))
