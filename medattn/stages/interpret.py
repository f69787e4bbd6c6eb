"""The ``interpret`` stage: explain a trained model's images and score the explanations (SPEC §5).

The maps, inputs and index are written through :class:`medattn.tracking.SaliencyWriter`, the one
writer of that layout; ``figures`` and ``compare`` read it back with its reader.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from medattn import tracking
from medattn.config import InterpretConfig
from medattn.data import load_mask
from medattn.explain import (
    attribute,
    deletion_insertion,
    mask_relevance_mass,
    methods_for,
    pointing_game,
    random_baseline_scores,
)
from medattn.runtime import resolve_device
from medattn.stages.common import data_index, denormalize, make_loader
from medattn.stages.evaluate import load_source, source_tags


@dataclass(frozen=True)
class InterpretResult:
    """Outcome of :func:`interpret`: the new run, mean scores per method, the per-image index."""

    run_id: str
    source_run_id: str | None
    scores: pd.DataFrame  # one row per method (plus "random"): deletion_auc, insertion_auc, ...
    index: pd.DataFrame  # id, label, prediction, score, target, method, file, input
    metrics: dict[str, float]
    tracking_uri: str


def metric_name(method: str) -> str:
    """A method's spelling in metric names (``transformer-lrp`` → ``transformer_lrp``)."""
    return method.replace("-", "_")


def _method_scores(model: nn.Module, images, maps, target, masks, steps: int) -> dict[str, torch.Tensor]:
    """Per-image scores of one method's maps: deletion/insertion, and with masks pointing game and mass."""
    di = deletion_insertion(model, images, maps, target, steps=steps)
    scores = {"deletion_auc": di.deletion_auc, "insertion_auc": di.insertion_auc}
    if masks is not None:
        scores["pointing_game"] = pointing_game(maps, masks)
        scores["mask_mass"] = mask_relevance_mass(maps, masks)
    return scores


def _random_scores(gen: torch.Generator, masks) -> dict[str, torch.Tensor]:
    """Seeded uniform random maps on the same masks (every score the evaluation returns)."""
    rnd = random_baseline_scores(generator=gen, masks=masks, n_draws=8)
    return {("mask_mass" if k == "relevance_mass" else k): v for k, v in rnd.items()}


def _explain_batch(ctx: dict, images, labels, ids: list[str], masks) -> list[dict]:
    """Explain one batch with every method; write maps and inputs; return the per-image score rows."""
    model, cfg, writer = ctx["model"], ctx["cfg"], ctx["writer"]
    with torch.no_grad():
        probs = torch.softmax(model(images).float(), 1)
    preds = probs.argmax(1)
    target = labels if cfg.target == "label" else preds
    for i, pic in zip(ids, denormalize(images), strict=True):
        writer.add_input(i, pic)
    per_method: dict[str, dict[str, torch.Tensor]] = {}
    for method in ctx["methods"]:
        maps = attribute(model, images, method, target)
        per_method[method] = _method_scores(model, images, maps, target, masks, cfg.steps)
        for i, image_id in enumerate(ids):
            score = probs[i, 1] if probs.shape[1] == 2 else probs[i, preds[i]]
            writer.add_map(
                method,
                image_id,
                maps[i].detach().cpu().numpy(),
                label=int(labels[i]),
                prediction=int(preds[i]),
                score=float(score),
                target=int(target[i]),
            )
        ctx["bar"].update(len(ids))
    if masks is not None:
        per_method["random"] = _random_scores(ctx["gen"], masks)
    return [
        {"id": image_id, "label": int(labels[i]), "method": method, **{k: float(v[i]) for k, v in scores.items()}}
        for method, scores in per_method.items()
        for i, image_id in enumerate(ids)
    ]


