"""Sanity baselines, bootstrap CIs and the pass rule of the explanation scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medattn.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transform,
    load_index,
    load_mask,
    read_image,
    write_synthetic,
)
from medattn.explain.evaluation import evaluate_explanations, map_scores, summarize_scores
from medattn.explain.sanity import (
    BASELINES,
    CENTRE_SIGMA,
    bootstrap_ci,
    grey_level,
    randomize_weights,
    rank_correlation,
    sanity_verdicts,
)
from medattn.models import create_model

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
SCORES = ("deletion_auc", "insertion_auc", "pointing_game", "mask_mass")


def _normalise(raw: torch.Tensor) -> torch.Tensor:
    return (raw - MEAN) / STD


def test_baseline_maps_by_hand():
    gen = torch.Generator().manual_seed(0)
    raw = torch.zeros(1, 3, 4, 4)
    raw[0, 0], raw[0, 1], raw[0, 2] = 0.3, 0.6, 0.9
    torch.testing.assert_close(grey_level(_normalise(raw)), torch.full((1, 4, 4), 0.6))
    assert BASELINES["input"](_normalise(raw), gen).shape == (1, 4, 4)

    centre = BASELINES["centre"](torch.zeros(2, 3, 5, 5), gen)
    assert centre.shape == (2, 5, 5) and centre[0].flatten().argmax().item() == 12
    sigma = CENTRE_SIGMA * 5
    torch.testing.assert_close(centre[1, 2, 4], torch.tensor(math.exp(-4 / (2 * sigma**2))))  # 2 px right of the centre
    torch.testing.assert_close(centre[0, 0, 0], torch.tensor(math.exp(-8 / (2 * sigma**2))))

    # A vertical step 0 → 1 between columns 1 and 2: Sobel |gx| = 1 + 2 + 1 on both sides of it, 0 elsewhere
    # (replicate padding: no edge at the image border).
    step = torch.zeros(1, 3, 4, 4)
    step[..., 2:] = 1.0
    edge = BASELINES["edge"](_normalise(step), gen)
    torch.testing.assert_close(edge, torch.tensor([[0.0, 4.0, 4.0, 0.0]]).expand(1, 4, 4), atol=1e-5, rtol=0)

    a = BASELINES["random"](torch.zeros(2, 3, 6, 6), torch.Generator().manual_seed(3))
    b = BASELINES["random"](torch.zeros(2, 3, 6, 6), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < 1


def test_bootstrap_ci():
    gen = torch.Generator().manual_seed(0)
    assert bootstrap_ci(torch.full((10,), 0.3), generator=gen) == pytest.approx((0.3, 0.3, 0.3))
    mean, low, high = bootstrap_ci(torch.tensor([1.0, math.nan]), generator=gen)
    assert mean == 1.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in bootstrap_ci(torch.tensor([math.nan]), generator=gen))
    # 100 hits among 400 images: CI ≈ 0.25 ± 1.96 · sqrt(0.25 · 0.75 / 400) = [0.2076, 0.2924]; NaNs are dropped
    hits = torch.cat([torch.ones(100), torch.zeros(300), torch.full((50,), math.nan)])
    mean, low, high = bootstrap_ci(hits, generator=gen, n_boot=4000)
    assert mean == pytest.approx(0.25)
    assert low == pytest.approx(0.2076, abs=0.01) and high == pytest.approx(0.2924, abs=0.01)


def test_mask_scores_on_hand_made_maps_lesion_images_only():
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 5:8, 4:6] = True  # images 2 and 3: no lesion
    perfect = masks.float() + 0.01  # all relevance on the lesion, a little everywhere
    scores = map_scores(nn.Identity(), torch.zeros(4, 3, 8, 8), perfect, torch.zeros(4), masks=masks, curves=False)
    torch.testing.assert_close(scores["pointing_game"][:2], torch.ones(2))
    inside = [4.04 / (4.04 + 0.60), 6.06 / (6.06 + 0.58)]  # 4 and 6 mask pixels of 64
    torch.testing.assert_close(scores["mask_mass"][:2], torch.tensor(inside))
    assert torch.isnan(scores["pointing_game"][2:]).all() and torch.isnan(scores["mask_mass"][2:]).all()

    metrics = summarize_scores(
        {"oracle": scores, "baseline_centre": {"pointing_game": torch.tensor([0.0, 1.0])}},
        generator=torch.Generator().manual_seed(0),
        n_boot=200,
    )
    assert metrics["xai_oracle_pointing_game"] == 1.0
    assert (metrics["xai_oracle_pointing_game_ci_low"], metrics["xai_oracle_pointing_game_ci_high"]) == (1.0, 1.0)
    assert metrics["xai_oracle_mask_mass"] == pytest.approx(sum(inside) / 2)
    assert metrics["xai_baseline_centre_pointing_game"] == 0.5
    lo, hi = metrics["xai_baseline_centre_pointing_game_ci_low"], metrics["xai_baseline_centre_pointing_game_ci_high"]
    assert lo == 0.0 and hi == 1.0


def _ci(value: float, low: float, high: float, key: str) -> dict[str, float]:
    return {key: value, f"{key}_ci_low": low, f"{key}_ci_high": high}


def test_pass_rule_lower_ci_beats_best_baselines_upper_ci():
    metrics = {
        **_ci(0.8, 0.7, 0.9, "xai_deeplift_pointing_game"),
        **_ci(0.2, 0.1, 0.3, "xai_baseline_random_pointing_game"),
        **_ci(0.5, 0.3, 0.69, "xai_baseline_input_pointing_game"),
        **_ci(0.5, 0.4, 0.6, "xai_baseline_randomized_deeplift_pointing_game"),
        **_ci(0.95, 0.9, 1.0, "xai_baseline_randomized_lrp_pointing_game"),  # another method's: not a rival
        **_ci(0.2, 0.15, 0.25, "xai_deeplift_deletion_auc"),  # lower is better
        **_ci(0.3, 0.26, 0.34, "xai_baseline_random_deletion_auc"),
        **_ci(0.35, 0.3, 0.4, "xai_baseline_input_deletion_auc"),
    }
    assert sanity_verdicts(metrics, ["deeplift"]) == {
        "xai_deeplift_deletion_auc_passes": 1.0,
        "xai_deeplift_pointing_game_passes": 1.0,
        "xai_deeplift_passes_sanity": 1.0,
    }
    assert sanity_verdicts({**metrics, "xai_baseline_input_pointing_game_ci_high": 0.71}, ["deeplift"]) == {
        "xai_deeplift_deletion_auc_passes": 1.0,
        "xai_deeplift_pointing_game_passes": 0.0,
        "xai_deeplift_passes_sanity": 0.0,
    }
    assert (
        sanity_verdicts({**metrics, "xai_deeplift_deletion_auc_ci_high": 0.27}, ["deeplift"])[
            "xai_deeplift_passes_sanity"
        ]
        == 0.0
    )
    assert (
        sanity_verdicts({**metrics, "xai_deeplift_pointing_game_ci_low": math.nan}, ["deeplift"])[
            "xai_deeplift_passes_sanity"
        ]
        == 0.0
    )
    assert sanity_verdicts({}, ["lrp"]) == {"xai_lrp_passes_sanity": 0.0}


def test_rank_correlation_and_randomize_weights():
    a = torch.arange(16.0).view(1, 4, 4)
    torch.testing.assert_close(rank_correlation(a, 2 * a + 1), torch.tensor([1.0]))
    torch.testing.assert_close(rank_correlation(a, -a), torch.tensor([-1.0]))
    assert torch.isnan(rank_correlation(a, torch.ones(1, 4, 4))).all()

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    model[1].running_mean += 1.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    r1, r2 = randomize_weights(model, seed=1), randomize_weights(model, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(v, r2.state_dict()[k]) for k, v in r1.state_dict().items())
    assert not torch.equal(r1[0].weight, model[0].weight) and torch.equal(r1[1].running_mean, torch.zeros(4))


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).eval()


def test_metric_names_of_the_entry_point():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 12, 12, generator=gen)
    masks = torch.zeros(6, 12, 12, dtype=torch.bool)
    masks[:4, 2:6, 3:8] = True
    report = evaluate_explanations(
        _tiny_cnn(),
        images,
        torch.tensor([1, 1, 0, 1, 0, 0]),
        ["deeplift"],
        masks=masks,
        steps=3,
        curve_images=4,
        randomized_images=5,
        batch_size=4,
        n_boot=100,
        n_random_draws=2,
    )
    m = report.metrics
    road = ("morf_auc", "lerf_auc", "pointing_game", "mask_mass")  # the default removal is ROAD
    expected = {f"xai_{src}_{s}" for src in ("deeplift", "oracle") for s in road} | {"xai_deeplift_randomized_spearman"}
    for baseline in ("random", "input", "centre", "edge", "randomized_deeplift"):
        expected |= {f"xai_baseline_{baseline}_{s}" for s in ("pointing_game", "mask_mass")}
    expected |= {f"xai_baseline_{b}_{s}" for b in ("random", "input", "centre", "edge") for s in road[:2]}
    expected = {k + suffix for k in expected for suffix in ("", "_ci_low", "_ci_high")}
    expected |= {"xai_deeplift_passes_sanity", "xai_oracle_passes_sanity", "xai_n_images", "xai_n_lesion_images"}
    expected |= {"xai_n_curve_images"} | {f"xai_{src}_{s}_passes" for src in ("deeplift", "oracle") for s in road}
    assert set(m) == expected
    assert m["xai_deeplift_passes_sanity"] in (0.0, 1.0)
    assert (m["xai_n_images"], m["xai_n_lesion_images"]) == (6.0, 4.0)
    assert all(m[f"{k}_ci_low"] <= m[k] <= m[f"{k}_ci_high"] for k in expected if f"{k}_ci_low" in m)
    assert report.maps["deeplift"].shape == images.shape
    assert not torch.equal(report.maps["deeplift"], report.randomized_maps["deeplift"])
    rows = report.per_image
    assert set(rows["source"]) == {
        "deeplift",
        "baseline_random",
        "baseline_input",
        "baseline_centre",
        "baseline_edge",
        "baseline_randomized_deeplift",
        "oracle",
    }
    deeplift = rows[rows["source"] == "deeplift"]
    assert deeplift["morf_auc"].notna().sum() == 4 and deeplift["pointing_game"].notna().sum() == 4
    assert deeplift["randomized_spearman"].notna().sum() == 5 and report.randomized_maps["deeplift"].shape[0] == 5
    assert rows[rows["source"] == "baseline_randomized_deeplift"]["mask_mass"].notna().sum() == 4


@pytest.mark.slow
def test_deeplift_on_a_randomised_model_fails_the_sanity_rule_on_the_demo_set(tmp_path):
    """An untrained ResNet-50 (the issue's counter-example: its DeepLIFT maps had 2× the random
    maps' mask mass) must not pass: its scores are not above the baselines' with separated CIs."""
    data = write_synthetic(tmp_path / "demo", n=68, img_size=96, seed=0, version=2)
    frame = load_index("demo", data).frame.query("label == 1")
    transform = build_transform(64)
    images = torch.stack([transform(read_image(p)) for p in frame["path"]])
    masks = torch.from_numpy(np.stack([load_mask(p, 64) for p in frame["mask_path"]]))
    model = create_model("resnet50", 2, img_size=64).eval()
    report = evaluate_explanations(
        model,
        images,
        torch.ones(len(images), dtype=torch.long),
        ["deeplift"],
        masks=masks,
        steps=2,
        curve_images=4,
        randomized_images=16,
        batch_size=34,
        n_boot=500,
    )
    m = report.metrics
    assert m["xai_n_lesion_images"] >= 32
    assert m["xai_deeplift_passes_sanity"] == 0.0
    # a random model's maps are no better than its re-randomised twin's on the mask scores
    assert m["xai_deeplift_mask_mass_passes"] == 0.0 and m["xai_deeplift_pointing_game_passes"] == 0.0
