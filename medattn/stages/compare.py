"""The ``compare`` stage: the variants of an experiment side by side (``medattn compare``).

Gathers the finished test runs of an experiment (tag ``medattn.kind=test``, split ``test``) into a
tidy table per model variant and training-data fraction, draws the low-data-regimen figure, the
explanation scores of the interpret runs and a grid of the same test images across models ×
methods, optionally selects cases (images where all models share an outcome, or disagree), and
logs everything to a new run tagged ``medattn.kind=compare``. Every input is an MLflow metric, tag
or artifact: the data folder is not needed.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medattn import lazy, plots, tracking
from medattn.config import TrackingPart, at_least, check_alpha
from medattn.errors import ConfigError, MedattnError
from medattn.explain.evaluation import HIGHER_IS_BETTER
from medattn.metrics import PairedDifference, paired_bootstrap, roc_auc
from medattn.models import MODELS
from medattn.stages import clinical

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help

#: Choices of ``compare --cases``.
CASES = ("tp", "tn", "fp", "fn", "agree", "disagree")


@dataclass(frozen=True, kw_only=True)
class CompareConfig(TrackingPart):
    """Options of ``medattn compare``."""

    experiment: str = "medattn-demo"
    metric: str = "test_auc"
    cases: str | None = None
    max_images: int = 4
    alpha_overlay: float = 0.5

    def __post_init__(self) -> None:  # noqa: D105
        if self.cases is not None and self.cases not in CASES:
            raise ConfigError(f"--cases must be one of {', '.join(CASES)}, got {self.cases!r}.")
        at_least("max_images", self.max_images, 1, "at least 1")
        if not self.metric.startswith("test_"):
            raise ConfigError(f"--metric must be a test metric such as test_auc, got {self.metric!r}.")
        check_alpha(self.alpha_overlay)


#: Test metrics put in the comparison table (those a run lacks are left empty); the calibration and
#: operating-point ones are docs/evaluation.md's.
TABLE_METRICS = (
    "auc", "balanced_accuracy", "accuracy", "f1", "sensitivity", "specificity", "loss",
    "ece", "brier", "sens_at_spec90", "spec_at_sens90",
)  # fmt: skip
#: The known ceiling where the data set has one (``oracle_prob``): columns of the table when logged.
ORACLE_METRICS = ("oracle_auc", "oracle_gap")


# =============================================================================================
# tables (pure functions of runs / frames)
# =============================================================================================
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


def case_ids(predictions: Mapping[str, pd.DataFrame], case: str) -> list[str]:
    """Image ids on which all models share an outcome (or disagree), as the case-selection script did.

    Args:
        predictions: ``{model: frame}`` of each model's ``predictions.csv`` (``id``, ``label``,
            ``prediction``); only ids present for every model count.
        case: ``tp`` / ``tn`` / ``fp`` / ``fn`` (binary: label and prediction 1/1, 0/0, 0/1, 1/0 for
            every model), ``agree`` (every model predicts the same class) or ``disagree`` (not all
            models predict the same class).

    Returns:
        The ids in the order of the first model's predictions.

    Raises:
        ConfigError: If ``case`` is unknown, or tp/tn/fp/fn is asked of a multiclass prediction.
    """
    if case not in CASES:
        raise ConfigError(f"--cases must be one of {', '.join(CASES)}, got {case!r}.")
    if not predictions:
        return []
    frames = {m: f.assign(id=f["id"].astype(str)).set_index("id") for m, f in predictions.items()}
    first = next(iter(frames.values()))
    common = [i for i in first.index if all(i in f.index for f in frames.values())]
    preds = pd.DataFrame({m: f.loc[common, "prediction"].astype(int) for m, f in frames.items()}, index=common)
    labels = first.loc[common, "label"].astype(int)
    if case == "agree":
        keep = preds.nunique(axis=1) == 1
    elif case == "disagree":
        keep = preds.nunique(axis=1) > 1
    else:
        if labels.max() > 1 or preds.to_numpy().max() > 1:
            raise ConfigError(f"--cases {case} needs a binary task; use agree or disagree for multiclass.")
        want_label, want_pred = {"tp": (1, 1), "tn": (0, 0), "fp": (0, 1), "fn": (1, 0)}[case]
        keep = (labels == want_label) & (preds == want_pred).all(axis=1)
    return [i for i, k in zip(common, keep, strict=True) if k]


# =============================================================================================
# paired statistics: each attention variant against its plain backbone (does attention help?)
# =============================================================================================
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


# =============================================================================================
# the paper's table: data set × model × fraction, mean ± sd over seeds, paired ΔAUC
# =============================================================================================
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


# =============================================================================================
# the command
# =============================================================================================
@dataclass(frozen=True)
class CompareResult:
    """Outcome of :func:`compare`: the compare run, its tables and what it logged."""

    run_id: str
    experiment: str
    table: pd.DataFrame
    xai: pd.DataFrame
    cases: list[str] | None
    artifacts: list[str]
    tracking_uri: str
    paired: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PAIRED_COLUMNS)))
    paper: str = ""

    @property
    def verdicts(self) -> list[str]:
        """One sentence per attention variant vs its plain backbone (:func:`verdict`)."""
        return [verdict(row) for row in self.paired.to_dict("records")]


def _grid_across_models(interp: Mapping[str, Any], ids: Sequence[str], workdir: Path, alpha: float, title: str):
    """Grid of ``ids`` (rows) × (model, method) (columns) from the interpret runs.

    Only ids that every interpret run explained are drawn; returns ``(figure or None, ids drawn)``.
    """
    readers = {m: tracking.SaliencyReader(r.info.run_id, workdir) for m, r in interp.items()}
    indexes = {m: rd.index() for m, rd in readers.items()}
    drawn = [i for i in ids if all((ix["id"] == i).any() for ix in indexes.values())]
    if not drawn:
        return None, []
    columns = [(m, meth) for m, ix in indexes.items() for meth in dict.fromkeys(ix["method"])]
    images, maps, labels = [], [], []
    for image_id in drawn:
        row = []
        for model, method in columns:
            ix = indexes[model]
            hit = ix[(ix["id"] == image_id) & (ix["method"] == method)]
            row.append(readers[model].load_map(hit.iloc[0]["file"]) if len(hit) else None)
        first_model = next(iter(indexes))
        ix0 = indexes[first_model]
        first = ix0[ix0["id"] == image_id].iloc[0]
        images.append(readers[first_model].load_input(first["input"]))
        maps.append(row)
        labels.append(f"{image_id}\nlabel {first['label']}")
    fig = plots.saliency_grid_figure(
        images, maps, row_labels=labels, col_labels=[f"{m}\n{k}" for m, k in columns], alpha_overlay=alpha, title=title
    )
    return fig, drawn


def _test_runs(cfg: CompareConfig, uri: str) -> tuple[str, list[Any]]:
    """The experiment id and its finished test runs of the test split.

    Raises:
        MedattnError: no such experiment, no such runs, or none logged the metric.
    """
    exp_id = tracking.active_experiment_id(cfg.experiment)
    if exp_id is None:
        raise MedattnError(f"experiment {cfg.experiment!r} does not exist in {uri!r}; check --experiment.")
    runs = [
        r
        for r in tracking.search_runs([exp_id], tracking.finished_filter("test"))
        if r.data.tags.get(tracking.TAG_SPLIT, "test") == "test"
    ]
    if not runs:
        raise MedattnError(
            f"experiment {cfg.experiment!r} has no finished test runs on the test split; run medattn test first."
        )
    if not any(cfg.metric in r.data.metrics for r in runs):
        raise MedattnError(
            f"no test run of experiment {cfg.experiment!r} logged {cfg.metric!r}; try --metric test_auc."
        )
    return exp_id, runs


def _case_frame(test_runs: Sequence[Any], case: str, workdir: Path) -> tuple[list[str], pd.DataFrame]:
    """The selected ids and ``cases/<case>.csv``: id, label, one prediction column per model."""
    latest = latest_per_model(test_runs)
    preds = {m: tracking.read_csv(r.info.run_id, tracking.PREDICTIONS, workdir) for m, r in latest.items()}
    selected = case_ids(preds, case)
    first = next(iter(preds.values())).assign(id=lambda f: f["id"].astype(str)).set_index("id")
    frame = pd.DataFrame({"id": selected, "label": [int(first.loc[i, "label"]) for i in selected]})
    for model, p in preds.items():
        f = p.assign(id=p["id"].astype(str)).set_index("id")
        frame[f"prediction_{model}"] = [int(f.loc[i, "prediction"]) for i in selected]
    return selected, frame


def _log_xai(cfg: CompareConfig, xai: pd.DataFrame, interp: Mapping[str, Any], workdir: Path) -> list[str]:
    tracking.log_text(xai.to_csv(index=False), tracking.XAI_CSV)
    tracking.log_figure(plots.xai_scores_figure(xai.to_dict("records")), tracking.XAI_FIGURE)
    logged = [tracking.XAI_CSV, tracking.XAI_FIGURE]
    first_ids = list(
        dict.fromkeys(tracking.SaliencyReader(next(iter(interp.values())).info.run_id, workdir).index()["id"])
    )
    fig, _ = _grid_across_models(
        interp, first_ids[: cfg.max_images], workdir, cfg.alpha_overlay, "The same test images across models × methods"
    )
    if fig is not None:
        tracking.log_figure(fig, tracking.COMPARE_GRID_FIGURE)
        logged.append(tracking.COMPARE_GRID_FIGURE)
    return logged


def _log_cases(cfg: CompareConfig, selected: list[str], frame: pd.DataFrame, interp, workdir: Path) -> list[str]:
    tracking.log_text(frame.to_csv(index=False), tracking.cases_csv(cfg.cases))
    tracking.log_metrics({f"cases_{cfg.cases}": float(len(selected))})
    logged = [tracking.cases_csv(cfg.cases)]
    if interp and selected:
        fig, _ = _grid_across_models(
            interp, selected[: cfg.max_images], workdir, cfg.alpha_overlay, f"Cases: {cfg.cases}"
        )
        if fig is not None:
            tracking.log_figure(fig, tracking.cases_figure(cfg.cases))
            logged.append(tracking.cases_figure(cfg.cases))
    return logged


def compare(cfg: CompareConfig) -> CompareResult:
    """Compare the variants of an experiment and log the result to a new ``compare`` run.

    Logs ``comparison.csv`` (:func:`results_table`), ``figures/low_data.png`` (``cfg.metric`` against
    the % of training data, one line per variant; for ``test_auc`` on a data set with a known
    ceiling, the oracle's AUC as a dashed reference line, :func:`oracle_reference`), and when interpret runs exist
    ``xai_scores.csv`` (:func:`xai_table`), ``figures/xai_scores.png`` and
    ``figures/saliency_grid.png`` (the first ``max_images`` images every model explained, across
    models × methods); for every attention variant with a plain backbone in the experiment,
    ``delta_auc_<variant>_vs_<backbone>`` with ``_ci_low``, ``_ci_high``, ``_p`` (paired bootstrap on
    the shared test images, :func:`paired_table`), ``paired_auc.csv`` and ``figures/forest_auc.png``, and the
    same pairs' ΔECE and Δsensitivity at 90 % / 95 % specificity (``delta_ece_<v>_vs_<b>``,
    ``delta_sens_at_spec90_<v>_vs_<b>``, ... and ``paired_clinical.csv``); the test runs' subgroup
    tables side by side as ``subgroups_by_model.csv``; ``paper_table.md``, the paper-style tables of
    :func:`paper_markdown` (mean ± sd over seeds, paired ΔAUC per data set). With ``cases``: ``cases/<case>.csv`` (id, label, one prediction column per
    model) and, for the selected ids that every interpret run explained, ``figures/cases_<case>.png``.
    Models for the explanation and case parts are each variant's run of the largest fraction.

    Raises:
        MedattnError: unknown experiment, no finished test runs, or a metric no test run logged.
    """
    uri = tracking.connect(cfg.tracking_uri)
    exp_id, test_runs = _test_runs(cfg, uri)
    table = results_table(test_runs, cfg.metric)
    interp = latest_per_model(tracking.search_runs([exp_id], tracking.finished_filter("interpret")))
    xai = xai_table(list(interp.values()))
    workdir = Path(tempfile.mkdtemp(prefix="medattn-compare-"))
    selected, case_frame = _case_frame(test_runs, cfg.cases, workdir) if cfg.cases is not None else (None, None)
    tags = {tracking.TAG_KIND: "compare"}
    with tracking.stage_run(
        experiment_id=exp_id, run_id=tracking.project_run_id(), run_name="compare", tags=tags
    ) as run_id:
        tracking.log_params(
            {
                "experiment": cfg.experiment,
                "metric": cfg.metric,
                "cases": cfg.cases,
                "n_test_runs": len(test_runs),
                "n_interpret_runs": len(interp),
            }
        )
        tracking.log_text(table.to_csv(index=False), tracking.COMPARISON_CSV)
        rows = [
            {
                "model": r["model"],
                "perc_train": r["perc_train"],
                "value": r[cfg.metric],
                "ci_low": r.get(f"{cfg.metric}_ci_low", math.nan),
                "ci_high": r.get(f"{cfg.metric}_ci_high", math.nan),
            }
            for r in table.to_dict("records")
        ]
        tracking.log_figure(
            plots.low_data_figure(rows, cfg.metric, reference=oracle_reference(table, cfg.metric)),
            tracking.LOW_DATA_FIGURE,
        )
        artifacts = [tracking.COMPARISON_CSV, tracking.LOW_DATA_FIGURE]
        if len(xai):
            artifacts += _log_xai(cfg, xai, interp, workdir)
        if case_frame is not None:
            artifacts += _log_cases(cfg, selected, case_frame, interp, workdir)
        paired, paired_artifacts = _log_paired(exp_id, test_runs, workdir)
        artifacts += paired_artifacts + clinical.log_subgroups_by_model(latest_per_model(test_runs), workdir)
        seeds = _train_seeds(exp_id)
        paper = paper_markdown(seed_summary(test_runs, seeds, cfg.metric), paired_by_dataset(test_runs, seeds, workdir))
        if paper:
            tracking.log_text(paper + "\n", tracking.PAPER_TABLE)
            artifacts.append(tracking.PAPER_TABLE)
    shutil.rmtree(workdir, ignore_errors=True)  # the downloads are read; no command leaves files in TMPDIR
    return CompareResult(run_id, cfg.experiment, table, xai, selected, artifacts, uri, paired, paper)
