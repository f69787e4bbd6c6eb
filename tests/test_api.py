"""medattn.api: a re-export facade; every name is the very object of its home module."""

from __future__ import annotations

import importlib

import pytest

from medattn import api

HOMES = {
    "train": "medattn.stages.train",
    "resolve_train_config": "medattn.stages.train",
    "TrainResult": "medattn.stages.train",
    "test": "medattn.stages.evaluate",
    "TestResult": "medattn.stages.evaluate",
    "interpret": "medattn.stages.interpret",
    "figures": "medattn.stages.figures",
    "compare": "medattn.stages.compare",
    "search": "medattn.stages.search",
    "promote": "medattn.stages.promote",
    "demo": "medattn.stages.demo",
    "grid": "medattn.stages.grid",
    "bench": "medattn.stages.bench",
    "load_trained": "medattn.stages.common",
    "TrainConfig": "medattn.config",
    "TestConfig": "medattn.stages.evaluate",
    "InterpretConfig": "medattn.stages.interpret",
    "FiguresConfig": "medattn.stages.figures",
    "CompareConfig": "medattn.stages.compare",
    "SearchConfig": "medattn.stages.search",
    "PromoteConfig": "medattn.stages.promote",
    "resolve_device": "medattn.runtime",
}


@pytest.mark.parametrize(("name", "home"), HOMES.items())
def test_facade_names_are_their_home_objects(name, home):
    assert getattr(api, name) is getattr(importlib.import_module(home), name)


def test_all_lists_only_existing_names():
    assert set(HOMES) <= set(api.__all__)
    assert all(hasattr(api, name) for name in api.__all__)
