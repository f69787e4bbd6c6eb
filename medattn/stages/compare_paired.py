"""Paired statistics of the compare stage: each attention variant against its plain backbone on the
same test images (does attention help?): the paired bootstrap ΔAUC with its CI and p-value, the
spread over seeds, and a verdict in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medattn import plots, tracking
from medattn.metrics import PairedDifference, paired_bootstrap, roc_auc
from medattn.models import MODELS
from medattn.stages import clinical
from medattn.stages.compare_tables import _fraction

#: Bootstrap resamples of the paired ΔAUC and their seed.
PAIRED_N_BOOT, PAIRED_SEED = 1000, 0
#: Columns of :func:`paired_table`.
PAIRED_COLUMNS = (
    "variant", "backbone", "attention", "architecture", "perc_train", "n_images", "n_seeds_variant",
    "n_seeds_backbone", "delta_auc", "ci_low", "ci_high", "p_value", "n_seed_pairs", "seed_delta_mean",
    "seed_delta_sd",
)  # fmt: skip


def plain_backbone(model: str) -> str | None:
    """The registered model with ``model``'s backbone and no attention (``None``: not an attention CNN)."""
    if model not in MODELS.names():
        return None
    spec = MODELS.get(model)
    if spec.attention in (None, "self-attention"):
        return None
    return next(
        (n for n in MODELS.names() if MODELS.get(n).backbone == spec.backbone and not MODELS.get(n).attention), None
    )


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    """Class probabilities (N, C) of a ``predictions.csv``: its ``prob_<k>`` columns, else ``1 - score, score``."""
    probs = sorted((c for c in frame.columns if c.startswith("prob_")), key=lambda c: int(c.split("_")[1]))
    if probs:
        return frame[probs].to_numpy(dtype=np.float64)
    score = frame["score"].to_numpy(dtype=np.float64)
    return np.stack([1.0 - score, score], 1)


