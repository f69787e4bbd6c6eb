"""A checkpoint's flatten head binds it to its image size, also when the head was given as ``paper``
(``paper`` flattens the DenseNets and pools the ResNets)."""

from __future__ import annotations

import pytest

from medattn.config import build_train_config
from medattn.errors import ConfigError
from medattn.stages.train import check_compatible


@pytest.mark.parametrize(("model", "refused"), [("densenet121", True), ("resnet50", False)])
def test_paper_head_image_size_check(model: str, refused: bool) -> None:
    state = {"config": {"model": model, "head": "paper", "nr_layers": 12, "img_size": 64}}
    cfg = build_train_config({"model": model, "head": "paper", "img_size": 32})
    if refused:
        with pytest.raises(ConfigError, match="--img-size 64"):
            check_compatible(state, cfg)
    else:
        check_compatible(state, cfg)  # a pooled head does not depend on the image size
