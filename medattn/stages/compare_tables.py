"""The compare stage's tables, pure functions of runs and frames: the test metrics per model variant
× training fraction (with the known ceiling where the data set has one), the explanation scores per
model × method, and the newest test run per model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medattn import tracking
from medattn.explain.sanity import HIGHER_IS_BETTER

#: Test metrics put in the comparison table (those a run lacks are left empty); the calibration and
#: operating-point ones are docs/evaluation.md's.
TABLE_METRICS = (
    "auc", "balanced_accuracy", "accuracy", "f1", "sensitivity", "specificity", "loss",
    "ece", "brier", "sens_at_spec90", "spec_at_sens90",
)  # fmt: skip
#: The known ceiling where the data set has one (``oracle_prob``): columns of the table when logged.
ORACLE_METRICS = ("oracle_auc", "oracle_gap")


def _fraction(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "", "None") else 1.0
    except ValueError:
        return math.nan


def results_table(runs: Sequence[Any], metric: str = "test_auc") -> pd.DataFrame:
    """Tidy comparison table of test runs: one row per (model variant, training-data fraction).

    When a cell has several finished test runs the newest is kept (``runs`` newest first) and
    ``n_runs`` counts them.

    Args:
        runs: ``mlflow.entities.Run`` test runs, newest first.
        metric: The headline metric (``test_*``); its CI columns follow it.

    Returns:
        Columns ``model``, ``perc_train``, ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high``,
        then ``test_<m>`` for :data:`TABLE_METRICS` and their CIs where logged, the oracle's
        ``test_oracle_auc`` and ``test_oracle_gap`` with CIs where any run logged them, ``n_images``,
        ``n_runs``, ``run_id``, ``source_run``; sorted by model then fraction.
    """
    rows: dict[tuple[str, float], dict[str, Any]] = {}
    counts: dict[tuple[str, float], int] = {}
    names = [metric, *(f"test_{m}" for m in TABLE_METRICS if f"test_{m}" != metric)]
    if any("test_oracle_auc" in run.data.metrics for run in runs):
        names += [f"test_{m}" for m in ORACLE_METRICS]
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        key = (tags.get(tracking.TAG_MODEL, "?"), _fraction(tags.get(tracking.TAG_PERC_TRAIN)))
        counts[key] = counts.get(key, 0) + 1
        if key in rows:
            continue
        row: dict[str, Any] = {"model": key[0], "perc_train": key[1]}
        for name in names:
            row[name] = metrics.get(name, math.nan)
            for side in ("ci_low", "ci_high"):
                if f"{name}_{side}" in metrics or name == metric:
                    row[f"{name}_{side}"] = metrics.get(f"{name}_{side}", math.nan)
        row["n_images"] = metrics.get("test_n_images", math.nan)
        row.update(run_id=run.info.run_id, source_run=tags.get(tracking.TAG_SOURCE_RUN, ""))
        rows[key] = row
    table = pd.DataFrame(list(rows.values()))
    if table.empty:
        return table
    table.insert(len(table.columns) - 2, "n_runs", [counts[(r["model"], r["perc_train"])] for r in rows.values()])
    return table.sort_values(["model", "perc_train"], kind="stable").reset_index(drop=True)


def oracle_reference(table: pd.DataFrame, metric: str) -> tuple[float, float, float] | None:
    """The oracle's AUC as the AUC figure's reference line: ``(value, low, high)`` (mean of the test
    runs' ``test_oracle_auc``, the widest CI) when ``metric`` is ``test_auc`` and any run logged it."""
    if metric != "test_auc" or "test_oracle_auc" not in table.columns:
        return None
    values = table["test_oracle_auc"].dropna()
    if values.empty:
        return None
    low = table.get("test_oracle_auc_ci_low", pd.Series(dtype=float)).min()
    high = table.get("test_oracle_auc_ci_high", pd.Series(dtype=float)).max()
    return float(values.mean()), float(low), float(high)


def to_markdown(table: pd.DataFrame, *, digits: int = 3) -> str:
    """A GitHub-style markdown table; floats with ``digits`` decimals, NaN as empty cells."""

    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


#: Scores of ``xai_table`` rows: the evaluation's scores and the trained-vs-randomised rank correlation.
XAI_SCORES = (*HIGHER_IS_BETTER, "randomized_spearman")


def _xai_key(key: str) -> tuple[str, str] | None:
    """``xai_<source>_<score>`` → ``(source, score)``; ``None`` for CIs, verdicts and counts."""
    for score in XAI_SCORES:
        if key.startswith("xai_") and key.endswith(f"_{score}") and len(key) > len(score) + 5:
            return key[4 : -len(score) - 1], score
    return None


def xai_table(runs: Sequence[Any]) -> pd.DataFrame:
    """Explanation scores of interpret runs in long form: ``model, method, score, value, ci_low,
    ci_high, run_id``.

    One interpret run per model is used: the one of the largest training-data fraction, newest
    first among those. ``method`` is an explanation method (spelled as in the run's ``methods``
    param), a sanity baseline ``baseline_<b>`` (``random``, ``input``, ``centre``,
    ``edge``, ``randomized_<method>``) or, for older runs, ``random``; ``score`` one of
    :data:`XAI_SCORES`. The bootstrap CI bounds are columns (NaN when not logged); pass verdicts
    and image counts are not rows.
    """
    chosen = latest_per_model(runs)
    rows = []
    for model, run in chosen.items():
        spelled = {m.replace("-", "_"): m for m in run.data.params.get("methods", "").split(",") if m}
        metrics = run.data.metrics
        for key, value in sorted(metrics.items()):
            parsed = _xai_key(key)
            if parsed is None:
                continue
            source, score = parsed
            rows.append(
                {
                    "model": model,
                    "method": spelled.get(source, source),
                    "score": score,
                    "value": float(value),
                    "ci_low": float(metrics.get(f"{key}_ci_low", math.nan)),
                    "ci_high": float(metrics.get(f"{key}_ci_high", math.nan)),
                    "run_id": run.info.run_id,
                }
            )
    return pd.DataFrame(rows, columns=["model", "method", "score", "value", "ci_low", "ci_high", "run_id"])


def latest_per_model(runs: Sequence[Any]) -> dict[str, Any]:
    """``{model: run}``: per model variant, the run of the largest fraction, newest among those.

    Args:
        runs: Runs newest first, tagged ``medattn.model`` and ``medattn.perc_train``.
    """
    best: dict[str, Any] = {}
    for run in runs:
        model = run.data.tags.get(tracking.TAG_MODEL, "?")
        frac = _fraction(run.data.tags.get(tracking.TAG_PERC_TRAIN))
        if model not in best or frac > _fraction(best[model].data.tags.get(tracking.TAG_PERC_TRAIN)):
            best[model] = run
    return dict(sorted(best.items()))
