"""Tiny leaf modules that make the arithmetic of the CNNs visible to explanation methods.

captum's LRP visits leaf modules only and looks rules up by exact module type; an addition or a
multiplication written inline in ``forward`` is invisible to it. Residual additions, attention
gating and the channel pooling of CBAM are therefore modules of their own, each called exactly
once per forward, so that an explainer can attach one rule per type (for instance: ``Add`` with
the epsilon rule, ``GateMul`` treating the gate as a constant so relevance flows only through
``x``). Keep these class names stable: the explainers refer to them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Add(nn.Module):
    """Element-wise sum of two tensors of the same shape (residual connection, CBAM's MLP sum).

    Example:
        >>> Add()(torch.ones(2, 3), torch.ones(2, 3)).sum().item()
        12.0
    """

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Return ``a + b``.

        Args:
            a: any shape, e.g. ``(B, C, H, W)``.
            b: the same shape as ``a`` (or broadcastable to it).

        Returns:
            ``a + b``, a new tensor (never in place, so captum's hooks see both inputs intact).
        """
        return a + b


class GateMul(nn.Module):
    """Apply an attention gate: ``x * gate``.

    The gate is the output of a ``Sigmoid`` module in ``[0, 1]``; broadcasting covers channel gates
    ``(B, C, 1, 1)`` and spatial gates ``(B, 1, H, W)``. For LRP the natural rule treats ``gate`` as
    a constant (relevance flows only through ``x``).
    """

    def forward(self, x: Tensor, gate: Tensor) -> Tensor:
        """Return ``x * gate``.

        Args:
            x: features ``(B, C, H, W)``.
            gate: ``(B, C, 1, 1)``, ``(B, 1, H, W)`` or ``(B, C, H, W)``.

        Returns:
            The gated features ``(B, C, H, W)``.
        """
        return x * gate


class ChannelPool(nn.Module):
    """Mean and max over channels, stacked: the input of CBAM's spatial gate (Woo et al. 2018).

    A module rather than inline ``x.mean``/``x.amax`` so that the max over channels (a
    nonlinearity) is a leaf an explainer can give a rule to.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Pool over channels.

        Args:
            x: features ``(B, C, H, W)``.

        Returns:
            ``(B, 2, H, W)``: channel 0 the mean, channel 1 the max over ``C``.
        """
        return torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
