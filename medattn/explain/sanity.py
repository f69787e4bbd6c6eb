"""Sanity baselines: what a map that knows nothing about the model scores, and the rule a method
must pass against them.

A score means something only next to what a trivial answer gets, so every score is also computed for
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
:func:`medattn.explain.evaluation.evaluate_explanations` computes them all.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medattn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from medattn.explain.localisation import pixel_scores

#: Whether a larger value of each score is better (deletion AUC: lower is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "morf_auc": False,
    "lerf_auc": True,
    "deletion_auc": False,
    "insertion_auc": True,
    "pointing_game": True,
    "mask_mass": True,
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


def metric_name(name: str) -> str:
    """``transformer-lrp`` → ``transformer_lrp`` (metric names use underscores)."""
    return name.replace("-", "_")


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
