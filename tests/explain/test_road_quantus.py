"""ROAD removal and the mask scores, cross-checked against Quantus 0.6 (and grad-cam's imputer),
plus the oracle map and the removal switch of :func:`evaluate_explanations`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus")

from quantus.functions.perturb_func import noisy_linear_imputation  # noqa: E402

from medattn.errors import ConfigError  # noqa: E402
from medattn.explain.evaluation import evaluate_explanations  # noqa: E402
from medattn.explain.localisation import mask_relevance_mass, pointing_game  # noqa: E402
from medattn.explain.removal import ROAD_MAX_FRACTION, ROAD_NOISE, road_curves, road_impute  # noqa: E402
from medattn.explain.sanity import sanity_verdicts  # noqa: E402

SIZE = 40  # 0.1125 · 1600 = 180: every ROAD step removes a whole number of pixels in both libraries


def _linear_model(seed: int = 0, channels: int = 3) -> nn.Module:
    """A linear classifier on the flattened image: its prediction moves with every imputed pixel."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * SIZE * SIZE, 2))
    return model.eval()


def test_road_imputation_equals_quantus_noisy_linear_imputation():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, SIZE, SIZE)).astype(np.float32)
    removed = rng.random((SIZE, SIZE)) < 0.5
    ours = road_impute(torch.from_numpy(image)[None], torch.from_numpy(removed)[None], noise=0.0)[0].numpy()
    theirs = noisy_linear_imputation(image.astype(np.float64), np.flatnonzero(removed), noise=0.0)
    assert np.abs(ours - theirs).max() < 1e-6
    assert np.array_equal(ours[:, ~removed], image[:, ~removed])  # kept pixels untouched
    assert np.abs(ours[:, removed] - image[:, removed]).mean() > 0.1  # removed ones were replaced
    # the noise is seeded and leaves the global random state alone
    state = torch.random.get_rng_state()
    a = road_impute(torch.from_numpy(image)[None], torch.from_numpy(removed)[None], seed=3)
    b = road_impute(torch.from_numpy(image)[None], torch.from_numpy(removed)[None], seed=3)
    assert torch.equal(a, b) and torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("fraction", [0.007, 0.11, 0.5, 0.9, 0.99])
def test_road_imputation_equals_grad_cams_bit_for_bit(fraction):
    """medattn assembles the sparse system itself (faster); the imputed images, noise included,
    are those of grad-cam's ``NoisyLinearImputer`` exactly, border and corner pixels included."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    rng = np.random.default_rng(int(fraction * 1000))
    images = torch.from_numpy(rng.standard_normal((3, 3, SIZE, SIZE)).astype(np.float32))
    removed = torch.from_numpy(rng.random((3, SIZE, SIZE)) < fraction)
    removed[0, 0, 0] = removed[1, -1, -1] = True  # a corner: five of its neighbours are off the image
    ours = road_impute(images, removed, seed=7)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        imputer = NoisyLinearImputer(noise=ROAD_NOISE)
        theirs = torch.stack([imputer(images[i], (~removed[i]).float()) for i in range(3)])
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, images)


def test_road_imputation_of_views_and_of_a_single_pixel():
    """A transposed view (strides not in row-major order) is imputed, not returned as given; one removed
    pixel is the 1 × 1 system, solved as grad-cam solves it."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    gen = torch.Generator().manual_seed(2)
    images = torch.randn((2, 3, SIZE, SIZE), generator=gen).transpose(2, 3)
    removed = torch.rand((2, SIZE, SIZE), generator=gen) < 0.3
    removed[1] = False
    removed[1, 3, 5] = True
    ours = road_impute(images, removed, noise=0.0)
    imputer = NoisyLinearImputer(noise=0.0)
    theirs = torch.stack([imputer(images[i].contiguous(), (~removed[i]).float()) for i in range(2)])
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours[0], images[0]) and not torch.equal(ours[1, :, 3, 5], images[1, :, 3, 5])
    assert torch.equal(
        ours[removed.unsqueeze(1).expand_as(ours).logical_not()], images[~removed.unsqueeze(1).expand_as(images)]
    )


