"""The library API behind every ``medattn`` command: a re-export facade over :mod:`medattn.stages`.

Each function takes a frozen config (``TrainConfig`` from :mod:`medattn.config`, the others from their stage modules; checked in its constructor), does the
work, tracks it in MLflow through :mod:`medattn.tracking`, and returns a plain result object; the
CLI only parses options and prints results, so the same work runs from a notebook or a script. User mistakes are raised as
:class:`~medattn.errors.MedattnError` *before* any MLflow run starts, so bad input never leaves a
run behind. No stage imports this module.

Example::

    from medattn import api
    cfg = api.resolve_train_config({"model": "cbam_resnet50", "epochs": 2})
    result = api.train(cfg)
    api.test(api.TestConfig(run_id=result.run_id))
"""

from __future__ import annotations

from medattn.config import TrainConfig, build_train_config, parse_seeds
from medattn.engine import EpochOutput, FitResult
from medattn.metrics import PairedDifference, paired_bootstrap
from medattn.runtime import resolve_device, seed_everything
from medattn.stages.bench import BenchConfig, bench, quick_config
from medattn.stages.bench_result import BenchResult
from medattn.stages.calibrate import CalibrateConfig, CalibrateResult, calibrate
from medattn.stages.cells import CellStatus, cell_key
from medattn.stages.common import (
    LoadedModel,
    build_model,
    data_index,
    load_trained,
    make_loader,
    predictions_frame,
)
from medattn.stages.compare import CompareConfig, CompareResult, compare
from medattn.stages.compare_tables import results_table, to_markdown
from medattn.stages.demo import DEMO_MODEL_OVERRIDES, DEMO_MODELS, DEMO_TRAIN_DEFAULTS, DemoConfig, DemoResult, demo
from medattn.stages.evaluate import TestConfig, TestResult, test
from medattn.stages.figures import FiguresConfig, FiguresResult, figures
from medattn.stages.grid import GridOptions, GridResult, grid, grid_cells, seed_configs, with_seed
from medattn.stages.interpret import InterpretConfig, InterpretResult, interpret
from medattn.stages.promote import PromoteConfig, PromoteResult, promote
from medattn.stages.report import ReportConfig, ReportResult, open_command, report
from medattn.stages.search import SearchConfig, SearchResult, search, search_workers
from medattn.stages.slurm import DEFAULT_LOG_FOLDER as DEFAULT_SLURM_LOGS
from medattn.stages.slurm import SlurmOptions
from medattn.stages.slurm import parse_extra as parse_slurm_extra
from medattn.stages.train import (
    EpochCallback,
    TrainResult,
    model_summary,
    resolve_train_config,
    train,
    values_under_options,
)

__all__ = [
    "DEFAULT_SLURM_LOGS",
    "CellStatus",
    "GridOptions",
    "GridResult",
    "SlurmOptions",
    "cell_key",
    "parse_slurm_extra",
    "DEMO_MODELS",
    "DEMO_MODEL_OVERRIDES",
    "DEMO_TRAIN_DEFAULTS",
    "BenchConfig",
    "BenchResult",
    "CalibrateConfig",
    "CalibrateResult",
    "CompareConfig",
    "CompareResult",
    "DemoConfig",
    "DemoResult",
    "EpochCallback",
    "EpochOutput",
    "FiguresConfig",
    "FiguresResult",
    "FitResult",
    "InterpretConfig",
    "InterpretResult",
    "LoadedModel",
    "PairedDifference",
    "PromoteConfig",
    "PromoteResult",
    "ReportConfig",
    "ReportResult",
    "SearchConfig",
    "SearchResult",
    "TestConfig",
    "TestResult",
    "TrainConfig",
    "TrainResult",
    "bench",
    "calibrate",
    "build_model",
    "build_train_config",
    "compare",
    "data_index",
    "demo",
    "figures",
    "grid",
    "grid_cells",
    "interpret",
    "load_trained",
    "make_loader",
    "model_summary",
    "paired_bootstrap",
    "parse_seeds",
    "predictions_frame",
    "promote",
    "open_command",
    "quick_config",
    "report",
    "resolve_device",
    "resolve_train_config",
    "results_table",
    "search",
    "search_workers",
    "seed_configs",
    "seed_everything",
    "test",
    "to_markdown",
    "train",
    "values_under_options",
    "with_seed",
]
