"""The ``figures`` stage: an interpret run's maps and its training history drawn as figures and
logged to that interpret run under ``figures/`` (``medattn figures``).

A training run id is accepted too, or a model URI of one: its latest finished interpret run (tag
``medattn.source_run``) is used. Nothing here needs the data folder: every input is an MLflow tag or artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medattn import plots, tracking
from medattn.config import TrackingPart, at_least, check_alpha, saliency_choice, set_field
from medattn.errors import ConfigError, MedattnError


@dataclass(frozen=True, kw_only=True)
class FiguresConfig(TrackingPart):
    """Options of ``medattn figures``.

    ``run_id`` is an interpret run, or a training run whose latest finished interpret run is used;
    ``model_uri`` (instead of ``run_id``) names such a training run by a model URI.
    ``saliency_maps`` is ``all`` or one explanation method (any that ``interpret`` logs).
    """

    run_id: str | None = None
    model_uri: str | None = None
    saliency_maps: str = "all"
    alpha_overlay: float = 0.5
    max_images: int | None = None  # figures for the first this many explained images (None or 0: all)

    def __post_init__(self) -> None:  # noqa: D105
        if bool(self.run_id) == bool(self.model_uri):
            raise ConfigError("give exactly one of --run-id or --model-uri.")
        if self.max_images is not None:
            at_least("max_images", self.max_images, 0, "0 (every image) or more")
            set_field(self, "max_images", self.max_images or None)
        set_field(self, "saliency_maps", saliency_choice(self.saliency_maps))
        check_alpha(self.alpha_overlay)


@dataclass(frozen=True)
class FiguresResult:
    """Outcome of :func:`figures`: the run the figures went to and their artifact paths."""

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
        found = tracking.search_runs(
            None, f"{tracking.finished_filter('interpret')} and tags.`{tracking.TAG_SOURCE_RUN}` = '{run_id}'"
        )
        if not found:
            raise MedattnError(
                f"training run {run_id!r} has no finished interpret run; run medattn interpret --run-id {run_id} first."
            )
        return found[0]
    raise MedattnError(
        f"run {run_id!r} is a {kind or 'non-medattn'} run; pass the id of a medattn interpret run "
        "(or of a training run that was explained)."
    )


def _draw_maps(reader: tracking.SaliencyReader, index, methods: list[str], alpha: float, logged: list[str]):
    """Per image: the original and one blended heat map per method; returns images, maps, row labels."""
    rid = reader.run_id
    by_key = {(r["id"], r["method"]): r for _, r in index.iterrows()}
    images, grid_maps, labels = [], [], []
    for image_id in dict.fromkeys(index["id"]):
        first = next(by_key[(image_id, m)] for m in methods if (image_id, m) in by_key)
        image = reader.load_input(first["input"])
        images.append(image)
        labels.append(f"{image_id}\nlabel {first['label']}, pred {first['prediction']}")
        tracking.log_figure(
            plots.image_figure(image, title=f"{image_id} (label {first['label']})"),
            tracking.original_artifact(image_id),
            run_id=rid,
        )
        logged.append(tracking.original_artifact(image_id))
        row: list[np.ndarray | None] = []
        for method in methods:
            entry = by_key.get((image_id, method))
            attr = reader.load_map(entry["file"]) if entry is not None else None
            row.append(attr)
            if attr is not None:
                fig = plots.blended_heat_map_figure(attr, image, alpha_overlay=alpha, title=f"{method} — {image_id}")
                tracking.log_figure(fig, tracking.heat_map_artifact(method, image_id), run_id=rid)
                logged.append(tracking.heat_map_artifact(method, image_id))
        grid_maps.append(row)
    return images, grid_maps, labels


def _draw_history(rid: str, source: str | None, logged: list[str]) -> dict[str, list[float]]:
    if not source:
        return {}
    history = tracking.metric_history(source, [f"{p}_{m}" for m in plots.HISTORY_METRICS for p in ("train", "val")])
    for metric, fig in plots.history_figures(history).items():
        tracking.log_figure(fig, f"{tracking.FIGURES_HISTORY_DIR}/{metric}.png", run_id=rid)
        logged.append(f"{tracking.FIGURES_HISTORY_DIR}/{metric}.png")
    return history


def figures(cfg: FiguresConfig) -> FiguresResult:
    """Render an interpret run's maps and its training run's history; log them to the interpret run.

    ``cfg.run_id`` names the interpret run (or a training run); ``cfg.model_uri`` (any form
    :func:`medattn.tracking.source_run_of` resolves, e.g. ``models:/medattn-demo@champion``) names
    a training run, whose latest finished interpret run is drawn.

    Logs, for every explained image (the first ``cfg.max_images`` with that option),
    ``figures/original/<image_id>.png`` (the model's view), ``figures/<method>/<image_id>.png``
    (captum blended heat map, sign ``all``, ``bwr``; transformer-lrp maps upsampled bilinearly),
    ``figures/grid.png`` (images × methods) and ``figures/history/<metric>.png`` (loss, accuracy,
    AUC; train vs validation from the source training run's metric history, when it has one), and
    tags the interpret run ``medattn.figures=<n>``. Under ``mlflow run`` the project run is tagged
    ``medattn.kind=figures`` with ``medattn.source_run`` pointing at the interpret run.

    Raises:
        MedattnError: a run that is not an interpret/train run, or missing artifacts or maps.
    """
    uri = tracking.connect(cfg.tracking_uri)
    run = resolve_interpret_run(cfg.run_id or tracking.source_run_of(cfg.model_uri))
    rid = run.info.run_id
    reader = tracking.SaliencyReader(rid)
    index = reader.index()
    methods = list(dict.fromkeys(index["method"]))
    if cfg.saliency_maps != "all":
        if cfg.saliency_maps not in methods:
            raise MedattnError(
                f"interpret run {rid!r} has no {cfg.saliency_maps} maps (it has {', '.join(methods)}); "
                "choose one of those or ALL."
            )
        methods = [cfg.saliency_maps]
    index = index[index["method"].isin(methods)]
    if cfg.max_images is not None:
        index = index[index["id"].isin(list(dict.fromkeys(index["id"]))[: cfg.max_images])]
    logged: list[str] = []
    images, grid_maps, labels = _draw_maps(reader, index, methods, cfg.alpha_overlay, logged)
    title = f"{run.data.tags.get(tracking.TAG_MODEL, '')} — {run.data.tags.get(tracking.TAG_SPLIT, '')}".strip(" —")
    grid = plots.saliency_grid_figure(
        images, grid_maps, row_labels=labels, col_labels=methods, alpha_overlay=cfg.alpha_overlay, title=title
    )
    tracking.log_figure(grid, tracking.GRID_FIGURE, run_id=rid)
    logged.append(tracking.GRID_FIGURE)
    source = run.data.tags.get(tracking.TAG_SOURCE_RUN)
    history = _draw_history(rid, source, logged)
    tracking.set_tags({tracking.TAG_FIGURES: str(len(logged))}, run_id=rid)
    project = tracking.project_run_id()
    if project and project != rid:
        tracking.set_tags({tracking.TAG_KIND: "figures", tracking.TAG_SOURCE_RUN: rid}, run_id=project)
    return FiguresResult(rid, source, logged, uri, history)
