"""The ``grid`` stage: every cell of an experiment grid (models × training fractions × ...) trained in turn,
and the configs of ``train --seeds`` (one training run per seed, :func:`seed_configs`)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medattn import tracking
from medattn.config import TrainConfig, build_train_config, load_yaml, parse_seeds, zero_init_applies
from medattn.errors import ConfigError
from medattn.models import canonical_model_name
from medattn.stages.train import TrainResult, train


def with_seed(cfg: TrainConfig, seed: int) -> TrainConfig:
    """``cfg`` trained with another seed (everything else equal)."""
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, seed=int(seed)))


def seed_configs(cfg: TrainConfig, seeds: Sequence[int] | None) -> list[TrainConfig]:
    """The configs ``train --seeds 0,1,2`` trains, one run each: ``cfg`` once per seed.

    Args:
        cfg: the resolved training config; the seeds replace its seed (:func:`with_seed`).
        seeds: the seeds (:func:`~medattn.config.parse_seeds`); ``None`` or empty: ``[cfg]``.

    Raises:
        ConfigError: seeds with ``--resume`` (which continues one run with its seed), or several
            seeds under ``mlflow run``, which gives the process one run to log into.
    """
    seeds = parse_seeds(seeds)
    if not seeds:
        return [cfg]
    if cfg.resume:
        raise ConfigError("--resume continues one run with its own seed; leave --seeds out.")
    if len(seeds) > 1 and tracking.project_run_id():
        raise ConfigError(
            "--seeds with several seeds makes one run per seed, but `mlflow run` gives this process one run; "
            "give one seed per `mlflow run -e train`, or use the main (demo) entry point's seeds parameter."
        )
    return [with_seed(cfg, s) for s in seeds]


def grid_cells(
    config_file: str | Path, overrides: Mapping[str, Any] | None = None, *, seeds: Sequence[int] | None = None
) -> list[TrainConfig]:
    """The training configs of every cell of a YAML file's ``grid`` (model × perc_train × ...).

    Args:
        config_file: an ``experiments/*.yaml`` with a ``grid`` mapping of option → list of values.
        overrides: options applied to every cell (e.g. ``data_dir``); a gridded option given here
            pins that axis to the one value.
        seeds: train every cell once per seed (``--seeds 0,1,2``), seeds innermost;
            ``None``: the config's one seed.

    Raises:
        ConfigError: the file has no ``grid`` or a grid entry is not a non-empty list.
    """
    seeds = parse_seeds(seeds)
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
        if not zero_init_applies(canonical_model_name(model)):
            cell["zero_init_residual"] = False  # the option is for the ResNets among the cells
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
