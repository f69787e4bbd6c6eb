"""Explanation scores against values worked out by hand on tiny arrays."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medattn.errors import ConfigError
from medattn.explain import deletion_insertion, mask_relevance_mass, pointing_game, random_baseline_scores


class MeanModel(nn.Module):
    """Logits ``[mean(x), 0]``: class 0's probability is ``sigmoid(mean(x))``."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, torch.zeros_like(m)], dim=1)


def _image():
    # One 2x2 image, the same value in all 3 channels: pixels 4, 3 / 2, 1 (mean 2.5).
    return torch.tensor([[4.0, 3.0], [2.0, 1.0]]).expand(1, 3, 2, 2).clone()


def test_deletion_insertion_logit_by_hand():
    image = _image()
    ranking = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])  # deletes 4, then 3, 2, 1
    res = deletion_insertion(MeanModel(), image, ranking, torch.tensor([0]), steps=4, output="logit")
    torch.testing.assert_close(res.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(res.deletion_curve, torch.tensor([[2.5, 1.5, 0.75, 0.25, 0.0]]))
    torch.testing.assert_close(res.insertion_curve, torch.tensor([[0.0, 1.0, 1.75, 2.25, 2.5]]))
    # trapezoid, h = 1/4: deletion (2.5/2 + 1.5 + .75 + .25 + 0) / 4, insertion (0 + 1 + 1.75 + 2.25 + 2.5/2) / 4
    torch.testing.assert_close(res.deletion_auc, torch.tensor([0.9375]))
    torch.testing.assert_close(res.insertion_auc, torch.tensor([1.5625]))


def test_deletion_insertion_probability_and_reverse_order():
    image = _image()
    # Channel maps summed per pixel; this ranking deletes the smallest pixel first.
    maps = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(1, 3, 2, 2) / 3
    res = deletion_insertion(MeanModel(), image, maps, torch.tensor([0]), steps=2)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # k = 0, 2, 4 pixels: deleting 1 and 2 leaves mean 7/4; inserting them gives 3/4.
    deletion = [sig(2.5), sig(1.75), sig(0.0)]
    insertion = [sig(0.0), sig(0.75), sig(2.5)]
    torch.testing.assert_close(res.deletion_curve, torch.tensor([deletion]))
    torch.testing.assert_close(res.insertion_curve, torch.tensor([insertion]))
    auc = lambda c: 0.5 * (c[0] / 2 + c[1] + c[2] / 2)  # noqa: E731
    torch.testing.assert_close(res.deletion_auc, torch.tensor([auc(deletion)]))
    torch.testing.assert_close(res.insertion_auc, torch.tensor([auc(insertion)]))


def test_deletion_insertion_batched_and_grid_maps():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 8, 8, generator=gen)
    grid = torch.rand(3, 2, 2, generator=gen)  # a ViT-like patch map, upsampled to 8x8
    target = torch.tensor([0, 1, 0])
    together = deletion_insertion(MeanModel(), images, grid, target, steps=4)
    for i in range(3):
        alone = deletion_insertion(MeanModel(), images[i : i + 1], grid[i : i + 1], target[i : i + 1], steps=4)
        torch.testing.assert_close(together.deletion_auc[i : i + 1], alone.deletion_auc)
        torch.testing.assert_close(together.insertion_auc[i : i + 1], alone.insertion_auc)
    # Every curve starts at the image (deletion) or the baseline (insertion) and ends at the other.
    torch.testing.assert_close(together.deletion_curve[:, 0], together.insertion_curve[:, -1])
    with pytest.raises(ConfigError):
        deletion_insertion(MeanModel(), images, grid, target, baseline="noise")


def test_deletion_insertion_leaves_model_mode():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 2)).train()
    res = deletion_insertion(model, torch.rand(2, 3, 2, 2), torch.rand(2, 2, 2), torch.tensor([0, 1]), steps=2)
    assert model.training and res.deletion_auc.shape == (2,)


def test_pointing_game_by_hand():
    heat = torch.zeros(3, 4, 4)
    heat[:, 1, 2] = 5.0  # the maximum at row 1, column 2
    masks = torch.zeros(3, 4, 4)
    masks[0, 0:2, 2:4] = 1  # contains (1, 2): hit
    masks[1, 3, 0] = 1  # far away: miss
    masks[2, 1, 3] = 1  # one pixel to the right: hit only with tolerance 1
    torch.testing.assert_close(pointing_game(heat, masks), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(pointing_game(heat, masks, tolerance=1), torch.tensor([1.0, 0.0, 1.0]))
    empty = pointing_game(heat[:1], torch.zeros(1, 1, 4, 4))
    assert torch.isnan(empty).all()


def test_pointing_game_channel_sum_and_grid_upsampling():
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0, 0, 0], maps[0, 1, 3, 3], maps[0, 2, 3, 3] = 3.0, 2.0, 2.0  # summed: (3, 3) wins, 4 > 3
    mask = torch.zeros(1, 4, 4)
    mask[0, 3, 3] = 1
    assert pointing_game(maps, mask).item() == 1.0
    grid = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])  # bottom-right patch
    quadrant = torch.zeros(1, 4, 4)
    quadrant[0, 2:, 2:] = 1
    assert pointing_game(grid, quadrant).item() == 1.0


def test_relevance_mass_by_hand():
    maps = torch.tensor([[[1.0, 2.0], [3.0, -4.0]], [[-1.0, -2.0], [0.0, 0.0]]])
    masks = torch.tensor([[[1, 0], [0, 1]], [[1, 1], [1, 1]]])
    mass = mask_relevance_mass(maps, masks)
    # image 0: positive relevance 1 + 2 + 3 = 6, inside the mask 1 (the -4 counts as 0); image 1: none positive
    torch.testing.assert_close(mass[:1], torch.tensor([1 / 6]))
    assert torch.isnan(mass[1])


def test_random_baseline_scores():
    masks = torch.zeros(2, 8, 8)
    masks[:, :, :4] = 1  # half of each image
    scores = random_baseline_scores(masks=masks, generator=torch.Generator().manual_seed(0), n_draws=400)
    assert set(scores) == {"pointing_game", "relevance_mass"}
    torch.testing.assert_close(scores["relevance_mass"], torch.full((2,), 0.5), atol=0.01, rtol=0)
    torch.testing.assert_close(scores["pointing_game"], torch.full((2,), 0.5), atol=0.1, rtol=0)
    again = random_baseline_scores(masks=masks, generator=torch.Generator().manual_seed(0), n_draws=400)
    torch.testing.assert_close(again["pointing_game"], scores["pointing_game"])

    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    di = random_baseline_scores(
        model=MeanModel(),
        images=images,
        target=torch.tensor([0, 0]),
        generator=torch.Generator().manual_seed(2),
        map_shape=(2, 2, 2),
        n_draws=3,
    )
    assert set(di) == {"deletion_auc", "insertion_auc"} and di["deletion_auc"].shape == (2,)
    with pytest.raises(ConfigError):
        random_baseline_scores(generator=torch.Generator())