def test_road_morf_agrees_with_quantus_road():
    """Quantus's ROAD records whether the prediction still equals the target after removing the
    top p % of the map; the MoRF curve's target probability above 0.5 is the same event. (Quantus
    0.6's ROAD indexes the flattened map against one channel's pixels, so the images here have one
    channel; ``road_impute`` itself is checked on three above.)"""
    model = _linear_model(channels=1)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn((12, 1, SIZE, SIZE), generator=gen)
    maps = torch.rand((12, SIZE, SIZE), generator=gen)  # no ties: one ordering in both libraries
    with torch.no_grad():
        target = model(images).argmax(1)
    ours = road_curves(model, images, maps, target, steps=4, noise=0.0)
    percentages = [100 * ROAD_MAX_FRACTION * 2.0 ** (i - 4) for i in range(1, 5)]  # 11.25, 22.5, 45, 90
    metric = quantus.ROAD(noise=0.0, percentages=percentages, display_progressbar=False, disable_warnings=True)
    theirs = metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=target.numpy(),
        a_batch=maps[:, None].numpy(),
        device="cpu",
    )
    still_right = (ours.morf_curve[:, 1:] > 0.5).float().mean(0).numpy()
    assert np.allclose(still_right, list(theirs.values()), atol=1e-6)
    assert still_right.min() < 1.0  # removal changed some predictions: the agreement has teeth
    assert math.isclose(float(ours.fractions[-1]), ROAD_MAX_FRACTION, rel_tol=1e-6)


def test_morf_removes_the_map_top_and_lerf_its_bottom():
    """A model that reads one region: MoRF with a map on that region falls, LeRF keeps it."""
    weight = torch.zeros(3, SIZE, SIZE)
    weight[:, 10:20, 10:20] = 1.0
    region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    region[10:20, 10:20] = True

    class Region(nn.Module):
        def forward(self, x):
            z = (x * weight).sum(dim=(1, 2, 3)) / 30.0
            return torch.stack([-z, z], dim=1)

    images = torch.zeros(4, 3, SIZE, SIZE)
    images[:, :, 10:20, 10:20] = 2.0  # a bright patch the model reads; the rest 0
    target = torch.ones(4, dtype=torch.long)
    good = region.float().expand(4, SIZE, SIZE)
    res = road_curves(Region(), images, good, target, steps=4, noise=0.0)
    flipped = road_curves(Region(), images, 1.0 - good, target, steps=4, noise=0.0)
    assert (res.morf_auc < flipped.morf_auc - 0.2).all()
    assert (res.lerf_auc > flipped.lerf_auc + 0.2).all()


def test_pointing_game_and_mass_agree_with_quantus_and_ties_differ():
    gen = torch.Generator().manual_seed(2)
    maps = torch.rand((16, 1, SIZE, SIZE), generator=gen)
    masks = torch.zeros((16, 1, SIZE, SIZE))
    for i in range(16):
        y, x = (int(v) for v in torch.randint(1, SIZE - 12, (2,), generator=gen))
        masks[i, 0, y : y + 12, x : x + 12] = 1
    maps[:8] += 2 * masks[:8]  # half the maps point at the mask
    x = torch.zeros((16, 3, SIZE, SIZE)).numpy()
    y = np.zeros(16, dtype=int)
    kw = {"model": _linear_model(), "x_batch": x, "y_batch": y, "s_batch": masks.numpy(), "device": "cpu"}
    pg = quantus.PointingGame(disable_warnings=True, display_progressbar=False)(a_batch=maps.numpy(), **kw)
    assert np.allclose(pointing_game(maps, masks).numpy(), np.asarray(pg, dtype=float), atol=1e-6)
    mass = quantus.RelevanceMassAccuracy(disable_warnings=True, display_progressbar=False, normalise=False)(
        a_batch=maps.numpy(), **kw
    )
    assert np.allclose(mask_relevance_mass(maps, masks).numpy(), mass, atol=1e-6)
    # The definitions differ on ties: Quantus counts any maximum inside the mask as a hit (so a
    # constant map would score 1 on every image, were it not refused); medattn takes the first
    # maximum in row-major order. Here each map's maximum is tied between the top-left pixel
    # (outside every mask) and one pixel inside the mask: Quantus scores hits, medattn misses.
    # medattn keeps its rule: a map that cannot decide where the lesion is must not win the game.
    tied = maps[8:].clone() * 0.5
    tied[:, 0, 0, 0] = 1.0
    for i in range(8):
        inside = torch.nonzero(masks[8 + i, 0])[0]
        tied[i, 0, inside[0], inside[1]] = 1.0
    kw_tied = {**kw, "x_batch": x[8:], "y_batch": y[8:], "s_batch": masks[8:].numpy()}
    pg_tied = quantus.PointingGame(disable_warnings=True, display_progressbar=False)(a_batch=tied.numpy(), **kw_tied)
    assert np.all(np.asarray(pg_tied, dtype=float) == 1.0)
    assert pointing_game(tied, masks[8:]).sum() == 0


