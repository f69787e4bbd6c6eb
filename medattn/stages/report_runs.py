"""The runs of one experiment as the report reads them: the cells (model × training fraction × seed,
with their train, test and interpret runs) and the small artifacts the sections need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medattn import tracking
from medattn.errors import MedattnError
from medattn.models import MODELS
from medattn.stages import compare_tables
from medattn.stages.report_model import Num

#: Kinds whose runs make up the cells of an experiment; other runs (compare, report, demo, search
#: parents) appear in the run index only.
CELL_KINDS = ("train", "test", "interpret")


def _tag(run: Any, key: str, default: str = "") -> str:
    return run.data.tags.get(key, default)


def _frac(run: Any) -> float:
    return compare_tables._fraction(_tag(run, tracking.TAG_PERC_TRAIN) or None)


def _pct(perc: float) -> str:
    return f"{100 * perc:g} %" if math.isfinite(perc) else "?"


def _params(run: Any) -> dict[str, str]:
    """A run's params with medattn's normalised ``resolved.<key>`` values in place of ``mlflow run``'s spelling."""
    params = dict(run.data.params)
    for key, value in list(params.items()):
        if key.startswith(tracking.RESOLVED_PREFIX):
            params[key.removeprefix(tracking.RESOLVED_PREFIX)] = value
            del params[key]
    return params


def _model_order(model: str) -> tuple[int, str]:
    names = MODELS.names()
    return (names.index(model) if model in names else len(names), model)


@dataclass
class Cell:
    """The test runs of one (data set, model, training fraction), one per trained model (seed)."""

    dataset: str
    model: str
    perc: float
    runs: list[Any]  # test runs, newest first
    seeds: list[str]

    @property
    def run_ids(self) -> tuple[str, ...]:
        """The test runs' ids."""
        return tuple(r.info.run_id for r in self.runs)

    def num(self, metric: str, digits: int = 3, ci: tuple[str, str] | None = None) -> Num:
        """``metric`` of the cell: one run's value with its CI (metrics ``ci``, default
        ``<metric>_ci_low`` / ``_ci_high``), or the mean ± sd over its runs."""
        low, high = ci or (f"{metric}_ci_low", f"{metric}_ci_high")
        have = [r for r in self.runs if metric in r.data.metrics]
        if not have:
            return Num(math.nan, (), metric, digits=digits)
        ids = tuple(r.info.run_id for r in have)
        values = np.array([r.data.metrics[metric] for r in have], dtype=np.float64)
        if len(have) == 1:
            m = have[0].data.metrics
            return Num(
                float(values[0]),
                ids,
                metric,
                ci_low=float(m.get(low, math.nan)),
                ci_high=float(m.get(high, math.nan)),
                digits=digits,
            )
        return Num(float(values.mean()), ids, metric, sd=float(values.std(ddof=1)), digits=digits)

    def param_num(self, key: str, digits: int = 3) -> Num:
        """A numeric param of the test runs (e.g. a threshold), as :meth:`num` does for metrics."""
        values, ids = [], []
        for run in self.runs:
            try:
                values.append(float(run.data.params[key]))
                ids.append(run.info.run_id)
            except (KeyError, ValueError):
                continue
        if not values:
            return Num(math.nan, (), key, digits=digits)
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        return Num(float(np.mean(values)), tuple(ids), key, sd=sd, digits=digits)


@dataclass
class Experiment:
    """Every run of one experiment, sorted by kind; the cells its test runs make up."""

    id: str
    name: str
    runs: list[Any]  # newest first
    seeds: dict[str, str] = field(default_factory=dict)  # train run id → seed
    cells: list[Cell] = field(default_factory=list)

    def finished(self, kind: str) -> list[Any]:
        """The FINISHED runs of one kind, newest first."""
        return [r for r in self.runs if _tag(r, tracking.TAG_KIND) == kind and r.info.status == "FINISHED"]

    def test_runs(self) -> list[Any]:
        """Finished test runs of the test split."""
        return [r for r in self.finished("test") if _tag(r, tracking.TAG_SPLIT, "test") == "test"]

    @property
    def datasets(self) -> list[str]:
        """The data sets of the cell runs, in first-seen order."""
        kinds = set(CELL_KINDS)
        return list(
            dict.fromkeys(_tag(r, tracking.TAG_DATASET, "?") for r in self.runs if _tag(r, tracking.TAG_KIND) in kinds)
        )


def build_cells(test_runs: Sequence[Any], seeds: Mapping[str, str]) -> list[Cell]:
    """Group test runs into cells: per trained model (its ``medattn.source_run``) the newest test run.

    Args:
        test_runs: finished test runs of the test split, newest first.
        seeds: ``{train run id: seed}``; a test run whose source is unknown counts as its own seed.
    """
    cells: dict[tuple[str, str, float], Cell] = {}
    for run in test_runs:
        key = (_tag(run, tracking.TAG_DATASET, "?"), _tag(run, tracking.TAG_MODEL, "?"), _frac(run))
        source = _tag(run, tracking.TAG_SOURCE_RUN) or run.info.run_id
        cell = cells.setdefault(key, Cell(*key, runs=[], seeds=[]))
        seed = seeds.get(source) or source
        if seed in cell.seeds:
            continue  # an older test of the same seed's model
        cell.seeds.append(seed)
        cell.runs.append(run)
    return sorted(cells.values(), key=lambda c: (c.dataset, _model_order(c.model), c.perc))


def load_experiment(name: str, uri: str) -> Experiment:
    """Every run of experiment ``name``.

    Raises:
        MedattnError: the experiment does not exist, or holds no finished train, test or interpret run.
    """
    exp_id = tracking.active_experiment_id(name)
    if exp_id is None:
        raise MedattnError(
            f"experiment {name!r} does not exist in {tracking.redact_url(uri)!r}; check --experiment "
            "(the MLflow UI lists the experiments)."
        )
    runs = tracking.search_runs([exp_id], "")
    exp = Experiment(exp_id, name, runs)
    if not any(exp.finished(k) for k in CELL_KINDS):
        raise MedattnError(
            f"experiment {name!r} has no finished train, test or interpret run to report on; "
            "run medattn train and medattn test (or medattn demo) first."
        )
    exp.seeds = {r.info.run_id: _params(r).get("seed", "") for r in exp.finished("train")}
    exp.cells = build_cells(exp.test_runs(), exp.seeds)
    return exp


class _Artifacts:
    """Downloads of small artifacts into one folder the report owns (removed when it is done)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.n = 0

    def folder(self) -> Path:
        self.n += 1
        path = self.workdir / f"d{self.n}"
        path.mkdir()
        return path

    def csv(self, run_id: str, artifact: str) -> pd.DataFrame | None:
        """A CSV artifact, or ``None`` when the run has none."""
        try:
            return pd.read_csv(tracking.download(run_id, artifact, self.folder()), dtype={"id": str})
        except MedattnError:
            return None

    def text(self, run_id: str, artifact: str) -> str | None:
        """A text artifact, or ``None`` when the run has none."""
        try:
            return tracking.download(run_id, artifact, self.folder()).read_text(errors="replace")
        except MedattnError:
            return None