def _seed_deltas(y, variant: Mapping[str, np.ndarray], backbone: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per seed present on both sides: AUC(variant) − AUC(backbone) on the shared images."""
    return np.array([roc_auc(y, variant[s]) - roc_auc(y, backbone[s]) for s in variant if s in backbone])


def paired_row(variant: str, backbone: str, perc: float, runs_v: Mapping[str, pd.DataFrame], runs_b) -> dict[str, Any]:
    """One row of :func:`paired_table`: the paired bootstrap of ΔAUC on the images both cells predicted.

    Args:
        variant: attention model name.
        backbone: its plain backbone.
        perc: training-data fraction of both cells.
        runs_v: ``{seed: predictions frame}`` of the variant (one per trained seed).
        runs_b: the same for the backbone.
    """
    frames = [
        f.assign(id=f["id"].astype(str)).drop_duplicates("id").set_index("id")
        for f in (*runs_v.values(), *runs_b.values())
    ]
    ids = sorted(set.intersection(*(set(f.index) for f in frames)))
    y = frames[0].loc[ids, "label"].to_numpy(dtype=np.int64)
    side_v = {s: probabilities(f.loc[ids]) for s, f in zip(runs_v, frames[: len(runs_v)], strict=True)}
    side_b = {s: probabilities(f.loc[ids]) for s, f in zip(runs_b, frames[len(runs_v) :], strict=True)}
    if ids:
        res = paired_bootstrap(
            y, list(side_v.values()), list(side_b.values()), roc_auc, n_boot=PAIRED_N_BOOT, seed=PAIRED_SEED
        )
        per_seed = _seed_deltas(y, side_v, side_b)
    else:  # no test image in common: nothing to pair
        res, per_seed = PairedDifference(math.nan, math.nan, math.nan, math.nan, 0), np.array([])
    spec = MODELS.get(variant)
    return {
        "variant": variant, "backbone": backbone, "attention": spec.attention.upper(), "architecture": spec.architecture,
        "perc_train": perc, "n_images": len(ids), "n_seeds_variant": len(runs_v), "n_seeds_backbone": len(runs_b),
        "delta_auc": res.delta, "ci_low": res.ci_low, "ci_high": res.ci_high, "p_value": res.p_value,
        "n_seed_pairs": len(per_seed),
        "seed_delta_mean": float(per_seed.mean()) if len(per_seed) else math.nan,
        "seed_delta_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
    }  # fmt: skip


def paired_table(cells: Mapping[tuple[str, float], Mapping[str, pd.DataFrame]]) -> pd.DataFrame:
    """ΔAUC of every attention variant against its plain backbone, per training-data fraction.

    Args:
        cells: ``{(model, perc_train): {seed: predictions frame}}`` (``predictions.csv`` of each
            trained seed's test run: ``id``, ``label``, ``prob_<k>`` or ``score``).

    Returns:
        One row per (variant, fraction) whose backbone has a cell of the same fraction, columns
        :data:`PAIRED_COLUMNS`; ``delta_auc`` with its paired bootstrap 95 % CI and p-value
        (:func:`medattn.metrics.paired_bootstrap`, images joined on id, seeds averaged per side),
        and with several seeds on both sides the mean ± sd of the per-seed ΔAUC.
    """
    rows = []
    for (model, perc), runs in sorted(cells.items()):
        backbone = plain_backbone(model)
        if backbone is not None and (backbone, perc) in cells:
            rows.append(paired_row(model, backbone, perc, runs, cells[(backbone, perc)]))
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def delta_metric(row: Mapping[str, Any]) -> str:
    """``delta_auc_<variant>_vs_<backbone>`` (``_p<fraction>`` added below 100 % of the training data)."""
    suffix = "" if float(row["perc_train"]) >= 1.0 else f"_p{float(row['perc_train']):g}"
    return f"delta_auc_{row['variant']}_vs_{row['backbone']}{suffix}"


def paired_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The paired table as metrics: ``delta_auc_<v>_vs_<b>`` and its ``_ci_low``, ``_ci_high``, ``_p``
    (plus ``_seeds_mean`` / ``_seeds_sd`` with several seeds)."""
    out: dict[str, float] = {}
    for row in table.to_dict("records"):
        name = delta_metric(row)
        out.update({name: row["delta_auc"], f"{name}_ci_low": row["ci_low"], f"{name}_ci_high": row["ci_high"]})
        out[f"{name}_p"] = row["p_value"]
        if row["n_seed_pairs"] > 1:
            out.update({f"{name}_seeds_mean": row["seed_delta_mean"], f"{name}_seeds_sd": row["seed_delta_sd"]})
    return out


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "\N{MINUS SIGN}")


def verdict(row: Mapping[str, Any], alpha: float = 0.05) -> str:
    """One sentence per comparison, e.g. ``SE on ResNet-50: ΔAUC +0.012 [−0.020, +0.041], p = 0.43 — no
    evidence of a difference`` (the two-sided p-value against ``alpha``; the CI is the paired bootstrap's)."""
    p = float(row["p_value"])
    if not np.isfinite(p):
        finding = "not estimable (too few images of a class)"
    elif p < alpha:
        finding = f"evidence that {row['attention']} {'improves' if row['delta_auc'] > 0 else 'lowers'} the AUC"
    else:
        finding = "no evidence of a difference"
    frac = "" if float(row["perc_train"]) >= 1.0 else f" ({100 * float(row['perc_train']):g} % of the training data)"
    text = (
        f"{row['attention']} on {row['architecture']}{frac}: \N{GREEK CAPITAL LETTER DELTA}AUC {_signed(row['delta_auc'])} "
        f"[{_signed(row['ci_low'])}, {_signed(row['ci_high'])}], p = {p:.2g} \N{EM DASH} {finding}"
    )
    if row["n_seed_pairs"] > 1:
        text += f"; per seed {_signed(row['seed_delta_mean'])} ± {row['seed_delta_sd']:.3f} (mean ± sd, {row['n_seed_pairs']} seeds)"
    return text


def _train_seeds(exp_id: str) -> dict[str, str]:
    """``{train run id: seed}`` of the experiment's training runs."""
    return {
        r.info.run_id: r.data.params.get("seed", "")
        for r in tracking.search_runs([exp_id], tracking.finished_filter("train"))
    }


def _prediction_cells(test_runs: Sequence[Any], seeds: Mapping[str, str], workdir: Path) -> dict:
    """``{(model, perc_train): {seed: predictions frame}}``: per trained model its newest test run.

    Test runs of the same source (training) run count once; a source run whose seed is unknown
    counts as its own seed (its run id).
    """
    cells: dict[tuple[str, float], dict[str, pd.DataFrame]] = {}
    for run in test_runs:  # newest first
        tags = run.data.tags
        key = (tags.get(tracking.TAG_MODEL, "?"), _fraction(tags.get(tracking.TAG_PERC_TRAIN)))
        if plain_backbone(key[0]) is None and all(plain_backbone(m) != key[0] for m in MODELS.names()):
            continue  # neither side of a comparison
        source = tags.get(tracking.TAG_SOURCE_RUN, "") or run.info.run_id
        seed = seeds.get(source) or source
        if seed not in cells.setdefault(key, {}):
            cells[key][seed] = tracking.read_csv(run.info.run_id, tracking.PREDICTIONS, workdir)
            cells[key][seed].attrs["params"] = dict(run.data.params)  # operating-point thresholds
    return cells


def _log_paired(exp_id: str, test_runs: Sequence[Any], workdir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Compute, log and return the paired table and its artifacts (nothing when no pair exists)."""
    cells = _prediction_cells(test_runs, _train_seeds(exp_id), workdir)
    table = paired_table(cells)
    if table.empty:
        return table, []
    tracking.log_metrics(tracking.finite(paired_metrics(table)))
    tracking.log_text(table.to_csv(index=False), tracking.PAIRED_CSV)
    rows = [{"label": f"{r['variant']} vs {r['backbone']}" + ("" if r["perc_train"] >= 1 else f" ({100 * r['perc_train']:g} %)"),
             "delta": r["delta_auc"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p_value": r["p_value"]}
            for r in table.to_dict("records")]  # fmt: skip
    tracking.log_figure(plots.forest_figure(rows), tracking.FOREST_FIGURE)
    # ΔECE and Δsensitivity at the validation-chosen operating points, like ΔAUC
    clinical_artifacts = clinical.log_paired_clinical(cells, plain_backbone, probabilities)
    return table, [tracking.PAIRED_CSV, tracking.FOREST_FIGURE, *clinical_artifacts]