def _toy():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    images = torch.randn(6, 3, 16, 16)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[:4, 4:9, 4:9] = True
    return model.eval(), images, masks


def test_the_oracle_map_is_scored_next_to_the_methods_and_judged_against_model_free_baselines():
    model, images, masks = _toy()
    target = torch.ones(6, dtype=torch.long)
    report = evaluate_explanations(
        model, images, target, ["deeplift"], masks=masks, steps=2, n_boot=50, n_random_draws=2, curve_images=3
    )
    m = report.metrics
    for score in ("morf_auc", "lerf_auc", "pointing_game", "mask_mass"):
        for source in ("oracle", "deeplift", *(f"baseline_{b}" for b in ("random", "input", "centre", "edge"))):
            assert f"xai_{source}_{score}" in m, (source, score)
        assert f"xai_oracle_{score}_ci_low" in m and f"xai_oracle_{score}_passes" in m
    assert "xai_deeplift_deletion_auc" not in m and m["xai_n_curve_images"] == 3.0
    assert m["xai_oracle_pointing_game"] == 1.0 and m["xai_oracle_mask_mass"] == 1.0
    assert m["xai_oracle_passes_sanity"] in (0.0, 1.0)
    curves = report.per_image.dropna(subset=["morf_auc"])
    assert set(curves["image"]) == {0, 1, 2}  # the first curve_images images with a mask

    legacy = evaluate_explanations(
        model, images, target, ["deeplift"], masks=masks, steps=2, n_boot=10, removal="zeros", curve_images=2
    )
    assert "xai_deeplift_deletion_auc" in legacy.metrics and "xai_deeplift_morf_auc" not in legacy.metrics
    with pytest.raises(ConfigError, match="removal"):
        evaluate_explanations(model, images, target, ["deeplift"], removal="mean")


def test_the_oracle_rivals_are_the_model_free_baselines_only():
    def bounds(value):
        return {"": value, "_ci_low": value - 0.01, "_ci_high": value + 0.01}

    metrics = {}
    for source, value in (("oracle", 0.9), ("baseline_random", 0.2), ("baseline_input", 0.5)):
        metrics.update({f"xai_{source}_pointing_game{k}": v for k, v in bounds(value).items()})
    # a randomised-model baseline that beats the oracle does not count against a model-free map
    metrics.update({f"xai_baseline_randomized_oracle_pointing_game{k}": v for k, v in bounds(0.95).items()})
    assert sanity_verdicts(metrics, ["oracle"])["xai_oracle_passes_sanity"] == 1.0
    metrics.update({f"xai_baseline_input_pointing_game{k}": v for k, v in bounds(0.9).items()})
    assert sanity_verdicts(metrics, ["oracle"])["xai_oracle_passes_sanity"] == 0.0
