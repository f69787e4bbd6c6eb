"""Removal curves: how the model's confidence falls as the pixels an attribution map ranks first
are removed.

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
- **ROAD** (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
  ICML 2022): :func:`road_curves` removes the most (MoRF) and least (LeRF) relevant pixels by
  noisy linear imputation (:func:`road_impute`), the default removal (:data:`DEFAULT_REMOVAL`).

:func:`random_baseline_scores` computes the localisation and deletion / insertion scores for
i.i.d. uniform random maps drawn from a generator passed in, so every score can be reported next
to what chance gives. All functions are pure (tensors in, tensors out; the model is only
evaluated, in eval mode with its mode restored) and work on whole batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from medattn.config import REMOVALS
from medattn.errors import ConfigError
from medattn.explain.base import explaining
from medattn.explain.localisation import _masks, mask_relevance_mass, pixel_scores, pointing_game

#: Gaussian blur of the ``"blur"`` baseline (kernel size, sigma in pixels), as in RISE.
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0


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


def _imputation_system(keep: np.ndarray, image: np.ndarray):
    """The sparse linear system of ROAD's imputation for one image: ``(A, b)`` with one equation per
    removed pixel (``A`` in CSC form, ``b`` of shape ``(n_removed, C)``).

    Hand-written because grad-cam's ``NoisyLinearImputer.setup_sparse_system`` fills a ``lil_matrix``
    entry by entry, more than half of an imputation's time at 64 px (the demo's 7 interpret runs took
    118 s with it, 91 s with this). This builds the same matrix from coordinate arrays, with
    grad-cam's neighbour weights and offsets taken in grad-cam's order, so the right-hand side and the
    diagonal are summed in the same order; ``tests/explain/test_road_quantus.py`` checks that the
    imputed images are equal bit for bit.

    Args:
        keep: ``(H, W)`` float, 1 where the pixel is kept, 0 where it is removed.
        image: ``(C, H, W)`` float32.
    """
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights  # noqa: PLC0415 (heavy: cv2)
    from scipy.sparse import coo_matrix  # noqa: PLC0415

    known = keep.reshape(-1) > 0.5
    flat = image.reshape(image.shape[0], -1)
    removed = np.flatnonzero(keep.reshape(-1) == 0)
    unknown_id = np.zeros(known.size, dtype=int)
    unknown_id[removed] = np.arange(removed.size)
    b = np.zeros((removed.size, image.shape[0]))
    diagonal = np.ones(removed.size)
    rows, cols, values = [], [], []
    for offset, weight in neighbors_weights:
        valid, coords = NoisyLinearImputer.add_offset_to_indices(removed, offset, keep.shape)
        ids, coords = np.flatnonzero(valid), coords[valid]
        given = known[coords]
        b[ids[given], :] -= weight * flat[:, coords[given]].T
        rows.append(ids[~given])
        cols.append(unknown_id[coords[~given]])
        values.append(np.full(rows[-1].size, weight))
        outside = np.flatnonzero(~valid)
        diagonal[outside] = diagonal[outside] - weight
    rows.append(np.arange(removed.size))
    cols.append(np.arange(removed.size))
    values.append(-diagonal)
    shape = (removed.size, removed.size)
    system = coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    system = system.tocsc()
    system.sort_indices()
    return system, b


def road_impute(images: Tensor, removed: Tensor, *, noise: float = ROAD_NOISE, seed: int = 0) -> Tensor:
    """ROAD's noisy linear imputation of the removed pixels of a batch.

    Each removed pixel becomes the weighted mean of its 8 neighbours (weights 1/6 for the four
    direct, 1/12 for the four diagonal neighbours), solved jointly for all removed pixels as one
    sparse linear system, plus Gaussian noise of standard deviation ``noise`` (Rong et al., "A
    Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022). The result
    is that of ``pytorch_grad_cam.metrics.road.NoisyLinearImputer`` (grad-cam, MIT, from the
    authors' code) bit for bit, with the system assembled faster (:func:`_imputation_system`);
    one image at a time; the noise is drawn under ``seed`` with the global random state left as
    found.

    Args:
        images: ``(B, C, H, W)`` images (any device; imputed on the CPU).
        removed: ``(B, H, W)`` bool, True where a pixel is removed (every channel).
        noise: noise standard deviation (0: the plain linear imputation).
        seed: seed of the noise.

    Returns:
        ``(B, C, H, W)`` float32 on ``images``' device: kept pixels unchanged, removed ones imputed.
    """
    from scipy.sparse.linalg import spsolve  # noqa: PLC0415

    x = images.detach().float().cpu().contiguous()
    keep = (~removed.bool()).cpu().float()
    out = x.clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(x.shape[0]):
            if keep[i].sum() == keep[i].numel():
                continue
            system, rhs = _imputation_system(keep[i].numpy(), x[i].numpy())
            solved = torch.tensor(spsolve(system, rhs), dtype=torch.float).reshape(rhs.shape).t()
            flat = x[i].reshape(x.shape[1], -1).clone()
            flat[:, keep[i].reshape(-1) == 0] = solved + noise * torch.randn_like(solved)
            out[i] = flat.reshape(x.shape[1:])
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
