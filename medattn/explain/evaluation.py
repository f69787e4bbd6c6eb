"""Quantitative scores for attribution maps, and the same scores for random maps.

- **Deletion / insertion AUC** (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018; after Samek et al., "Evaluating the Visualization
  of What a Deep Neural Network Has Learned", IEEE TNNLS 2017). Protocol used here:

  1. The map is reduced to one score per pixel: summed over channels for ``(B, C, H, W)`` maps,
     bilinearly upsampled (``align_corners=False``) for patch-grid maps such as transformer-lrp's
     ``(B, g, g)``.
  2. Pixels are ranked by decreasing score (signed: most positive first; ties in row-major order).
  3. In ``steps`` equal steps (default 16) the top ``round(i / steps · H · W)`` pixels, all channels,
     are *deleted* (set to the baseline in the original image) or *inserted* (copied from the image
     into the baseline). The baseline is ``"zeros"`` by default, which for ImageNet-normalised
     inputs is the dataset-mean image; ``"blur"`` uses a Gaussian blur of the image (kernel 11,
     σ = 5 px, as in RISE), or pass a tensor.
  4. At each of the ``steps + 1`` points the softmax probability of the target class is recorded
     (``output="logit"`` records the logit instead), and the AUC is the trapezoid rule over the
     fraction axis ``0, 1/steps, …, 1``. Lower deletion AUC and higher insertion AUC are better.

- **Pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", IJCV 2018):
  a hit when the map's maximum (first one in row-major order) lies inside the ground-truth mask
  dilated by ``tolerance`` pixels (a square neighbourhood; default 0 = strictly inside).
- **Relevance mass inside the mask** (Arras, Osman & Samek, "CLEVR-XAI", Information Fusion 2022):
  positive relevance inside the mask divided by all positive relevance.

All functions are pure (tensors in, tensors out; the model is only evaluated, in eval mode with
its mode restored) and work on whole batches. :func:`random_baseline_scores` computes the same
scores for i.i.d. uniform random maps drawn from a generator passed in, so every score can be
reported next to what chance gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medattn.errors import ConfigError
from medattn.explain.base import explaining

#: Gaussian blur of the ``"blur"`` baseline (kernel size, sigma in pixels), as in RISE.
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0


def pixel_scores(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """One score per pixel: channel sum, or bilinear upsampling of a coarser map.

    Args:
        maps: ``(B, C, h, w)`` or ``(B, h, w)``.
        size: target ``(H, W)``.

    Returns:
        ``(B, H, W)`` float32.
    """
    maps = maps.detach().float()
    if maps.dim() == 4:
        maps = maps.sum(dim=1)
    if maps.dim() != 3:
        raise ConfigError(f"maps must be (B, C, H, W) or (B, h, w), got shape {tuple(maps.shape)}.")
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return maps


def _masks(masks: Tensor) -> Tensor:
    """``(B, H, W)`` or ``(B, 1, H, W)`` masks as a boolean ``(B, H, W)``."""
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ConfigError(f"masks must be (B, H, W) or (B, 1, H, W), got shape {tuple(masks.shape)}.")
    return masks > 0


@dataclass(frozen=True)
class DeletionInsertion:
    """Deletion and insertion curves and their areas for a batch.

    Attributes:
        fractions: ``(steps + 1,)`` fraction of pixels deleted / inserted at each point.
        deletion_curve: ``(B, steps + 1)`` target probability (or logit) while deleting.
        insertion_curve: ``(B, steps + 1)`` target probability (or logit) while inserting.
        deletion_auc: ``(B,)`` trapezoid area under ``deletion_curve`` (lower is better).
        insertion_auc: ``(B,)`` trapezoid area under ``insertion_curve`` (higher is better).
    """

    fractions: Tensor
    deletion_curve: Tensor
    insertion_curve: Tensor
    deletion_auc: Tensor
    insertion_auc: Tensor


def _baseline_image(images: Tensor, baseline: object) -> Tensor:
    if isinstance(baseline, Tensor):
        return baseline.to(images).expand_as(images)
    if baseline == "zeros":
        return torch.zeros_like(images)
    if baseline == "blur":
        from torchvision.transforms.functional import gaussian_blur

        return gaussian_blur(images, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    raise ConfigError(f"baseline must be 'zeros', 'blur' or a tensor, got {baseline!r}.")


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Tensor,
    *,
    steps: int = 16,
    baseline: object = "zeros",
    output: str = "probability",
) -> DeletionInsertion:
    """Deletion and insertion curves/AUCs of a batch of maps (protocol in the module docstring).

    Costs ``steps + 1`` forward passes of a ``2B`` batch (deletion and insertion together).

    Args:
        model: the classifier the maps explain (evaluated in eval mode, left as found).
        images: ``(B, 3, H, W)`` normalised images.
        maps: ``(B, C, H, W)`` or ``(B, h, w)`` attribution maps.
        target: ``(B,)`` class indices whose probability is tracked.
        steps: number of deletion/insertion steps.
        baseline: ``"zeros"``, ``"blur"`` or a tensor broadcastable to ``images``.
        output: ``"probability"`` (softmax of the target class) or ``"logit"``.

    Returns:
        A :class:`DeletionInsertion`.
    """
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}.")
    if output not in ("probability", "logit"):
        raise ConfigError(f"output must be 'probability' or 'logit', got {output!r}.")
    bsz, _, height, width = images.shape
    images = images.detach().float()
    scores = pixel_scores(maps, (height, width)).to(images.device).reshape(bsz, -1)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    # rank[b, p] = position of pixel p in image b's ordering.
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(height * width, device=images.device).expand(bsz, -1))
    base = _baseline_image(images, baseline)
    target = torch.as_tensor(target, device=images.device).long()
    curves = []
    with explaining(model, images.device.type), torch.no_grad():
        for i in range(steps + 1):
            k = round(i * height * width / steps)
            chosen = (rank < k).reshape(bsz, 1, height, width)
            deleted = torch.where(chosen, base, images)
            inserted = torch.where(chosen, images, base)
            logits = model(torch.cat([deleted, inserted])).float()
            values = logits.softmax(dim=1) if output == "probability" else logits
            curves.append(values.gather(1, torch.cat([target, target])[:, None])[:, 0])
    curve = torch.stack(curves, dim=1).cpu()
    fractions = torch.linspace(0.0, 1.0, steps + 1)
    deletion, insertion = curve[:bsz], curve[bsz:]
    return DeletionInsertion(
        fractions=fractions,
        deletion_curve=deletion,
        insertion_curve=insertion,
        deletion_auc=torch.trapezoid(deletion, fractions, dim=1),
        insertion_auc=torch.trapezoid(insertion, fractions, dim=1),
    )


def pointing_game(maps: Tensor, masks: Tensor, *, tolerance: int = 0) -> Tensor:
    """Pointing game hits: is the map's maximum inside the (dilated) ground-truth mask?

    Args:
        maps: ``(B, C, H, W)`` or ``(B, h, w)`` (upsampled to the mask size).
        masks: ``(B, H, W)`` or ``(B, 1, H, W)``, nonzero = inside.
        tolerance: pixels of slack around the mask (square neighbourhood).

    Returns:
        ``(B,)`` float32: 1.0 hit, 0.0 miss, NaN for an empty mask (nothing to point at).
    """
    mask = _masks(masks)
    bsz, height, width = mask.shape
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0 pixels, got {tolerance}.")
    if tolerance:
        size = 2 * tolerance + 1
        mask = F.max_pool2d(mask[:, None].float(), size, stride=1, padding=tolerance)[:, 0] > 0
    scores = pixel_scores(maps, (height, width)).to(mask.device).reshape(bsz, -1)
    top = scores.argmax(dim=1)
    hits = mask.reshape(bsz, -1).gather(1, top[:, None])[:, 0].float()
    return torch.where(_masks(masks).reshape(bsz, -1).any(dim=1), hits, torch.nan).cpu()


def mask_relevance_mass(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of the positive relevance that falls inside the ground-truth mask.

    Args:
        maps: ``(B, C, H, W)`` or ``(B, h, w)`` (upsampled to the mask size).
        masks: ``(B, H, W)`` or ``(B, 1, H, W)``, nonzero = inside.

    Returns:
        ``(B,)`` float32 in ``[0, 1]``; NaN where a map has no positive relevance.
    """
    mask = _masks(masks)
    bsz, height, width = mask.shape
    positive = pixel_scores(maps, (height, width)).to(mask.device).clamp(min=0)
    total = positive.sum(dim=(1, 2))
    inside = (positive * mask).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), torch.nan).cpu()


