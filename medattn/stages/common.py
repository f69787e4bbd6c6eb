"""What several stages share: the data index, loaders and models a training config describes, and
the trained model rebuilt from a run, a registry URI or a checkpoint."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medattn import checkpoint as ckpt_io
from medattn import lazy, tracking
from medattn.config import TrainConfig, config_from_flat
from medattn.data import IMAGENET_MEAN, IMAGENET_STD, build_loader, load_index
from medattn.errors import ConfigError, MedattnError
from medattn.models import create_model

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help


def data_index(cfg: TrainConfig, data_dir: str | None = None):
    """The :class:`~medattn.data.DataIndex` a config describes (``data_dir`` overrides its folder)."""
    d = cfg.data
    return load_index(
        d.dataset,
        data_dir or d.data_dir,
        multiclass=d.multiclass,
        uncertain=d.uncertain,
        low_data_regimen=d.low_data_regimen,
        perc_train=d.perc_train,
        duplicates=d.duplicates,
    )


def build_model(cfg: TrainConfig, num_classes: int, *, pretrained: str | None = None) -> nn.Module:
    """The eager model a config describes (``pretrained`` overrides the config's choice)."""
    m = cfg.model
    return create_model(
        m.model,
        num_classes,
        pretrained=pretrained if pretrained is not None else cfg.pretrained,
        weights=m.weights if pretrained is None else None,
        head=m.head,
        nr_layers=m.nr_layers,
        patch_size=m.patch_size,
        img_size=cfg.data.img_size,
        init=m.init,
        zero_init_residual_branches=m.zero_init_residual,
    )


def make_loader(
    index, split: str, cfg: TrainConfig, *, train: bool, batch_size: int | None = None, num_workers: int | None = None
):
    """A PIL-transform loader of one split, sized and seeded by the config."""
    return build_loader(
        index,
        split,
        img_size=cfg.data.img_size,
        resize=cfg.data.resize,
        batch_size=batch_size or cfg.optim.batch_size,
        train=train,
        num_workers=cfg.data.num_workers if num_workers is None else num_workers,
        seed=cfg.optim.seed,
    )


def denormalize(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) ImageNet-normalised → (B, H, W, 3) uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (images.detach().cpu().float() * std + mean).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def predictions_frame(ids: Sequence[str], y_true: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """``predictions.csv``: id, label, score (P(class 1) for binary, P(predicted) otherwise), prediction,
    and one ``prob_<k>`` column per class."""
    pred = scores.argmax(1)
    score = scores[:, 1] if scores.shape[1] == 2 else scores[np.arange(len(pred)), pred]
    frame = pd.DataFrame({"id": list(ids), "label": y_true, "score": score, "prediction": pred})
    for k in range(scores.shape[1]):
        frame[f"prob_{k}"] = scores[:, k]
    return frame


@dataclass(frozen=True)
class LoadedModel:
    """An eager model rebuilt from a run, a registry URI or a checkpoint, with its config."""

    model: nn.Module
    config: TrainConfig
    flat: dict[str, Any]
    num_classes: int
    class_names: tuple[str, ...]
    source_run_id: str | None
    checkpoint: str
    temperature: float = 1.0  # post-hoc temperature scaling (medattn calibrate); 1: none


#: Run kinds whose logged model :func:`load_trained` rebuilds: training runs and their calibrated copies.
MODEL_RUN_KINDS = ("train", "calibrate")


def load_trained(run_id: str | None = None, model_uri: str | None = None, ckpt: str | None = None) -> LoadedModel:
    """Rebuild the eager model (for testing and explaining) from exactly one source.

    Args:
        run_id: a training run (the weights of its logged model, :func:`medattn.tracking.model_weights`).
        model_uri: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (resolved to its source run).
        ckpt: a local checkpoint file written by ``medattn train``.

    Raises:
        MedattnError: none or several sources, or a source that does not resolve.
    """
    given = [x for x in (run_id, model_uri, ckpt) if x]
    if len(given) != 1:
        raise ConfigError("give exactly one of --run-id, --model-uri or --ckpt.")
    if model_uri:
        run_id = tracking.resolve_model_uri(model_uri)
    if run_id:
        kind = tracking.run_kind(run_id, "train")
        if kind not in MODEL_RUN_KINDS:
            raise MedattnError(
                f"run {run_id!r} is a {kind} run, not a training run; pass the id of a medattn train run."
            )
        # The weights of the run's logged model (best.pt for older runs), read from a private folder that is
        # removed at once: no command leaves files in the system temp folder.
        with tempfile.TemporaryDirectory(prefix="medattn-weights-") as tmp:
            state = ckpt_io.load(tracking.model_weights(run_id, tmp))
        source = f"runs:/{run_id}/{tracking.MODEL_NAME}"
    else:
        source = str(ckpt)
        state = ckpt_io.load(Path(ckpt))
    flat = dict(state["config"])
    cfg = config_from_flat(flat)
    num_classes = int(state["num_classes"])
    model = build_model(cfg, num_classes, pretrained="none")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise MedattnError(
            f"checkpoint {source!r} does not match a {cfg.model.model} model; it was written by another architecture or version."
        ) from None
    model.eval()
    names = tuple(state.get("class_names", []))
    return LoadedModel(model, cfg, flat, num_classes, names, run_id, source, float(state.get("temperature", 1.0)))
