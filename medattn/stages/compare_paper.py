"""The paper's table of the compare stage: data set × model × training fraction, mean ± sd over
seeds, next to the paired ΔAUC of each attention variant against its backbone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medattn import tracking
from medattn.stages.compare_paired import _prediction_cells, _signed, paired_table
from medattn.stages.compare_tables import _fraction


def seed_summary(test_runs: Sequence[Any], seeds: Mapping[str, str], metric: str = "test_auc") -> pd.DataFrame:
    """``metric`` per data set × model × training fraction over the trained seeds.

    One test run per training run counts (the newest; ``test_runs`` newest first); a training run
    whose seed is unknown counts as its own seed.

    Returns:
        Columns ``dataset, model, perc_train, n_seeds, mean, sd`` (sd NaN for one seed), sorted.
    """
    values: dict[tuple[str, str, float], dict[str, float]] = {}
    for run in test_runs:
        tags = run.data.tags
        if metric not in run.data.metrics:
            continue
        key = (
            tags.get(tracking.TAG_DATASET, "?"),
            tags.get(tracking.TAG_MODEL, "?"),
            _fraction(tags.get(tracking.TAG_PERC_TRAIN)),
        )
        source = tags.get(tracking.TAG_SOURCE_RUN, "") or run.info.run_id
        values.setdefault(key, {}).setdefault(seeds.get(source) or source, float(run.data.metrics[metric]))
    rows = [
        {
            "dataset": d, "model": m, "perc_train": p, "n_seeds": len(v),
            "mean": float(np.mean(list(v.values()))),
            "sd": float(np.std(list(v.values()), ddof=1)) if len(v) > 1 else math.nan,
        }
        for (d, m, p), v in values.items()
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["dataset", "model", "perc_train", "n_seeds", "mean", "sd"])
    return frame.sort_values(["dataset", "model", "perc_train"], kind="stable").reset_index(drop=True)


def paired_by_dataset(test_runs: Sequence[Any], seeds: Mapping[str, str], workdir: Path) -> dict[str, pd.DataFrame]:
    """:func:`paired_table` of each data set's test runs (a comparison never crosses data sets)."""
    by: dict[str, list[Any]] = {}
    for run in test_runs:
        by.setdefault(run.data.tags.get(tracking.TAG_DATASET, "?"), []).append(run)
    return {d: paired_table(_prediction_cells(runs, seeds, workdir)) for d, runs in sorted(by.items())}


def _percent(p: float) -> str:
    return f"{100 * p:g} %"


def paper_markdown(summary: pd.DataFrame, paired: Mapping[str, pd.DataFrame], metric: str = "test_auc") -> str:
    """The grid's answer as two markdown tables: ``metric`` mean ± sd over seeds (n seeds in brackets)
    per data set × model, one column per training fraction; then ΔAUC of each attention variant against
    its plain backbone per data set and fraction, with its paired bootstrap 95 % CI (and a ``*`` when
    p < 0.05)."""
    if summary.empty:
        return ""
    fractions = sorted(summary["perc_train"].unique())
    head = ["dataset", "model", *(_percent(p) for p in fractions)]
    lines = [
        f"{metric} on the test split, mean ± sd over seeds (number of seeds):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for (dataset, model), group in summary.groupby(["dataset", "model"], sort=True):
        cells = []
        for p in fractions:
            hit = group[group["perc_train"] == p]
            if hit.empty:
                cells.append("")
                continue
            r = hit.iloc[0]
            sd = f" ± {r['sd']:.3f}" if np.isfinite(r["sd"]) else ""
            cells.append(f"{r['mean']:.3f}{sd} ({int(r['n_seeds'])})")
        lines.append("| " + " | ".join([dataset, model, *cells]) + " |")
    rows = [(d, r) for d, table in paired.items() for r in table.to_dict("records")]
    if rows:
        head = ["dataset", "variant", "backbone", *(_percent(p) for p in fractions)]
        lines += [
            "",
            "\N{GREEK CAPITAL LETTER DELTA}AUC of each attention variant against its backbone "
            "(paired bootstrap over the shared test images, seeds averaged; 95 % CI; * p < 0.05):",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
        ]
        pairs = sorted({(d, r["variant"], r["backbone"]) for d, r in rows})
        for d, variant, backbone in pairs:
            cells = []
            for p in fractions:
                hit = [r for dd, r in rows if (dd, r["variant"], r["perc_train"]) == (d, variant, p)]
                if not hit or not np.isfinite(hit[0]["delta_auc"]):
                    cells.append("")
                    continue
                r = hit[0]
                star = "*" if np.isfinite(r["p_value"]) and r["p_value"] < 0.05 else ""
                cells.append(f"{_signed(r['delta_auc'])} [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]{star}")
            lines.append("| " + " | ".join([d, variant, backbone, *cells]) + " |")
    return "\n".join(lines)


def paper_table(test_runs: Sequence[Any], workdir: Path, metric: str = "test_auc") -> str:
    """:func:`paper_markdown` of finished test runs (their training runs' seeds looked up in the store)."""
    seeds = _seeds_of(test_runs)
    return paper_markdown(seed_summary(test_runs, seeds, metric), paired_by_dataset(test_runs, seeds, workdir), metric)


def _seeds_of(test_runs: Sequence[Any]) -> dict[str, str]:
    """``{training run id: seed}`` of the training runs the test runs read."""
    out = {}
    for run in test_runs:
        source = run.data.tags.get(tracking.TAG_SOURCE_RUN)
        if source and source not in out:
            out[source] = tracking.get_run(source).data.params.get("seed", "")
    return out
