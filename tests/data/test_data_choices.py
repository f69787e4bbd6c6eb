"""Every choice list of the data layer has one source in :mod:`medattn.config`."""

from __future__ import annotations

import pytest

from medattn import config
from medattn.data import DUPLICATE_POLICIES, RESIZE_MODES, canonical_split
from medattn.data.base import SPLITS
from medattn.errors import ConfigError


def test_data_choices_equal_the_config_lists() -> None:
    assert tuple(RESIZE_MODES.names()) == config.RESIZE_MODES
    assert DUPLICATE_POLICIES == config.DUPLICATES
    assert SPLITS == config.SPLITS


@pytest.mark.parametrize("name", sorted(config.SPLIT_ALIASES))
def test_canonical_split_accepts_every_config_alias(name: str) -> None:
    assert canonical_split(name.upper()) == config.split_name(name) == config.SPLIT_ALIASES[name]


def test_canonical_split_refuses_like_the_config() -> None:
    with pytest.raises(ConfigError, match="unknown split .holdout.; choose one of: train, val, test"):
        canonical_split("holdout")
