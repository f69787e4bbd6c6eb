"""Issue 5 "Must show": on a demo model trained in the test, DeepLIFT and LRP point at the lesions.

A ResNet-50 of the zoo is trained from scratch for a few epochs on a small synthetic demo set
(plain seeded torch loop, 40 px), its BatchNorm statistics recalibrated on the training images
(3 epochs are too few steps for the running averages to settle), and then explained on the
label-1 test images. Training matters: LRP on *trained* CNNs used to give NaN maps (BN shifts),
which tests on random-init models could not see.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medattn.data import build_transform, load_index, load_mask, read_image, write_synthetic
from medattn.explain import attribute, mask_relevance_mass, pointing_game, random_baseline_scores
from medattn.models import create_model

SIZE = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = write_synthetic(tmp_path_factory.mktemp("trained_demo") / "demo", n=160, img_size=64, seed=0)
    index = load_index("demo", data)
    transform = build_transform(SIZE)

    def tensors(split):
        frame = index.split(split)
        return (
            torch.stack([transform(read_image(p)) for p in frame["path"]]),
            torch.tensor(frame["label"].values),
            frame,
        )

    x_train, y_train, _ = tensors("train")
    torch.manual_seed(0)
    model = create_model("resnet50", 2, img_size=SIZE)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        order = torch.randperm(len(x_train), generator=gen)
        for start in range(0, len(order) - 1, 32):
            batch = order[start : start + 32]
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    for m in model.modules():  # recalibrate BN: exact averages over the training images
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for start in range(0, len(x_train), 48):
            model(x_train[start : start + 48])
    model.eval()
    x_test, y_test, frame = tensors("test")
    lesion = (y_test == 1).numpy()
    masks = torch.from_numpy(np.stack([load_mask(p, SIZE) for p in frame["mask_path"][lesion]]))
    return model, x_test[lesion], masks


@pytest.fixture(scope="module")
def random_scores(trained):
    _, _, masks = trained
    scores = random_baseline_scores(generator=torch.Generator().manual_seed(0), masks=masks, n_draws=50)
    return {k: v.nanmean().item() for k, v in scores.items()}


@pytest.mark.parametrize("method", ["deeplift", "lrp"])
def test_trained_demo_maps_beat_random(trained, random_scores, method):
    model, images, masks = trained
    target = torch.ones(len(images), dtype=torch.long)
    maps = attribute(model, images, method, target)
    assert maps.shape == images.shape and torch.isfinite(maps).all()
    pg = pointing_game(maps, masks).nanmean().item()
    mass = mask_relevance_mass(maps, masks).nanmean().item()
    assert pg >= random_scores["pointing_game"] + 0.3, (pg, random_scores)
    assert mass >= 2 * random_scores["relevance_mass"], (mass, random_scores)
