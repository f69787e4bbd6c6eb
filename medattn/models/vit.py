"""DeiT-Tiny/16 (Touvron et al., "Training data-efficient image transformers & distillation
through attention", ICML 2021) as timm builds it, with its attention probabilities on request.

The model *is* a ``timm.models.vision_transformer.VisionTransformer`` with the layout of timm's
``deit_tiny_patch16_224`` (patch 16, width 192, 3 heads, MLP ratio 4, qkv bias), ``depth`` set by
``nr_layers``. Parameter names are timm's (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.i.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.act / mlp.fc2``, ``norm``,
``head``), so timm and official DeiT state_dicts load with ``strict=True``; the transformer
attribution of Chefer, Gur and Wolf (CVPR 2021) is computed from those names.

timm runs attention through fused ``scaled_dot_product_attention`` by default, which never
materialises the attention matrix. :meth:`DeiT.record_attention` switches every block to timm's
own non-fused path for the duration of a ``with`` block and collects the probabilities; on exit
the hooks are removed and the fused setting restored, so the model is left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from medattn.errors import ConfigError

PATCH_SIZE = 16
DEIT_TINY = dict(patch_size=PATCH_SIZE, embed_dim=192, num_heads=3, mlp_ratio=4.0, qkv_bias=True)
"""timm's ``deit_tiny_patch16_224`` arguments (besides depth, img_size and num_classes)."""


class DeiT(VisionTransformer):
    """timm ``VisionTransformer`` in the ``deit_tiny_patch16_224`` layout with attention capture.

    Args:
        num_classes: output classes.
        nr_layers: number of transformer blocks (``depth``; 12 in DeiT-Tiny).
        img_size: input side in pixels, a multiple of ``patch_size`` (the token grid is
            ``img_size / patch_size``).
        patch_size: patch side; 16 as in DeiT (and its ImageNet weights). The demo uses 8 at 64 px
            (a demo-only deviation: 16-px patches give a 4 × 4 grid, too coarse to learn the lesion
            from scratch).
    """

    def __init__(
        self, num_classes: int, nr_layers: int = 12, img_size: int = 224, patch_size: int = PATCH_SIZE
    ) -> None:
        if isinstance(nr_layers, bool) or not isinstance(nr_layers, int) or nr_layers < 1:
            raise ConfigError(f"nr_layers must be a positive integer, got {nr_layers!r}.")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ConfigError(f"patch_size must be a positive integer, got {patch_size!r}.")
        if (
            isinstance(img_size, bool)
            or not isinstance(img_size, int)
            or img_size < patch_size
            or img_size % patch_size
        ):
            raise ConfigError(
                f"deit_tiny needs an img_size that is a multiple of its patch size {patch_size} "
                f"(e.g. {patch_size * 4} or {patch_size * 14}), got {img_size!r}."
            )
        layout = {**DEIT_TINY, "patch_size": patch_size}
        super().__init__(img_size=img_size, depth=nr_layers, num_classes=num_classes, **layout)

    @contextmanager
    def record_attention(self) -> Iterator[list[Tensor]]:
        """Collect each block's attention probabilities during the forwards run inside the block.

        Inside the ``with`` block attention runs non-fused; every forward appends, per
        transformer block in order, the softmax output ``(B, heads, N, N)`` with
        ``N = 1 + (img_size / patch_size) ** 2``. The tensors stay in the autograd graph, so
        ``retain_grad()`` on them gives the attention gradients. Hooks are removed and the fused
        setting restored on exit, even on error.

        Yields:
            The list that fills with one ``(B, 3, N, N)`` tensor per block per forward.

        Example:
            >>> with model.record_attention() as maps:
            ...     logits = model(x)
        """
        maps: list[Tensor] = []
        saved = [blk.attn.fused_attn for blk in self.blocks]
        handles = []

        def keep(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
            maps.append(output)

        try:
            for blk in self.blocks:
                blk.attn.fused_attn = False
                # timm's non-fused path calls attn_drop on the softmax probabilities (identity in
                # eval mode); its output is exactly the matrix that multiplies v.
                handles.append(blk.attn.attn_drop.register_forward_hook(keep))
            yield maps
        finally:
            for handle in handles:
                handle.remove()
            for blk, fused in zip(self.blocks, saved, strict=True):
                blk.attn.fused_attn = fused

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the attention probabilities of every block.

        Args:
            x: images ``(B, 3, img_size, img_size)``.

        Returns:
            ``(logits (B, num_classes), [attention (B, 3, N, N) for each block])``.
        """
        with self.record_attention() as maps:
            logits = self(x)
        if len(maps) != len(self.blocks):
            # timm changed its attention code path; fail loudly instead of returning wrong maps.
            raise RuntimeError(f"expected {len(self.blocks)} attention maps, captured {len(maps)}")
        return logits, list(maps)


def deit_tiny(num_classes: int, *, nr_layers: int = 12, img_size: int = 224, patch_size: int = PATCH_SIZE) -> DeiT:
    """DeiT-Tiny/16 with ``nr_layers`` blocks.

    Args:
        num_classes: output classes.
        nr_layers: transformer blocks (at most 12 with ImageNet weights, which have 12).
        img_size: input side, a multiple of ``patch_size``.
        patch_size: patch side (16 in DeiT-Tiny/16).

    Returns:
        A :class:`DeiT` mapping ``(B, 3, img_size, img_size) -> (B, num_classes)``.
    """
    return DeiT(num_classes, nr_layers=nr_layers, img_size=img_size, patch_size=patch_size)
