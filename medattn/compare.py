"""Read medattn runs back from MLflow: figures of one interpret run, comparisons across variants.

Two commands live here, behind :func:`medattn.api.figures` and :func:`medattn.api.compare`:

* **figures** renders what an interpret run logged (``saliency/index.csv``, the maps
  ``saliency/<method>/<image_id>.npy`` and the inputs ``inputs/<image_id>.png``) as captum-style
  blended heat maps, plus the source training run's history curves, and logs them *to that
  interpret run* under ``figures/`` — the figures stay next to the maps they show. A training run
  id is accepted too: its latest finished interpret run (tag ``medattn.source_run``) is used.
* **compare** gathers the finished test runs of an experiment (tag ``medattn.kind=test``, split
  ``test``) into a tidy table per model variant and training-data fraction, draws the
  low-data-regimen figure, the explanation scores of the interpret runs and a grid of the same test
  images across models × methods, optionally selects cases (images where all models share an
  outcome, or disagree), and logs everything to a new run tagged ``medattn.kind=compare``.

Nothing here needs the data folder: every input is an MLflow metric, tag or artifact.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medattn import tracking
from medattn.errors import ConfigError, MedattnError

from medattn.tracking import (  # artifact names are tracking's constants
    COMPARE_GRID_FIGURE,
    COMPARISON_CSV,
    FIGURES_DIR,
    FIGURES_HISTORY_DIR,
    GRID_FIGURE,
    LOW_DATA_FIGURE,
    ORIGINAL_DIR,
    SALIENCY_INDEX,
    TAG_FIGURES,
    XAI_CSV,
    XAI_FIGURE,
)


def heat_map_artifact(method: str, image_id: str) -> str:
    """Artifact path of one blended heat map, ``figures/<method>/<image_id>.png``."""
    return f"{FIGURES_DIR}/{method}/{image_id}.png"


def cases_csv(case: str) -> str:
    """Artifact path of a case list, ``cases/<case>.csv``."""
    return f"cases/{case}.csv"


def cases_figure(case: str) -> str:
    """Artifact path of a case grid, ``figures/cases_<case>.png``."""
    return f"{FIGURES_DIR}/cases_{case}.png"


#: Choices of ``--saliency-maps`` (ALL keeps every method the interpret run logged).
SALIENCY_CHOICES = ("all", "deeplift", "lrp", "transformer-lrp")
#: Choices of ``--cases``.
CASES = ("tp", "tn", "fp", "fn", "agree", "disagree")
#: Test metrics put in the comparison table (those a run lacks are left empty).
TABLE_METRICS = ("auc", "balanced_accuracy", "accuracy", "f1", "sensitivity", "specificity", "loss")


# =============================================================================================
# shared MLflow reading
# =============================================================================================
def _client():
    import mlflow

    return mlflow.MlflowClient()


def search_runs(experiment_ids: Sequence[str] | None, filter_string: str) -> list[Any]:
    """All runs matching ``filter_string``, newest first (every page; all experiments when ``None``).

    Args:
        experiment_ids: Experiments to search, or ``None`` for every active experiment.
        filter_string: An MLflow search filter.

    Returns:
        ``mlflow.entities.Run`` objects ordered by start time, newest first.
    """
    client = _client()
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _kind_filter(kind: str) -> str:
    return f"tags.`{tracking.TAG_KIND}` = '{kind}' and attributes.status = 'FINISHED'"


def _read_csv(run_id: str, artifact: str, workdir: Path) -> pd.DataFrame:
    return pd.read_csv(tracking.download(run_id, artifact, workdir), dtype={"id": str})


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _log_figure(fig, artifact: str, *, run_id: str | None = None) -> None:
    """Log a Figure to the active run, or to ``run_id`` (a finished run) through the client."""
    import mlflow

    if run_id is None:
        mlflow.log_figure(fig, artifact)
    else:
        _client().log_figure(run_id, fig, artifact)


def metric_history(run_id: str, keys: Sequence[str]) -> dict[str, list[float]]:
    """Per-epoch values of ``keys`` logged to ``run_id``, in step order (absent keys left out)."""
    client = _client()
    out = {}
    for key in keys:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if points:
            out[key] = [float(m.value) for m in points]
    return out


# =============================================================================================
# medattn figures
# =============================================================================================
@dataclass(frozen=True)
class FiguresConfig:
    """Options of ``medattn figures``.

    ``run_id`` is an interpret run, or a training run whose latest finished interpret run is used.
    ``saliency_maps`` is ``all`` or one method (``deeplift``, ``lrp``, ``transformer-lrp``).
    """

    run_id: str
    saliency_maps: str = "all"
    alpha_overlay: float = 0.5
    tracking_uri: str | None = None


@dataclass(frozen=True)
class FiguresResult:
    """Outcome of :func:`make_figures`: the run the figures went to and their artifact paths."""

    run_id: str
    source_run_id: str | None
    artifacts: list[str]
    tracking_uri: str
    history: dict[str, list[float]] = field(default_factory=dict)


def resolve_interpret_run(run_id: str) -> Any:
    """The interpret run behind ``run_id``: the run itself, or a training run's latest interpret run.

    Raises:
        MedattnError: the run does not exist, is neither an interpret nor a training run, or is a
            training run that was never explained.
    """
    run = tracking.get_run(run_id)
    kind = run.data.tags.get(tracking.TAG_KIND)
    if kind == "interpret":
        return run
    if kind == "train":
        found = search_runs(None, f"{_kind_filter('interpret')} and tags.`{tracking.TAG_SOURCE_RUN}` = '{run_id}'")
        if not found:
            raise MedattnError(
                f"training run {run_id!r} has no finished interpret run; run medattn interpret --run-id {run_id} first."
            )
        return found[0]
    raise MedattnError(
        f"run {run_id!r} is a {kind or 'non-medattn'} run; pass the id of a medattn interpret run "
        "(or of a training run that was explained)."
    )


def _saliency_choice(value: str) -> str:
    choice = value.strip().lower().replace("_", "-")
    if choice not in SALIENCY_CHOICES:
        raise ConfigError(f"--saliency-maps must be one of {', '.join(c.upper() for c in SALIENCY_CHOICES)}, got {value!r}.")
    return choice


def make_figures(cfg: FiguresConfig) -> FiguresResult:
    """Render an interpret run's maps and its training run's history; log them to the interpret run.

    Logs ``figures/original/<image_id>.png`` (the model's view), ``figures/<method>/<image_id>.png``
    (captum blended heat map, sign ``all``, ``bwr``; transformer-lrp maps upsampled bilinearly),
    ``figures/grid.png`` (images × methods) and ``figures/history/<metric>.png`` (loss, accuracy,
    AUC; train vs validation from the source training run's metric history, when it has one), and
    tags the interpret run ``medattn.figures=<n>``. Under ``mlflow run`` the project run is tagged
    ``medattn.kind=figures`` with ``medattn.source_run`` pointing at the interpret run.

    Raises:
        MedattnError: bad options, a run that is not an interpret/train run, or missing artifacts.
    """
    from medattn import figures

    uri = tracking.connect(cfg.tracking_uri)
    choice = _saliency_choice(cfg.saliency_maps)
    if not 0.0 <= cfg.alpha_overlay <= 1.0:
        raise ConfigError(f"--alpha-overlay must lie in [0, 1], got {cfg.alpha_overlay}.")
    run = resolve_interpret_run(cfg.run_id)
    rid = run.info.run_id
    workdir = Path(tempfile.mkdtemp(prefix="medattn-figures-"))
    index = _read_csv(rid, SALIENCY_INDEX, workdir)
    methods = list(dict.fromkeys(index["method"]))
    if choice != "all":
        if choice not in methods:
            raise MedattnError(
                f"interpret run {rid!r} has no {choice} maps (it has {', '.join(methods)}); "
                "choose one of those or ALL."
            )
        methods = [choice]
    index = index[index["method"].isin(methods)]
    ids = list(dict.fromkeys(index["id"]))
    by_key = {(r["id"], r["method"]): r for _, r in index.iterrows()}
    logged: list[str] = []
    images: dict[str, np.ndarray] = {}
    grid_maps: list[list[np.ndarray | None]] = []
    labels = []
    for image_id in ids:
        first = next(by_key[(image_id, m)] for m in methods if (image_id, m) in by_key)
        image = _read_png(tracking.download(rid, str(first["input"]), workdir))
        images[image_id] = image
        labels.append(f"{image_id}\nlabel {first['label']}, pred {first['prediction']}")
        _log_figure(figures.image_figure(image, title=f"{image_id} (label {first['label']})"),
                    f"{ORIGINAL_DIR}/{image_id}.png", run_id=rid)
        logged.append(f"{ORIGINAL_DIR}/{image_id}.png")
        row = []
        for method in methods:
            entry = by_key.get((image_id, method))
            if entry is None:
                row.append(None)
                continue
            attr = np.load(tracking.download(rid, str(entry["file"]), workdir))
            row.append(attr)
            fig = figures.blended_heat_map_figure(attr, image, alpha_overlay=cfg.alpha_overlay,
                                                  title=f"{method} — {image_id}")
            _log_figure(fig, heat_map_artifact(method, image_id), run_id=rid)
            logged.append(heat_map_artifact(method, image_id))
        grid_maps.append(row)
    model = run.data.tags.get(tracking.TAG_MODEL, "")
    grid = figures.saliency_grid_figure([images[i] for i in ids], grid_maps, row_labels=labels,
                                        col_labels=methods, alpha_overlay=cfg.alpha_overlay,
                                        title=f"{model} — {run.data.tags.get(tracking.TAG_SPLIT, '')}".strip(" —"))
    _log_figure(grid, GRID_FIGURE, run_id=rid)
    logged.append(GRID_FIGURE)

    source = run.data.tags.get(tracking.TAG_SOURCE_RUN)
    history: dict[str, list[float]] = {}
    if source:
        keys = [f"{p}_{m}" for m in figures.HISTORY_METRICS for p in ("train", "val")]
        history = metric_history(source, keys)
        for metric, fig in figures.history_figures(history).items():
            _log_figure(fig, f"{FIGURES_HISTORY_DIR}/{metric}.png", run_id=rid)
            logged.append(f"{FIGURES_HISTORY_DIR}/{metric}.png")
    client = _client()
    client.set_tag(rid, TAG_FIGURES, str(len(logged)))
    project_run = os.environ.get("MLFLOW_RUN_ID")
    if project_run and project_run != rid:
        client.set_tag(project_run, tracking.TAG_KIND, "figures")
        client.set_tag(project_run, tracking.TAG_SOURCE_RUN, rid)
    return FiguresResult(rid, source, logged, uri, history)


# =============================================================================================
# medattn compare: tables (pure functions of runs / frames)
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
        then ``test_<m>`` for :data:`TABLE_METRICS` and their CIs where logged, ``n_images``,
        ``n_runs``, ``run_id``, ``source_run``; sorted by model then fraction.
    """
    rows: dict[tuple[str, float], dict[str, Any]] = {}
    counts: dict[tuple[str, float], int] = {}
    names = [metric, *(f"test_{m}" for m in TABLE_METRICS if f"test_{m}" != metric)]
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


def xai_table(runs: Sequence[Any]) -> pd.DataFrame:
    """Explanation scores of interpret runs in long form: ``model, method, score, value, run_id``.

    One interpret run per model is used: the one of the largest training-data fraction, newest
    first among those. Metric ``xai_<method>_<score>`` is split using the run's ``methods`` param
    (plus the ``random`` baseline), so method and score names may both contain ``_``.
    """
    chosen = latest_per_model(runs)
    rows = []
    for model, run in chosen.items():
        methods = [m for m in run.data.params.get("methods", "").split(",") if m] + ["random"]
        for key, value in sorted(run.data.metrics.items()):
            for method in methods:
                prefix = f"xai_{method.replace('-', '_')}_"
                if key.startswith(prefix):
                    rows.append({"model": model, "method": method, "score": key[len(prefix):],
                                 "value": float(value), "run_id": run.info.run_id})
                    break
    return pd.DataFrame(rows, columns=["model", "method", "score", "value", "run_id"])


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
# medattn compare: the command
# =============================================================================================
@dataclass(frozen=True)
class CompareConfig:
    """Options of ``medattn compare``."""

    experiment: str = "medattn-demo"
    metric: str = "test_auc"
    cases: str | None = None
    max_images: int = 4
    alpha_overlay: float = 0.5
    tracking_uri: str | None = None


@dataclass(frozen=True)
class CompareResult:
    """Outcome of :func:`run_compare`: the compare run, its tables and what it logged."""

    run_id: str
    experiment: str
    table: pd.DataFrame
    xai: pd.DataFrame
    cases: list[str] | None
    artifacts: list[str]
    tracking_uri: str


def _grid_across_models(interp: Mapping[str, Any], ids: Sequence[str], workdir: Path, alpha: float,
                        title: str):
    """Grid of ``ids`` (rows) × (model, method) (columns) from the interpret runs, or ``None``.

    Only ids that every interpret run explained are drawn; returns ``(figure, ids drawn)``.
    """
    from medattn import figures

    indexes = {m: _read_csv(r.info.run_id, SALIENCY_INDEX, workdir) for m, r in interp.items()}
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
            row.append(np.load(tracking.download(interp[model].info.run_id, str(hit.iloc[0]["file"]), workdir))
                       if len(hit) else None)
        ix0 = next(iter(indexes.values()))
        first = ix0[ix0["id"] == image_id].iloc[0]
        run0 = next(iter(interp.values())).info.run_id
        images.append(_read_png(tracking.download(run0, str(first["input"]), workdir)))
        maps.append(row)
        labels.append(f"{image_id}\nlabel {first['label']}")
    fig = figures.saliency_grid_figure(images, maps, row_labels=labels, col_labels=[f"{m}\n{k}" for m, k in columns],
                                       alpha_overlay=alpha, title=title)
    return fig, drawn


def run_compare(cfg: CompareConfig) -> CompareResult:
    """Compare the variants of an experiment and log the result to a new ``compare`` run.

    Logs ``comparison.csv`` (:func:`results_table`), ``figures/low_data.png`` (``cfg.metric`` against
    the % of training data, one line per variant), and when interpret runs exist
    ``xai_scores.csv`` (:func:`xai_table`), ``figures/xai_scores.png`` and
    ``figures/saliency_grid.png`` (the first ``max_images`` images every model explained, across
    models × methods). With ``cases``: ``cases/<case>.csv`` (id, label, one prediction column per
    model) and, for the selected ids that every interpret run explained, ``figures/cases_<case>.png``.
    Models for the explanation and case parts are each variant's run of the largest fraction.

    Raises:
        MedattnError: unknown experiment, no finished test runs, unknown metric or case.
    """
    import mlflow

    from medattn import figures

    uri = tracking.connect(cfg.tracking_uri)
    if cfg.cases is not None and cfg.cases not in CASES:
        raise ConfigError(f"--cases must be one of {', '.join(CASES)}, got {cfg.cases!r}.")
    if cfg.max_images < 1:
        raise ConfigError(f"--max-images must be at least 1, got {cfg.max_images}.")
    if not cfg.metric.startswith("test_"):
        raise ConfigError(f"--metric must be a test metric such as test_auc, got {cfg.metric!r}.")
    exp = _client().get_experiment_by_name(cfg.experiment)
    if exp is None or exp.lifecycle_stage != "active":
        raise MedattnError(f"experiment {cfg.experiment!r} does not exist in {uri!r}; check --experiment.")
    test_runs = [r for r in search_runs([exp.experiment_id], _kind_filter("test"))
                 if r.data.tags.get(tracking.TAG_SPLIT, "test") == "test"]
    if not test_runs:
        raise MedattnError(
            f"experiment {cfg.experiment!r} has no finished test runs on the test split; run medattn test first."
        )
    if not any(cfg.metric in r.data.metrics for r in test_runs):
        raise MedattnError(f"no test run of experiment {cfg.experiment!r} logged {cfg.metric!r}; try --metric test_auc.")
    table = results_table(test_runs, cfg.metric)
    interp = latest_per_model(search_runs([exp.experiment_id], _kind_filter("interpret")))
    xai = xai_table(list(interp.values()))
    workdir = Path(tempfile.mkdtemp(prefix="medattn-compare-"))

    selected: list[str] | None = None
    case_frame = None
    if cfg.cases is not None:
        latest_tests = latest_per_model(test_runs)
        preds = {m: _read_csv(r.info.run_id, tracking.PREDICTIONS, workdir) for m, r in latest_tests.items()}
        selected = case_ids(preds, cfg.cases)
        first = next(iter(preds.values())).assign(id=lambda f: f["id"].astype(str)).set_index("id")
        case_frame = pd.DataFrame({"id": selected, "label": [int(first.loc[i, "label"]) for i in selected]})
        for model, frame in preds.items():
            f = frame.assign(id=frame["id"].astype(str)).set_index("id")
            case_frame[f"prediction_{model}"] = [int(f.loc[i, "prediction"]) for i in selected]

    env_run = os.environ.get("MLFLOW_RUN_ID")
    artifacts: list[str] = []
    with tracking.tracked_run(experiment_id=None if env_run else exp.experiment_id, run_id=env_run,
                              run_name="compare", tags={tracking.TAG_KIND: "compare"}) as run:
        mlflow.set_tags({tracking.TAG_KIND: "compare"})
        mlflow.log_params({"experiment": cfg.experiment, "metric": cfg.metric, "cases": cfg.cases or "None",
                           "n_test_runs": len(test_runs), "n_interpret_runs": len(interp)})
        mlflow.log_text(table.to_csv(index=False), COMPARISON_CSV)
        artifacts.append(COMPARISON_CSV)
        rows = [{"model": r["model"], "perc_train": r["perc_train"], "value": r[cfg.metric],
                 "ci_low": r.get(f"{cfg.metric}_ci_low", math.nan), "ci_high": r.get(f"{cfg.metric}_ci_high", math.nan)}
                for r in table.to_dict("records")]
        mlflow.log_figure(figures.low_data_figure(rows, cfg.metric), LOW_DATA_FIGURE)
        artifacts.append(LOW_DATA_FIGURE)
        if len(xai):
            mlflow.log_text(xai.to_csv(index=False), XAI_CSV)
            mlflow.log_figure(figures.xai_scores_figure(xai.to_dict("records")), XAI_FIGURE)
            artifacts += [XAI_CSV, XAI_FIGURE]
            first_ids = list(dict.fromkeys(_read_csv(next(iter(interp.values())).info.run_id, SALIENCY_INDEX,
                                                     workdir)["id"]))
            fig, _ = _grid_across_models(interp, first_ids[: cfg.max_images], workdir, cfg.alpha_overlay,
                                         "The same test images across models × methods")
            if fig is not None:
                mlflow.log_figure(fig, COMPARE_GRID_FIGURE)
                artifacts.append(COMPARE_GRID_FIGURE)
        if cfg.cases is not None and case_frame is not None:
            mlflow.log_text(case_frame.to_csv(index=False), cases_csv(cfg.cases))
            artifacts.append(cases_csv(cfg.cases))
            mlflow.log_metric(f"cases_{cfg.cases}", float(len(selected or [])))
            if interp and selected:
                fig, _ = _grid_across_models(interp, selected[: cfg.max_images], workdir, cfg.alpha_overlay,
                                             f"Cases: {cfg.cases}")
                if fig is not None:
                    mlflow.log_figure(fig, cases_figure(cfg.cases))
                    artifacts.append(cases_figure(cfg.cases))
        run_id = run.info.run_id
    return CompareResult(run_id, cfg.experiment, table, xai, selected, artifacts, uri)
