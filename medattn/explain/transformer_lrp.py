"""Transformer attribution for DeiT / ViT (Chefer, Gur & Wolf, CVPR 2021).

Implements "Transformer Interpretability Beyond Attention Visualization" (Chefer et al. 2021),
method ``transformer_attribution`` of the reference code, from the description in
``docs/transformer-lrp.md``: a gradient pass (``G_b = d y_t / d A_b`` for every block's
post-softmax attention), a relevance pass with the LRP rules of the reference (αβ rule with α = 1,
β = 0 and the bias ignored for every Linear, identity through LayerNorm / GELU / softmax, the
gradient×input rule for both attention products with the two halvings, the renormalised Add rule
and the Clone rule at every residual fork), and the unnormalised rollout
``C = (I + Ā_{L-1}) ⋯ (I + Ā_s)`` of ``Ā_b = mean_heads(max(0, G_b ⊙ R_A^(b)))``. The result is the
CLS row of ``C`` over the patch tokens, reshaped to the patch grid.

Why hand-written: no library implements this method for timm models (captum's LRP only visits
leaf modules and has no rule for attention, LayerNorm or GELU), and the reference code handles one
image per call and rewrites the model's modules. Here everything is computed functionally from the
parameters of a timm ``VisionTransformer`` (the model zoo's ``deit_tiny``): no hooks and no
attributes are put on the user's model, parameters are read detached, and a whole batch is
explained at once. Every sum the rules take (the Add rule's renormalisation) is taken over each
image's own tensors, so each image's map equals what that image alone gives.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medattn.errors import ConfigError
from medattn.explain.base import Explainer, is_vit, register

#: The stabiliser of the reference's ``safe_divide``.
EPS = 1e-9


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """The reference's stabilised division: ``a / (b + 1e-9)`` where ``b != 0``, else 0.

    Args:
        a: numerator, broadcastable with ``b``.
        b: denominator.

    Returns:
        Elementwise quotient, zero wherever ``b`` is exactly zero.
    """
    den = b + EPS
    # b == -1e-9 would give a zero denominator; the reference then adds eps once more.
    den = den + (den == 0).to(den.dtype) * EPS
    return a / den * (b != 0).to(b.dtype)


def _per_image_sum(t: Tensor) -> Tensor:
    """Sum over every axis but the batch axis, kept broadcastable: ``(B, ...) -> (B, 1, ..., 1)``."""
    return t.sum(dim=tuple(range(1, t.dim())), keepdim=True)


def linear_alpha1_beta0(x: Tensor, weight: Tensor, relevance: Tensor) -> Tensor:
    """αβ-LRP (α = 1, β = 0) through a Linear layer, bias ignored (Bach et al. 2015).

    ``Z_k = Σ_j (x⁺_j W⁺_kj + x⁻_j W⁻_kj)`` and
    ``R_j = x⁺_j Σ_k W⁺_kj s(R_k, Z_k) + x⁻_j Σ_k W⁻_kj s(R_k, Z_k)``.

    Args:
        x: layer input, ``(..., D_in)``.
        weight: ``(D_out, D_in)``.
        relevance: relevance of the layer output, ``(..., D_out)``.

    Returns:
        Relevance of the input, ``(..., D_in)``.
    """
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    z = F.linear(x_pos, w_pos) + F.linear(x_neg, w_neg)
    s = safe_divide(relevance, z)
    return x_pos * (s @ w_pos) + x_neg * (s @ w_neg)


def product_rule(m: Tensor, b: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient×input rule for a batched matrix product ``Z = M @ B``; each operand gets the full R.

    Args:
        m: ``(..., n, k)``.
        b: ``(..., k, p)``.
        relevance: relevance of ``Z``, ``(..., n, p)``.

    Returns:
        ``(R_M, R_B)`` with the shapes of ``m`` and ``b``.
    """
    s = safe_divide(relevance, m @ b)
    return m * (s @ b.transpose(-1, -2)), b * (m.transpose(-1, -2) @ s)