def interpret(cfg: InterpretConfig, *, parent_run_id: str | None = None, progress: bool = True):
    """Explain a trained model's images and score the explanations (SPEC §5, "interpret").

    For each of the first ``max_images`` images of the split (split order) and each method, logs the
    raw map ``saliency/<method>/<image_id>.npy`` and the input ``inputs/<image_id>.png`` (the
    model's view, de-normalised), an index ``saliency/index.csv`` and per-image scores
    ``xai_scores.csv``. Metrics: ``xai_<method>_<score>`` (means over images) for every score the
    evaluation returns: deletion/insertion AUC, and with ground-truth masks (the demo set) pointing
    game and mask mass, next to ``xai_random_*`` for seeded uniform random maps. Method names are
    written with ``_`` in metric names (``transformer-lrp`` → ``xai_transformer_lrp_...``).

    Returns:
        An :class:`InterpretResult`.
    """
    uri = tracking.connect(cfg.tracking_uri)
    split = cfg.split
    loaded = load_source(cfg)
    model, tcfg = loaded.model, loaded.config
    methods = list(cfg.methods) or methods_for(model)
    device = resolve_device(cfg.device)
    index = data_index(tcfg, cfg.data_dir)
    frame = index.split(split).iloc[: cfg.max_images].reset_index(drop=True)
    subset = dataclasses.replace(index, frame=frame.assign(split=split))
    loader = make_loader(subset, split, tcfg, train=False, batch_size=cfg.batch_size, num_workers=0)
    model = model.to(device).eval()
    probe = next(iter(loader))[0][:1].to(device)  # a method that does not fit the model fails before any run
    for method in methods:
        attribute(model, probe, method, torch.zeros(1, dtype=torch.long, device=device))
    experiment_id = tracking.stage_experiment(cfg.experiment, tcfg.data.dataset, uri, loaded.source_run_id)
    ctx = {
        "model": model,
        "cfg": cfg,
        "methods": methods,
        "writer": tracking.SaliencyWriter(),
        "gen": torch.Generator().manual_seed(cfg.seed),
        "bar": tqdm(total=len(frame) * len(methods), desc="explaining", unit="map", disable=not progress),
    }
    with tracking.stage_run(
        experiment_id=experiment_id,
        run_id=tracking.project_run_id(parent_run_id),
        run_name=f"interpret-{tcfg.model.model}-{split}",
        tags=source_tags("interpret", loaded, split),
        parent_run_id=parent_run_id,
    ) as run_id:
        tracking.log_params(
            {
                "source_run_id": loaded.source_run_id,
                "model_uri": cfg.model_uri,
                "checkpoint": loaded.checkpoint,
                "methods": ",".join(methods),
                "target": cfg.target,
                "split": split,
                "max_images": cfg.max_images,
                "steps": cfg.steps,
                "model": tcfg.model.model,
                "dataset": tcfg.data.dataset,
                "img_size": tcfg.data.img_size,
            }
        )
        rows, offset = [], 0
        for images, labels in loader:
            b = labels.shape[0]
            ids = frame["image_id"].astype(str).iloc[offset : offset + b].tolist()
            masks = None
            if "mask_path" in frame.columns:
                paths = frame["mask_path"].iloc[offset : offset + b].tolist()
                masks = torch.from_numpy(np.stack([load_mask(p, tcfg.data.img_size) for p in paths]))
            rows += _explain_batch(ctx, images.to(device), labels.to(device), ids, masks)
            offset += b
        ctx["bar"].close()
        per_image = pd.DataFrame(rows)
        index_df = ctx["writer"].log(per_image)
        summary = per_image.drop(columns=["id", "label"]).groupby("method", sort=False).mean(numeric_only=True)
        metrics = {
            f"xai_{metric_name(m)}_{k}": float(v)
            for m, row in summary.iterrows()
            for k, v in row.items()
            if np.isfinite(v)
        }
        tracking.log_metrics(metrics)
    return InterpretResult(run_id, loaded.source_run_id, summary.reset_index(), index_df, metrics, uri)