def random_baseline_scores(
    *,
    generator: torch.Generator,
    masks: Tensor | None = None,
    model: nn.Module | None = None,
    images: Tensor | None = None,
    target: Tensor | None = None,
    map_shape: tuple[int, ...] | None = None,
    n_draws: int = 1,
    steps: int = 16,
    baseline: object = "zeros",
    tolerance: int = 0,
) -> dict[str, Tensor]:
    """The scores of i.i.d. uniform random maps, averaged over ``n_draws`` draws.

    Pass ``masks`` for the pointing game and the relevance mass, and ``model``, ``images`` and
    ``target`` for deletion/insertion; both groups can be given at once.

    Args:
        generator: the random source (seed it for reproducible baselines).
        masks: ``(B, H, W)`` or ``(B, 1, H, W)`` ground-truth masks.
        model: the classifier, for deletion/insertion.
        images: ``(B, 3, H, W)`` images, for deletion/insertion.
        target: ``(B,)`` class indices, for deletion/insertion.
        map_shape: shape of each random map batch, e.g. ``(B, g, g)`` to mimic patch-grid maps;
            default one value per pixel ``(B, H, W)``.
        n_draws: random maps per image to average over.
        steps: deletion/insertion steps.
        baseline: deletion/insertion baseline (see :func:`deletion_insertion`).
        tolerance: pointing-game tolerance in pixels.

    Returns:
        ``{"pointing_game", "relevance_mass"}`` and/or ``{"deletion_auc", "insertion_auc"}``,
        each ``(B,)`` float32 (NaN-aware means over the draws).
    """
    if masks is None and (model is None or images is None or target is None):
        raise ConfigError("random_baseline_scores needs masks, or model, images and target (or both).")
    if n_draws < 1:
        raise ConfigError(f"n_draws must be at least 1, got {n_draws}.")
    if map_shape is None:
        ref = _masks(masks) if masks is not None else images[:, 0]
        map_shape = tuple(ref.shape)
    draws: dict[str, list[Tensor]] = {}
    for _ in range(n_draws):
        random_map = torch.rand(map_shape, generator=generator)
        if masks is not None:
            draws.setdefault("pointing_game", []).append(pointing_game(random_map, masks, tolerance=tolerance))
            draws.setdefault("relevance_mass", []).append(mask_relevance_mass(random_map, masks))
        if model is not None and images is not None and target is not None:
            result = deletion_insertion(model, images, random_map.to(images.device), target, steps=steps, baseline=baseline)
            draws.setdefault("deletion_auc", []).append(result.deletion_auc)
            draws.setdefault("insertion_auc", []).append(result.insertion_auc)
    return {name: torch.stack(values).nanmean(dim=0) for name, values in draws.items()}
