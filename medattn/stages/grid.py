"""The ``grid`` stage: every cell of an experiment grid (models × training fractions × ...) trained in turn."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medattn.config import TrainConfig, build_train_config, load_yaml
from medattn.errors import ConfigError
from medattn.models import canonical_model_name
from medattn.stages.train import TrainResult, train


def parse_seeds(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``--seeds 0,1,2`` as a tuple of distinct integers (``None`` or empty: not given).

    Raises:
        ConfigError: an entry is not an integer, or a seed is repeated.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        seeds = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"--seeds must be comma-separated integers such as 0,1,2, got {text!r}.") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {text!r}; give each seed once.")
    return seeds or None


def with_seed(cfg: TrainConfig, seed: int) -> TrainConfig:
    """``cfg`` trained with another seed (everything else equal)."""
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, seed=int(seed)))


def grid_cells(
    config_file: str | Path, overrides: Mapping[str, Any] | None = None, *, seeds: Sequence[int] | None = None
) -> list[TrainConfig]:
    """The training configs of every cell of a YAML file's ``grid`` (model × perc_train × ...).

    Args:
        config_file: an ``experiments/*.yaml`` with a ``grid`` mapping of option → list of values.
        overrides: options applied to every cell (e.g. ``data_dir``); a gridded option given here
            pins that axis to the one value.
        seeds: train every cell once per seed (``--seeds 0,1,2``; issue 12.3), seeds innermost;
            ``None``: the config's one seed.

    Raises:
        ConfigError: the file has no ``grid`` or a grid entry is not a non-empty list.
    """
    raw = load_yaml(config_file)
    grid = raw.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"config file {str(config_file)!r} has no 'grid' mapping of option → list of values.")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid entry {key!r} in {str(config_file)!r} must be a non-empty list.")
        axes[key.replace("-", "_")] = [overrides[key]] if key in overrides else values
    cells = []
    for combo in itertools.product(*axes.values()):
        cell = dict(zip(axes, combo, strict=True))
        model = cell.get("model", overrides.get("model", raw.get("model", "")))
        if canonical_model_name(model) == "deit_tiny":
            # the paper's flatten head belongs to the CNNs; DeiT classifies from its CLS token
            cell["head"] = "pool"
        cfg = build_train_config({**overrides, **cell}, config_file=config_file)
        cells += [with_seed(cfg, s) for s in seeds] if seeds else [cfg]
    return cells


def grid(
    config_file: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    seeds: Sequence[int] | None = None,
) -> list[TrainResult]:
    """Train every cell of a grid file in turn (each cell is an ordinary training run), once per seed
    in ``seeds`` when given (:func:`grid_cells`)."""
    cells = grid_cells(config_file, overrides, seeds=seeds)
    results = []
    for i, cfg in enumerate(cells):
        seed = f", seed={cfg.optim.seed}" if seeds else ""
        echo(f"[{i + 1}/{len(cells)}] {cfg.model.model}, perc_train={cfg.data.perc_train:g}{seed}")
        results.append(train(cfg, progress=progress))
    return results
