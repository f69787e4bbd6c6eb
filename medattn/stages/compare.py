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

import pandas as pd

from medattn import plots, tracking
from medattn.config import TrackingPart, at_least, check_alpha
from medattn.errors import ConfigError, MedattnError
from medattn.stages import clinical
from medattn.stages.compare_paired import PAIRED_COLUMNS, _log_paired, _train_seeds, verdict
from medattn.stages.compare_paper import paired_by_dataset, paper_markdown, seed_summary
from medattn.stages.compare_tables import latest_per_model, oracle_reference, results_table, xai_table

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
