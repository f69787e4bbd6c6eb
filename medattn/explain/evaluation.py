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

**Sanity baselines** (:func:`evaluate_explanations`, the interpret stage's entry point). A score
means something only next to what a trivial answer gets, so every score is also computed for
maps that know nothing about the model (:data:`BASELINES`: uniform random maps, the input's grey
level, a Gaussian centre prior, a Sobel edge map of the grey level) and for the same method on
the same architecture with re-initialised weights — the model-parameter randomisation test of
Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018 (:func:`randomize_weights`),
together with the Spearman rank correlation between trained and randomised maps. Mask scores use
the images with a non-empty mask (lesion images) only; deletion / insertion AUC get the random
and grey-level baselines. Each score gets a percentile bootstrap 95 % CI over images
(:func:`bootstrap_ci`), and a method *passes* (:func:`sanity_verdicts`) when, for every score,
its CI lies entirely on the better side of every baseline's CI: the lower bound of its score
above the upper bound of the best baseline (below, for deletion AUC).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medattn.config import REMOVALS
from medattn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from medattn.errors import ConfigError
from medattn.explain.base import attribute, explaining

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
        # torchvision loads on first use: the command line lists the method names without it (seconds)
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
            result = deletion_insertion(
                model, images, random_map.to(images.device), target, steps=steps, baseline=baseline
            )
            draws.setdefault("deletion_auc", []).append(result.deletion_auc)
            draws.setdefault("insertion_auc", []).append(result.insertion_auc)
    return {name: torch.stack(values).nanmean(dim=0) for name, values in draws.items()}


# =============================================================================================
# ROAD: removal by noisy linear imputation, most- and least-relevant first
# =============================================================================================
#: The removal choices (:data:`medattn.config.REMOVALS`): ROAD's noisy linear imputation (default),
#: or the classic deletion / insertion with a constant (``zeros``: the dataset mean) or blurred substrate.
DEFAULT_REMOVAL = REMOVALS[0]
#: The largest fraction of pixels ROAD removes (its paper removes 10 … 90 %; removing every pixel
#: leaves nothing to impute from).
ROAD_MAX_FRACTION = 0.9
#: Standard deviation of the noise added to the imputed pixels, in the units of the model's input
#: (ROAD's default, as ``pytorch_grad_cam.metrics.road.NoisyLinearImputer``).
ROAD_NOISE = 0.01


def road_impute(images: Tensor, removed: Tensor, *, noise: float = ROAD_NOISE, seed: int = 0) -> Tensor:
    """ROAD's noisy linear imputation of the removed pixels of a batch.

    Each removed pixel becomes the weighted mean of its 8 neighbours (weights 1/6 for the four
    direct, 1/12 for the four diagonal neighbours), solved jointly for all removed pixels as one
    sparse linear system, plus Gaussian noise of standard deviation ``noise`` (Rong et al., "A
    Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022). The solver is
    ``pytorch_grad_cam.metrics.road.NoisyLinearImputer`` (grad-cam, MIT, from the authors' code),
    called once per image; the noise is drawn under ``seed`` with the global random state left as
    found.

    Args:
        images: ``(B, C, H, W)`` images (any device; imputed on the CPU).
        removed: ``(B, H, W)`` bool, True where a pixel is removed (every channel).
        noise: noise standard deviation (0: the plain linear imputation).
        seed: seed of the noise.

    Returns:
        ``(B, C, H, W)`` float32 on ``images``' device: kept pixels unchanged, removed ones imputed.
    """
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer  # noqa: PLC0415 (heavy: cv2 on import)

    imputer = NoisyLinearImputer(noise=noise)
    x = images.detach().float().cpu()
    keep = (~removed.bool()).cpu().float()
    out = x.clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for b in range(x.shape[0]):
            if keep[b].sum() < keep[b].numel():
                out[b] = imputer(x[b], keep[b])
    return out.to(images.device)


@dataclass(frozen=True)
class RoadCurves:
    """ROAD curves and their areas for a batch (:func:`road_curves`).

    Attributes:
        fractions: ``(steps + 1,)`` fraction of the pixels removed: 0, then geometric steps up to
            :data:`ROAD_MAX_FRACTION` (:func:`road_curves`).
        morf_curve: ``(B, steps + 1)`` target probability, most relevant pixels removed first.
        lerf_curve: ``(B, steps + 1)`` target probability, least relevant pixels removed first.
        morf_auc: ``(B,)`` mean relative change of the target probability from the unperturbed
            image (``morf_curve / morf_curve[:, :1] − 1``, trapezoid rule over the steps divided by
            their number; −1 = all of it lost at once, lower is better).
        lerf_auc: ``(B,)`` the same for ``lerf_curve`` (higher is better; 0 = nothing lost).
    """

    fractions: Tensor
    morf_curve: Tensor
    lerf_curve: Tensor
    morf_auc: Tensor
    lerf_auc: Tensor


def removal_ranks(maps: Tensor, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Each pixel's rank by decreasing relevance, ties broken at random (seeded).

    A tie broken in row-major order would remove a constant map's pixels as a sweep from the top of
    the image, which the imputation fills very differently from scattered pixels; a binary map (the
    ground-truth mask) is all ties inside and outside.

    Returns:
        ``(B, H·W)`` int64: 0 for the most relevant pixel.
    """
    scores = pixel_scores(maps, size).cpu().reshape(maps.shape[0], -1)
    bsz, n = scores.shape
    shuffle = torch.stack([torch.randperm(n, generator=generator) for _ in range(bsz)])
    order = shuffle.gather(1, torch.argsort(scores.gather(1, shuffle), dim=1, descending=True, stable=True))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n).expand(bsz, -1))
    return rank


def _relative(curve: Tensor) -> Tensor:
    """``p_i / p_0 − 1``: the share of the unperturbed image's target probability lost (negative) or
    gained at each step (``p_0`` floored at 10⁻⁶)."""
    return curve / curve[:, :1].clamp(min=1e-6) - 1.0


def road_curves(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Tensor,
    *,
    steps: int = 8,
    noise: float = ROAD_NOISE,
    seed: int = 0,
) -> RoadCurves:
    """MoRF and LeRF curves of a batch of maps with ROAD's imputation (:func:`road_impute`).

    At ``steps`` geometric steps ``f_i = ROAD_MAX_FRACTION · 2^(i − steps)`` (8 steps: 0.7, 1.4,
    2.8, 5.6, 11, 22, 45 and 90 % of the pixels), the top (MoRF) or bottom (LeRF)
    ``round(f_i · H · W)`` pixels of the map's ranking (:func:`removal_ranks`) are removed and
    imputed, and the softmax probability of the target class is recorded. Costs ``2 · steps · B``
    imputations (a few ms each at 64 px) and forward passes.

    Why geometric steps: a lesion covers a few per cent of the image; with equal steps of 11 % every
    structured map (the grey level, edges, a centre prior) has removed it by the first step, and the
    score could not tell them from the ground truth (measured on the demo: MoRF 0.125 for the mask,
    0.137–0.140 for the baselines). Why the relative change from the unperturbed probability: images
    differ in how sure the model is, and that spread (shared by every map) made the CIs of all maps
    overlap; ``p_i / p_0 − 1`` removes it (the difference ``p_i − p_0``, as in the AOPC of Samek et
    al., IEEE TNNLS 2017, removed the offset but not the scale: MoRF −0.49 [−0.56, −0.41] for the
    mask against −0.45 [−0.53, −0.36] for the grey level on the demo's ResNet-50).

    Args:
        model: the classifier (evaluated in eval mode, left as found).
        images: ``(B, 3, H, W)`` normalised images.
        maps: ``(B, C, H, W)`` or ``(B, h, w)`` maps.
        target: ``(B,)`` class indices.
        steps: removal steps.
        noise: the imputation's noise.
        seed: seed of the tie-breaking and the noise.

    Returns:
        A :class:`RoadCurves`.
    """
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}.")
    bsz, _, height, width = images.shape
    images = images.detach().float()
    generator = torch.Generator().manual_seed(seed)
    rank = removal_ranks(maps, (height, width), generator)
    n = height * width
    fractions = torch.tensor([0.0] + [ROAD_MAX_FRACTION * 2.0 ** (i - steps) for i in range(1, steps + 1)])
    target = torch.as_tensor(target, device=images.device).long()
    both = torch.cat([target, target])[:, None]
    with explaining(model, images.device.type), torch.no_grad():
        start = model(images).float().softmax(dim=1).gather(1, target[:, None])[:, 0].cpu()
        morf, lerf = [start], [start]
        for i in range(1, steps + 1):
            k = round(ROAD_MAX_FRACTION * 2.0 ** (i - steps) * n)
            removed = torch.cat([rank < k, rank >= n - k]).reshape(2 * bsz, height, width)
            filled = road_impute(torch.cat([images, images]), removed, noise=noise, seed=seed + i)
            values = model(filled).float().softmax(dim=1).gather(1, both)[:, 0].cpu()
            morf.append(values[:bsz])
            lerf.append(values[bsz:])
    morf_curve, lerf_curve = torch.stack(morf, dim=1), torch.stack(lerf, dim=1)
    return RoadCurves(
        fractions=fractions,
        morf_curve=morf_curve,
        lerf_curve=lerf_curve,
        morf_auc=torch.trapezoid(_relative(morf_curve), dim=1) / steps,
        lerf_auc=torch.trapezoid(_relative(lerf_curve), dim=1) / steps,
    )


# =============================================================================================
# Sanity baselines and confidence intervals
# =============================================================================================
#: Whether a larger value of each score is better (deletion AUC: lower is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "morf_auc": False,
    "lerf_auc": True,
    "deletion_auc": False,
    "insertion_auc": True,
    "pointing_game": True,
    "mask_mass": True,
}
#: Scores that need a ground-truth mask (computed on lesion images only).
MASK_SCORES = ("pointing_game", "mask_mass")
#: Scores that need the model, by removal: ROAD's MoRF / LeRF, or deletion / insertion on a
#: constant or blurred substrate.
CURVE_SCORES: dict[str, tuple[str, str]] = {
    "road": ("morf_auc", "lerf_auc"),
    "zeros": ("deletion_auc", "insertion_auc"),
    "blur": ("deletion_auc", "insertion_auc"),
}
#: The source name of the ground-truth mask scored as a map (a model-free reference).
ORACLE = "oracle"
#: Width of the centre prior, as a fraction of the image side.
CENTRE_SIGMA = 0.25
_RANDOMIZE_SEED_OFFSET = 0x5EED
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def grey_level(images: Tensor) -> Tensor:
    """The input's grey level: the channel mean of the de-normalised (ImageNet) image.

    Args:
        images: ``(B, 3, H, W)`` ImageNet-normalised images.

    Returns:
        ``(B, H, W)`` float32 in [0, 1] for images that came from [0, 1].
    """
    x = images.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean).mean(dim=1)


def _random_map(images: Tensor, generator: torch.Generator) -> Tensor:
    bsz, _, height, width = images.shape
    return torch.rand((bsz, height, width), generator=generator)


def _centre_map(images: Tensor, generator: torch.Generator) -> Tensor:
    bsz, _, height, width = images.shape
    yy = torch.arange(height, dtype=torch.float32)[:, None] - (height - 1) / 2
    xx = torch.arange(width, dtype=torch.float32)[None, :] - (width - 1) / 2
    sigma = CENTRE_SIGMA * min(height, width)
    return torch.exp(-(yy**2 + xx**2) / (2 * sigma**2)).expand(bsz, height, width).clone()


def _edge_map(images: Tensor, generator: torch.Generator) -> Tensor:
    grey = F.pad(grey_level(images)[:, None], (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(grey, _SOBEL_X.view(1, 1, 3, 3))
    gy = F.conv2d(grey, _SOBEL_X.t().contiguous().view(1, 1, 3, 3))
    return torch.hypot(gx, gy)[:, 0]


def _input_map(images: Tensor, generator: torch.Generator) -> Tensor:
    return grey_level(images)


#: Model-free baseline maps by name: ``(images (B, 3, H, W), generator) -> (B, H, W)``. ``random``:
#: i.i.d. uniform; ``input``: the grey level; ``centre``: a Gaussian centre prior (σ = 0.25 of the
#: side); ``edge``: the Sobel gradient magnitude of the grey level.
BASELINES: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "random": _random_map,
    "input": _input_map,
    "centre": _centre_map,
    "edge": _edge_map,
}


def bootstrap_ci(
    values: Tensor, *, generator: torch.Generator, n_boot: int = 1000, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of per-image values and its percentile bootstrap CI (resampling images).

    NaN values (images a score does not apply to) are dropped first.

    Args:
        values: ``(N,)`` one value per image.
        generator: the random source of the resampling.
        n_boot: bootstrap resamples.
        level: confidence level.

    Returns:
        ``(mean, low, high)``; NaN bounds with fewer than 2 values or ``n_boot`` 0, all NaN with none.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    v = v[~torch.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2 or n_boot < 1:
        return mean, math.nan, math.nan
    idx = torch.randint(0, len(v), (n_boot, len(v)), generator=generator)
    means = v[idx].mean(dim=1)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return mean, low, high


def randomize_weights(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every parameter re-initialised (model randomisation test).

    Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018: a map that does not change
    when the weights are randomised does not explain what the model learned. Modules with a
    ``reset_parameters`` method (convolutions, linear layers, normalisation layers, whose running
    statistics are reset too) use it; any other parameter (e.g. a ViT's position embedding and
    class token) is drawn from N(0, 0.02²). The global random state is left untouched.

    Args:
        model: the trained model (not modified).
        seed: seed of the re-initialisation.

    Returns:
        The randomised copy, on the model's device, in eval mode.
    """
    device = next(model.parameters()).device
    clone = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        # offset: a model built right after torch.manual_seed(seed) must not be re-drawn identically
        torch.manual_seed(seed + _RANDOMIZE_SEED_OFFSET)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:
                for param in module.parameters(recurse=False):
                    nn.init.normal_(param, std=0.02)
    return clone.to(device).eval()


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation between two batches of maps, per image (ties: average ranks).

    Args:
        a: ``(B, C, H, W)`` or ``(B, h, w)`` maps (reduced to pixel scores).
        b: maps of the same images, any shape :func:`pixel_scores` accepts.

    Returns:
        ``(B,)`` float32; NaN where one map is constant.
    """
    size = tuple(a.shape[-2:])
    x = pixel_scores(a, size).cpu().reshape(a.shape[0], -1).numpy()
    y = pixel_scores(b, size).cpu().reshape(b.shape[0], -1).numpy()
    out = []
    for u, v in zip(x, y, strict=True):
        ru, rv = scipy.stats.rankdata(u), scipy.stats.rankdata(v)
        out.append(np.corrcoef(ru, rv)[0, 1] if ru.std() > 0 and rv.std() > 0 else math.nan)
    return torch.tensor(out, dtype=torch.float32)


@dataclass(frozen=True)
class ExplanationReport:
    """Outcome of :func:`evaluate_explanations`.

    Attributes:
        metrics: ``xai_*`` metrics (names in :func:`evaluate_explanations`), finite values only.
        per_image: one row per image × source (``image`` = position in the batch, ``source`` = a
            method name, ``baseline_<name>`` or ``baseline_randomized_<method>``), one column per
            score (NaN where it does not apply), plus ``randomized_spearman`` on method rows.
        maps: method → ``(N, ...)`` maps of the trained model (CPU, float32).
        randomized_maps: method → the same method's maps on the randomised model.
    """

    metrics: dict[str, float]
    per_image: pd.DataFrame
    maps: dict[str, Tensor]
    randomized_maps: dict[str, Tensor]


def metric_name(name: str) -> str:
    """``transformer-lrp`` → ``transformer_lrp`` (metric names use underscores)."""
    return name.replace("-", "_")


def curve_scores(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Tensor,
    *,
    removal: str = DEFAULT_REMOVAL,
    steps: int = 16,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Per-image removal scores in batches: ``morf_auc`` / ``lerf_auc`` (``removal="road"``,
    :func:`road_curves`) or ``deletion_auc`` / ``insertion_auc`` (``"zeros"`` / ``"blur"``,
    :func:`deletion_insertion`)."""
    if removal not in REMOVALS:
        raise ConfigError(f"removal must be one of {', '.join(REMOVALS)}, got {removal!r}.")
    first, second = CURVE_SCORES[removal]
    out = {first: [], second: []}
    for s in range(0, images.shape[0], batch_size):
        e = min(s + batch_size, images.shape[0])
        chunk = maps[s:e].to(images.device)
        if removal == "road":
            res = road_curves(model, images[s:e], chunk, target[s:e], steps=steps, seed=seed + s)
            out[first].append(res.morf_auc)
            out[second].append(res.lerf_auc)
        else:
            res = deletion_insertion(model, images[s:e], chunk, target[s:e], steps=steps, baseline=removal)
            out[first].append(res.deletion_auc)
            out[second].append(res.insertion_auc)
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in out.items()}


def map_scores(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Tensor,
    *,
    masks: Tensor | None = None,
    curves: bool = True,
    steps: int = 16,
    batch_size: int = 16,
    curve_images: int | None = None,
    curve_index: Tensor | None = None,
    removal: str = "zeros",
    seed: int = 0,
) -> dict[str, Tensor]:
    """Per-image scores of one set of maps.

    Args:
        model: the trained classifier (for the removal curves).
        images: ``(N, 3, H, W)`` normalised images.
        maps: ``(N, C, H, W)`` or ``(N, h, w)`` maps of these images.
        target: ``(N,)`` class indices the maps explain.
        masks: ``(N, H, W)`` ground-truth masks; mask scores are NaN on images with an empty mask.
        curves: whether to compute the removal scores (:func:`curve_scores`).
        steps: removal steps.
        batch_size: images per removal batch.
        curve_images: removal curves on the first this many images only (NaN for the rest);
            ``None`` = all. Ignored when ``curve_index`` is given.
        curve_index: the positions of the images that get removal curves (NaN for the rest).
        removal: ``road`` (MoRF / LeRF AUC), ``zeros`` or ``blur`` (deletion / insertion AUC).
        seed: seed of ROAD's tie-breaking and noise.

    Returns:
        score name → ``(N,)`` float32 (CPU).
    """
    n = images.shape[0]
    out: dict[str, Tensor] = {}
    if curves:
        if curve_index is None:
            curve_index = torch.arange(n if curve_images is None else min(curve_images, n))
        idx = torch.as_tensor(curve_index, dtype=torch.long)
        dev_idx = idx.to(images.device)
        res = curve_scores(
            model,
            images[dev_idx],
            maps[idx],
            target[dev_idx],
            removal=removal,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
        )
        for name, values in res.items():
            full = torch.full((n,), math.nan)
            full[idx] = values.float()
            out[name] = full
    if masks is not None:
        mask = _masks(masks).cpu()
        lesion = mask.reshape(n, -1).any(dim=1)
        out["pointing_game"] = pointing_game(maps, mask)
        out["mask_mass"] = torch.where(lesion, mask_relevance_mass(maps, mask), torch.nan)
    return out


def _pad(values: Tensor, n: int) -> Tensor:
    """``(k,)`` values followed by NaN up to ``(n,)``."""
    return torch.cat([values, torch.full((n - values.shape[0],), math.nan)])


def _attribute_all(model: nn.Module, images: Tensor, method: str, target: Tensor, batch_size: int) -> Tensor:
    return torch.cat(
        [
            attribute(model, images[s : s + batch_size], method, target[s : s + batch_size]).cpu()
            for s in range(0, images.shape[0], batch_size)
        ]
    )


def _method_scores(
    model: nn.Module,
    randomized: nn.Module,
    method: str,
    images: Tensor,
    target: Tensor,
    masks: Tensor | None,
    scores: dict[str, dict[str, Tensor]],
    *,
    randomized_images: int,
    batch_size: int,
    **options: Any,
) -> tuple[Tensor, Tensor]:
    """Add one method's scores and its randomised twin's to ``scores``; return both sets of maps."""
    n, k = images.shape[0], randomized_images
    maps = _attribute_all(model, images, method, target, batch_size)
    twin = _attribute_all(randomized, images[:k], method, target[:k], batch_size)
    scores[method] = map_scores(model, images, maps, target, masks=masks, batch_size=batch_size, **options)
    scores[method]["randomized_spearman"] = _pad(rank_correlation(maps[:k], twin), n)
    twin_scores = map_scores(
        model, images[:k], twin, target[:k], masks=None if masks is None else masks[:k], curves=False
    )
    scores[f"baseline_randomized_{metric_name(method)}"] = {name: _pad(v, n) for name, v in twin_scores.items()}
    return maps, twin


def oracle_removal_map(masks: Tensor) -> Tensor:
    """The oracle map that ranks pixels for the removal curves: the mask first, then every other
    pixel by its distance to the mask (nearest first): ``mask + 10⁻³ / (1 + distance)``.

    The binary mask alone leaves every pixel outside it tied; broken at random, LeRF then removes
    scattered pixels all over the image (textured vessels and blobs included) long before a
    model-free map that removes flat background first, and the ground truth lost LeRF to the
    grey-level and edge maps on the demo (0.605 vs 0.662–0.716). Relevance that decays with the
    distance from the lesion is what the ground truth says about the rest of the image. The mask
    scores (pointing game, mask mass) use the binary mask.
    """
    from scipy.ndimage import distance_transform_edt  # noqa: PLC0415

    mask = _masks(masks).cpu()
    dist = torch.stack(
        [
            torch.from_numpy(distance_transform_edt(~m.numpy())).float() if m.any() else torch.zeros(m.shape)
            for m in mask
        ]
    )
    return mask.float() + 1e-3 / (1.0 + dist)


def _baseline_scores(
    model: nn.Module,
    images: Tensor,
    target: Tensor,
    masks: Tensor | None,
    *,
    generator: torch.Generator,
    n_random_draws: int,
    **options: Any,
) -> dict[str, dict[str, Tensor]]:
    """Scores of the model-free baselines (and of the oracle map, the ground-truth mask, where there
    are masks); random mask scores averaged over ``n_random_draws`` maps."""
    out = {}
    if masks is not None and _masks(masks).any():  # no lesion image: nothing for the oracle to mark
        out[ORACLE] = {
            **map_scores(model, images, oracle_removal_map(masks), target, **options),
            **map_scores(model, images, _masks(masks).float().cpu(), target, masks=masks, curves=False),
        }
    for name, make in BASELINES.items():
        maps = make(images, generator)
        scores = map_scores(model, images, maps, target, masks=masks, **options)
        if name == "random" and masks is not None and n_random_draws > 1:
            for score in MASK_SCORES:
                draws = [scores[score]] + [
                    map_scores(model, images, make(images, generator), target, masks=masks, curves=False)[score]
                    for _ in range(n_random_draws - 1)
                ]
                scores[score] = torch.stack(draws).nanmean(dim=0)
        out[f"baseline_{name}"] = scores
    return out


def sanity_verdicts(metrics: Mapping[str, float], methods: Sequence[str]) -> dict[str, float]:
    """The pass rule: a method's score beats every baseline with non-overlapping 95 % CIs.

    For each score of a method (``xai_<m>_<score>`` with ``_ci_low`` / ``_ci_high`` in
    ``metrics``) the competitors are the model-free baselines and the same method on the
    randomised model (``xai_baseline_<b>_<score>``); for the oracle map (:data:`ORACLE`, which
    does not depend on the model) the model-free baselines only. Higher-is-better scores pass when the
    method's lower bound exceeds the largest upper bound of the baselines; deletion AUC (lower is
    better) when its upper bound is below the smallest lower bound. A missing or NaN bound fails.

    Returns:
        ``xai_<m>_<score>_passes`` (1.0 / 0.0) per score and ``xai_<m>_passes_sanity`` (1.0 when
        every score passes, and at least one was scored).
    """
    out: dict[str, float] = {}
    for method in map(metric_name, methods):
        rivals = [*BASELINES] if method == ORACLE else [*BASELINES, f"randomized_{method}"]
        verdicts = []
        for score, higher in HIGHER_IS_BETTER.items():
            if f"xai_{method}_{score}" not in metrics:
                continue
            own = metrics.get(f"xai_{method}_{score}_ci_{'low' if higher else 'high'}", math.nan)
            bounds = [
                metrics.get(f"xai_baseline_{b}_{score}_ci_{'high' if higher else 'low'}", math.nan)
                for b in rivals
                if f"xai_baseline_{b}_{score}" in metrics
            ]
            ok = (
                bool(bounds)
                and math.isfinite(own)
                and all(math.isfinite(b) for b in bounds)
                and (own > max(bounds) if higher else own < min(bounds))
            )
            out[f"xai_{method}_{score}_passes"] = float(ok)
            verdicts.append(ok)
        out[f"xai_{method}_passes_sanity"] = float(bool(verdicts) and all(verdicts))
    return out


def summarize_scores(
    scores: Mapping[str, Mapping[str, Tensor]], *, generator: torch.Generator, n_boot: int = 1000
) -> dict[str, float]:
    """Means and bootstrap 95 % CIs over images: ``xai_<source>_<score>``, ``_ci_low``, ``_ci_high``.

    Args:
        scores: source (method or ``baseline_<name>``) → score name → ``(N,)`` per-image values.
        generator: random source of the bootstrap.
        n_boot: bootstrap resamples.
    """
    metrics: dict[str, float] = {}
    for source, per_score in scores.items():
        for score, values in per_score.items():
            mean, low, high = bootstrap_ci(values, generator=generator, n_boot=n_boot)
            key = f"xai_{metric_name(source)}_{score}"
            metrics.update({key: mean, f"{key}_ci_low": low, f"{key}_ci_high": high})
    return metrics


def _per_image_frame(scores: Mapping[str, Mapping[str, Tensor]]) -> pd.DataFrame:
    frames = [
        pd.DataFrame(
            {"image": np.arange(len(next(iter(s.values())))), "source": source, **{k: v.numpy() for k, v in s.items()}}
        )
        for source, s in scores.items()
        if s
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["image", "source"])


def curve_subset(n: int, masks: Tensor | None, curve_images: int | None) -> Tensor:
    """The images that get removal curves: the first ``curve_images`` (``None``: all) of the images
    with a non-empty mask where there are masks (the oracle map is empty elsewhere), else of all."""
    if masks is not None:
        candidates = torch.nonzero(_masks(masks).cpu().reshape(n, -1).any(dim=1))[:, 0]
    else:
        candidates = torch.arange(n)
    return candidates if curve_images is None else candidates[:curve_images]


def _check_options(steps: int, batch_size: int, n_boot: int, n_random_draws: int, removal: str) -> None:
    if steps < 1 or batch_size < 1 or n_boot < 0 or n_random_draws < 1:
        raise ConfigError("steps, batch_size and n_random_draws must be at least 1 and n_boot at least 0.")
    if removal not in REMOVALS:
        raise ConfigError(f"removal must be one of {', '.join(REMOVALS)}, got {removal!r}.")


def _report_metrics(scores, methods, images: Tensor, masks: Tensor | None, curve_index, *, generator, n_boot: int):
    """The finite metrics of :func:`evaluate_explanations`: summarised scores with CIs, the sanity
    verdicts, ``xai_n_images``, ``xai_n_curve_images`` and, with masks, ``xai_n_lesion_images``."""
    metrics = summarize_scores(scores, generator=generator, n_boot=n_boot)
    metrics.update(sanity_verdicts(metrics, [*methods, *([ORACLE] if ORACLE in scores else [])]))
    metrics["xai_n_images"] = float(images.shape[0])
    metrics["xai_n_curve_images"] = float(len(curve_index))
    if masks is not None:
        metrics["xai_n_lesion_images"] = float(_masks(masks).reshape(images.shape[0], -1).any(dim=1).sum())
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def evaluate_explanations(
    model: nn.Module,
    images: Tensor,
    target: Tensor,
    methods: Sequence[str],
    *,
    masks: Tensor | None = None,
    randomized_model: nn.Module | None = None,
    steps: int = 16,
    curve_images: int | None = None,
    randomized_images: int | None = None,
    batch_size: int = 16,
    n_boot: int = 1000,
    n_random_draws: int = 8,
    seed: int = 0,
    removal: str = DEFAULT_REMOVAL,
) -> ExplanationReport:
    """Explain images with each method and score the maps next to the sanity baselines.

    The one entry point of the interpret stage. Per method: the maps of the trained model, its
    scores, the scores of the model-free :data:`BASELINES` and of the same method on a randomised
    copy of the model (:func:`randomize_weights`), the Spearman rank correlation between trained
    and randomised maps, a bootstrap 95 % CI over images for every score, and the pass rule of
    :func:`sanity_verdicts`. With masks, the ground-truth mask itself is scored as a map too
    (source :data:`ORACLE`, judged against the model-free baselines only): a score on which it does
    not beat them cannot judge a method. Mask scores use the images with a non-empty mask (lesion
    images) only; the removal curves use the images of :func:`curve_subset`, for the methods, every
    model-free baseline and the oracle.

    Metrics (finite values only; ``<m>`` is the method with ``_`` for ``-``; every mean has
    ``_ci_low`` / ``_ci_high``): ``xai_<m>_<score>``, ``xai_oracle_<score>``,
    ``xai_baseline_<b>_<score>`` for ``b`` in ``random, input, centre, edge, randomized_<m>``,
    ``xai_<m>_randomized_spearman``, ``xai_<m>_<score>_passes``, ``xai_<m>_passes_sanity`` and
    ``xai_oracle_passes_sanity`` (1 or 0; the oracle only where some image has a non-empty mask), ``xai_n_images``, ``xai_n_curve_images`` and
    ``xai_n_lesion_images``. Scores: ``morf_auc`` and ``lerf_auc`` (``removal="road"``) or
    ``deletion_auc`` and ``insertion_auc`` (``"zeros"`` / ``"blur"``), and with masks
    ``pointing_game``, ``mask_mass``.

    Args:
        model: the trained classifier (left as found).
        images: ``(N, 3, H, W)`` normalised images.
        target: ``(N,)`` class indices to explain (labels or predictions).
        methods: explanation method names (:data:`medattn.explain.EXPLAINERS`).
        masks: ``(N, H, W)`` ground-truth masks, or ``None`` (no mask scores, no oracle).
        randomized_model: the randomised model; default :func:`randomize_weights` of ``model``.
        steps: removal steps.
        curve_images: removal curves on this many images (``None``: all; :func:`curve_subset`);
            the costliest part (``2 · steps`` imputations and forward passes per image and map set
            with ROAD).
        randomized_images: explain the first this many images on the randomised model (``None``:
            all); its scores and the Spearman correlation use those images. Fewer images widen the
            baseline's CI, which makes the pass rule stricter, never looser.
        batch_size: images per attribution / removal batch.
        n_boot: bootstrap resamples per CI.
        n_random_draws: uniform random maps averaged per image for the random mask scores.
        seed: seed of the random maps, the randomised weights, ROAD's noise and the bootstrap.
        removal: ``road`` (default), ``zeros`` or ``blur`` (:func:`curve_scores`).

    Returns:
        An :class:`ExplanationReport`.
    """
    _check_options(steps, batch_size, n_boot, n_random_draws, removal)
    target = torch.as_tensor(target, device=images.device).long()
    generator = torch.Generator().manual_seed(seed)
    randomized = randomized_model if randomized_model is not None else randomize_weights(model, seed=seed)
    n = images.shape[0]
    index = curve_subset(n, masks, curve_images)
    options = {"steps": steps, "batch_size": batch_size, "curve_index": index, "removal": removal, "seed": seed}
    scores = _baseline_scores(
        model, images, target, masks, generator=generator, n_random_draws=n_random_draws, **options
    )
    maps, randomized_maps, k = {}, {}, n if randomized_images is None else min(randomized_images, n)
    for method in methods:
        maps[method], randomized_maps[method] = _method_scores(
            model, randomized, method, images, target, masks, scores, randomized_images=k, **options
        )
    metrics = _report_metrics(scores, methods, images, masks, index, generator=generator, n_boot=n_boot)
    return ExplanationReport(metrics, _per_image_frame(scores), maps, randomized_maps)