def add_rule(u: Tensor, w: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """The reference's renormalised Add rule for ``Z = u + w``, sums taken per image.

    Shares start as ``u ⊙ s(R, Z)`` and ``w ⊙ s(R, Z)``; each share is then rescaled so that its
    total is ``ΣR · |σ_share| / (|σ_u| + |σ_w|)`` (this can flip a share's sign).

    Args:
        u: first summand, ``(B, ...)``.
        w: second summand, same shape.
        relevance: relevance of the sum, same shape.

    Returns:
        ``(R_u, R_w)``, same shapes.
    """
    s = safe_divide(relevance, u + w)
    a, b = u * s, w * s
    sum_a, sum_b = _per_image_sum(a), _per_image_sum(b)
    total = _per_image_sum(relevance)
    denom = sum_a.abs() + sum_b.abs()
    a = a * safe_divide(total * safe_divide(sum_a.abs(), denom), sum_a)
    b = b * safe_divide(total * safe_divide(sum_b.abs(), denom), sum_b)
    return a, b


def clone_rule(x: Tensor, r1: Tensor, r2: Tensor) -> Tensor:
    """Relevance of a tensor used twice (the residual fork): ``x ⊙ (s(R₁, x) + s(R₂, x))``."""
    return x * (safe_divide(r1, x) + safe_divide(r2, x))


@dataclass
class _BlockCache:
    """Activations of one block kept for the relevance pass (all fp32/fp64, batched)."""

    x_in: Tensor  # (B, N, D)
    h: Tensor  # LN1(x_in), (B, N, D)
    q: Tensor  # (B, H, N, d)
    k: Tensor
    v: Tensor
    attn: Tensor  # post-softmax attention, (B, H, N, N)
    merged: Tensor  # heads merged, input of proj, (B, N, D)
    attn_out: Tensor  # proj output, (B, N, D)
    x_mid: Tensor
    g: Tensor  # LN2(x_mid)
    act: Tensor  # GELU(fc1(g)), input of fc2
    mlp_out: Tensor


def _check_supported(model: nn.Module) -> None:
    """Raise :class:`ConfigError` if ``model`` departs from the DeiT layout this method covers."""
    if not is_vit(model):
        raise ConfigError(
            f"transformer-lrp explains timm VisionTransformer models (deit_tiny), not {type(model).__name__}; "
            "use deeplift or lrp for the CNNs."
        )
    problems = []
    if getattr(model, "cls_token", None) is None or getattr(model, "global_pool", "token") != "token":
        problems.append("it needs a class token with token pooling")
    if getattr(model, "reg_token", None) is not None or getattr(model, "num_prefix_tokens", 1) != 1:
        problems.append("register/distillation tokens are not supported")
    if getattr(model, "no_embed_class", False) or getattr(model, "dynamic_img_size", False):
        problems.append("the position embedding must cover the class token and a fixed grid")
    if not isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity):
        problems.append("fc_norm must be Identity")
    for i, blk in enumerate(model.blocks):
        attn = blk.attn
        extras = [
            name
            for name in ("q_norm", "k_norm", "norm")
            if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity)
        ]
        if getattr(attn, "gate", None) is not None:
            extras.append("gate")
        extras += [n for n in ("ls1", "ls2") if not isinstance(getattr(blk, n, nn.Identity()), nn.Identity)]
        if attn.qkv.out_features != 3 * model.embed_dim:
            extras.append("an attention width different from the embedding width")
        if not isinstance(blk.mlp.act, nn.GELU):
            extras.append(f"mlp.act={type(blk.mlp.act).__name__}")
        if extras:
            problems.append(f"block {i} has {', '.join(extras)}")
    if problems:
        raise ConfigError(f"transformer-lrp supports the plain DeiT layout only: {'; '.join(problems)}.")


