"""The interpret stage's entry point: every score of every method, next to its sanity baselines.

:func:`evaluate_explanations` attributes each method on a batch, scores its maps
(:func:`map_scores`: the removal curves of :mod:`medattn.explain.removal` and the localisation
scores of :mod:`medattn.explain.localisation`), computes the same scores for the model-free
baselines, the oracle map and the randomised model (:mod:`medattn.explain.sanity`), and returns
the ``xai_*`` metrics with their bootstrap CIs and pass verdicts, plus one row per image × source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from medattn.config import REMOVALS
from medattn.errors import ConfigError
from medattn.explain.base import attribute
from medattn.explain.localisation import _masks, mask_relevance_mass, oracle_removal_map, pointing_game
from medattn.explain.removal import DEFAULT_REMOVAL, deletion_insertion, road_curves
from medattn.explain.sanity import (
    BASELINES,
    ORACLE,
    bootstrap_ci,
    metric_name,
    randomize_weights,
    rank_correlation,
    sanity_verdicts,
)

#: Scores that need a ground-truth mask (computed on lesion images only).
MASK_SCORES = ("pointing_game", "mask_mass")
#: Scores that need the model, by removal: ROAD's MoRF / LeRF, or deletion / insertion on a
#: constant or blurred substrate.
CURVE_SCORES: dict[str, tuple[str, str]] = {
    "road": ("morf_auc", "lerf_auc"),
    "zeros": ("deletion_auc", "insertion_auc"),
    "blur": ("deletion_auc", "insertion_auc"),
}


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