def _forward(model: nn.Module, images: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, list[_BlockCache]]:
    """Functional DeiT forward from ``model``'s detached parameters, keeping what the rules need.

    Returns:
        ``(logits (B, C), x_last (B, N, D), cls (B, D) = LN_final(x_last)[:, 0], caches)``.
    """

    def p(t: Tensor) -> Tensor:
        return t.detach().to(dtype)

    def ln(mod: nn.LayerNorm, x: Tensor) -> Tensor:
        return F.layer_norm(x, mod.normalized_shape, p(mod.weight), p(mod.bias), mod.eps)

    def lin(mod: nn.Linear, x: Tensor) -> Tensor:
        return F.linear(x, p(mod.weight), None if mod.bias is None else p(mod.bias))

    pe = model.patch_embed
    proj = pe.proj
    tokens = F.conv2d(
        images.to(dtype),
        p(proj.weight),
        None if proj.bias is None else p(proj.bias),
        stride=proj.stride,
        padding=proj.padding,
    )
    tokens = tokens.flatten(2).transpose(1, 2)
    if not isinstance(pe.norm, nn.Identity):
        tokens = F.layer_norm(tokens, pe.norm.normalized_shape, p(pe.norm.weight), p(pe.norm.bias), pe.norm.eps)
    bsz = tokens.shape[0]
    x = torch.cat([p(model.cls_token).expand(bsz, -1, -1), tokens], dim=1)
    if x.shape[1] != model.pos_embed.shape[1]:
        raise ConfigError(
            f"images of size {tuple(images.shape[-2:])} give {x.shape[1]} tokens but the model's position "
            f"embedding has {model.pos_embed.shape[1]}; resize the images to the model's img_size."
        )
    x = x + p(model.pos_embed)
    # The embedding is the graph's leaf, so every A_b below is a non-leaf node and d y / d A_b is
    # the total derivative, including the paths through later blocks.
    x = x.detach().requires_grad_(True)

    caches = []
    for blk in model.blocks:
        attn_mod = blk.attn
        heads = attn_mod.num_heads
        b_, n_, d_ = x.shape
        h = ln(blk.norm1, x)
        qkv = lin(attn_mod.qkv, h).reshape(b_, n_, 3, heads, d_ // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = torch.softmax((q @ k.transpose(-1, -2)) * attn_mod.scale, dim=-1)
        merged = (a @ v).transpose(1, 2).reshape(b_, n_, d_)
        attn_out = lin(attn_mod.proj, merged)
        x_mid = x + attn_out
        g = ln(blk.norm2, x_mid)
        act = F.gelu(lin(blk.mlp.fc1, g), approximate=blk.mlp.act.approximate)
        mlp_out = lin(blk.mlp.fc2, act)
        caches.append(_BlockCache(x, h, q, k, v, a, merged, attn_out, x_mid, g, act, mlp_out))
        x = x_mid + mlp_out
    cls = ln(model.norm, x)[:, 0]
    logits = lin(model.head, cls)
    return logits, x, cls, caches


def _block_relevance(blk: nn.Module, c: _BlockCache, r: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """LRP through one transformer block, output relevance ``r`` ``(B, N, D)`` → input relevance.

    Returns:
        The relevance of the block's input tokens ``(B, N, D)`` and of its attention probabilities
        ``(B, heads, N, N)`` (what the rollout weights by the gradient).
    """
    w = {
        name: mod.weight.detach().to(dtype)
        for name, mod in (("fc1", blk.mlp.fc1), ("fc2", blk.mlp.fc2), ("qkv", blk.attn.qkv), ("proj", blk.attn.proj))
    }
    r_res, r_mlp = add_rule(c.x_mid, c.mlp_out, r)
    r_mlp = linear_alpha1_beta0(c.act, w["fc2"], r_mlp)  # then GELU: identity
    r_mlp = linear_alpha1_beta0(c.g, w["fc1"], r_mlp)  # then LN2: identity
    r = clone_rule(c.x_mid, r_res, r_mlp)
    r_res, r_att = add_rule(c.x_in, c.attn_out, r)
    r_att = linear_alpha1_beta0(c.merged, w["proj"], r_att)
    bsz, n_tok, dim = r_att.shape
    heads = c.q.shape[1]
    r_o = r_att.reshape(bsz, n_tok, heads, dim // heads).transpose(1, 2)
    r_a, r_v = product_rule(c.attn, c.v, r_o)
    r_a, r_v = r_a / 2, r_v / 2
    # Softmax is identity; the product rule acts on the unscaled q kᵀ.
    r_q, r_k = product_rule(c.q, c.k.transpose(-1, -2), r_a)
    r_k = r_k.transpose(-1, -2)
    r_q, r_k = r_q / 2, r_k / 2
    r_qkv = torch.stack([r_q, r_k, r_v], dim=0).permute(1, 3, 0, 2, 4).reshape(bsz, n_tok, 3 * dim)
    r_att = linear_alpha1_beta0(c.h, w["qkv"], r_qkv)  # then LN1: identity
    return clone_rule(c.x_in, r_res, r_att), r_a


def transformer_attribution(
    model: nn.Module,
    images: Tensor,
    target: Tensor,
    *,
    start_layer: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Chefer et al. (2021) transformer attribution maps for a batch, raw on the patch grid.

    Args:
        model: a timm ``VisionTransformer`` (DeiT layout); read only, never modified.
        images: ``(B, 3, H, W)`` normalised images of the model's ``img_size``.
        target: ``(B,)`` long class indices to explain (the label or the prediction).
        start_layer: first block of the rollout (0 = all blocks, as in the notebooks; the paper's
            perturbation and segmentation scripts use 1).
        dtype: computation dtype (float32 by default; float64 for checks).

    Returns:
        ``(B, g, g)`` non-negative maps in ``dtype`` (``g = H / patch``), row-major patch order,
        without upsampling or normalisation.
    """
    _check_supported(model)
    depth = len(model.blocks)
    if not 0 <= start_layer < depth:
        raise ConfigError(
            f"start_layer must be between 0 and {depth - 1} for a {depth}-block model, got {start_layer}."
        )
    with torch.enable_grad():
        logits, x_last, cls, caches = _forward(model, images, dtype)
        if target.shape != (logits.shape[0],):
            raise ConfigError(f"target must have shape ({logits.shape[0]},), got {tuple(target.shape)}.")
        target = target.to(logits.device)
        if bool(((target < 0) | (target >= logits.shape[1])).any()):
            raise ConfigError(f"target class indices must lie in [0, {logits.shape[1] - 1}], got {target.tolist()}.")
        # The raw logit of the target class, not its softmax (the reference's choice).
        chosen = logits.gather(1, target[:, None]).sum()
        grads = torch.autograd.grad(chosen, [c.attn for c in caches])

    with torch.no_grad():
        relevance = F.one_hot(target, logits.shape[1]).to(dtype)
        r_cls = linear_alpha1_beta0(cls.detach(), model.head.weight.detach().to(dtype), relevance)
        r = torch.zeros_like(x_last)
        # CLS pooling (index_select of token 0); LN_final is identity for relevance.
        r[:, 0] = cls.detach() * safe_divide(r_cls, cls.detach())
        attn_relevance: list[Tensor] = [torch.empty(0)] * depth
        for b in range(depth - 1, -1, -1):
            c = _BlockCache(**{f.name: getattr(caches[b], f.name).detach() for f in fields(_BlockCache)})
            r, attn_relevance[b] = _block_relevance(model.blocks[b], c, r, dtype)

        n_tok = x_last.shape[1]
        eye = torch.eye(n_tok, dtype=dtype, device=x_last.device)
        rollout = None
        for b in range(start_layer, depth):
            a_bar = (grads[b].detach() * attn_relevance[b]).clamp(min=0).mean(dim=1) + eye
            rollout = a_bar if rollout is None else a_bar @ rollout
        patch_row = rollout[:, 0, 1:]
        grid = model.patch_embed.grid_size
        return patch_row.reshape(patch_row.shape[0], grid[0], grid[1])


def transformer_logits(model: nn.Module, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Logits of the functional forward used by :func:`transformer_attribution` (for checks).

    Args:
        model: a timm ``VisionTransformer``.
        images: ``(B, 3, H, W)``.
        dtype: computation dtype.

    Returns:
        ``(B, num_classes)`` logits, equal to ``model(images)`` in eval mode.
    """
    _check_supported(model)
    with torch.enable_grad():
        logits = _forward(model, images, dtype)[0]
    return logits.detach()


@register
class TransformerLRPExplainer(Explainer):
    """Chefer et al. (2021) transformer attribution, raw ``(B, g, g)`` patch-grid maps."""

    name = "transformer-lrp"
    applies_to_text = "DeiT (timm VisionTransformer) models"

    def applies_to(self, model: nn.Module) -> bool:
        return is_vit(model)

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, *, start_layer: int = 0) -> Tensor:
        """Transformer attribution maps (see :func:`transformer_attribution`).

        Args:
            model: a timm ``VisionTransformer`` (read only).
            x: ``(B, 3, H, W)`` float32 images of the model's ``img_size``.
            target: ``(B,)`` class indices.
            start_layer: first block in the rollout (0: all blocks; the paper's scripts use 1).

        Returns:
            ``(B, g, g)`` raw non-negative maps.
        """
        return transformer_attribution(model, x, target, start_layer=start_layer)
