"""The ``interpret`` stage: explain a trained model's images and score the explanations.

The scoring, the sanity baselines and the pass rule are
:func:`medattn.explain.evaluation.evaluate_explanations`; this stage collects the
images, runs it once, and logs the report. The maps, inputs and index are written through
:class:`medattn.tracking.SaliencyWriter`, the one writer of that layout; ``figures`` and
``compare`` read it back with its reader.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medattn import lazy, registry, tracking
from medattn.config import REMOVALS, TARGETS, RuntimePart, SourcePart, at_least, positive, set_field
from medattn.data import load_mask
from medattn.errors import ConfigError
from medattn.explain import attribute, methods_for
from medattn.explain.evaluation import ExplanationReport, evaluate_explanations
from medattn.runtime import resolve_device
from medattn.stages.common import LoadedModel, build_model, data_index, denormalize, make_loader
from medattn.stages.evaluate import load_source, source_tags

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help


@dataclass(frozen=True, kw_only=True)
class InterpretConfig(SourcePart, RuntimePart):
    """Options of ``medattn interpret``; exactly one of ``run_id``, ``model_uri``, ``ckpt``.

    ``methods`` empty means the model's defaults (deeplift + lrp for CNNs, transformer-lrp for DeiT).
    """

    methods: tuple[str, ...] = ()
    max_images: int = 16
    target: str = "label"
    batch_size: int = 8
    steps: int = 16
    curve_images: int | None = None  # removal curves on this many images (the first with a lesion mask; None: all)
    randomized_images: int | None = None  # images explained on the randomised model (None: all)
    n_boot: int = 1000  # bootstrap resamples per 95 % CI (0: no CIs, hence no method passes)
    removal: str = "road"  # removal curves: road (MoRF/LeRF, noisy linear imputation), zeros or blur

    def __post_init__(self) -> None:  # noqa: D105
        super().__post_init__()
        if self.removal not in REMOVALS:
            raise ConfigError(f"--removal must be one of {', '.join(REMOVALS)}, got {self.removal!r}.")
        if self.target not in TARGETS:
            raise ConfigError(f"--target must be label or pred, got {self.target!r}.")
        at_least("max_images", self.max_images, 1, "at least 1")
        at_least("steps", self.steps, 1, "at least 1")
        for name in ("curve_images", "randomized_images"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 1, "at least 1")
        at_least("n_boot", self.n_boot, 0, "0 or more")
        positive("batch_size", self.batch_size)
        set_field(self, "methods", tuple(registry.canonical("explanation method", m) for m in self.methods))


# The randomised twin is a fresh model of the factory under this seed offset (E measured that
# PyTorch's default re-initialisation behaves unlike timm's init, so the factory's init is used).
RANDOMIZED_SEED_OFFSET = 1


@dataclass(frozen=True)
class InterpretResult:
    """Outcome of :func:`interpret`: the new run, mean scores per source, the per-image index."""

    run_id: str
    source_run_id: str | None
    scores: pd.DataFrame  # one row per source (method or baseline_<b>): deletion_auc, insertion_auc, ...
    index: pd.DataFrame  # id, label, prediction, score, target, method, file, input
    metrics: dict[str, float]
    tracking_uri: str


@dataclass(frozen=True)
class _Batch:
    """The explained images of one interpret run, in split order."""

    ids: list[str]
    images: torch.Tensor  # (N, 3, H, W) normalised, on the device
    labels: torch.Tensor  # (N,)
    masks: torch.Tensor | None  # (N, H, W) ground truth (data sets with masks only)


def metric_name(method: str) -> str:
    """A method's spelling in metric names (``transformer-lrp`` → ``transformer_lrp``)."""
    return method.replace("-", "_")


def _collect(loader, frame: pd.DataFrame, img_size: int, device: torch.device) -> _Batch:
    """All images, labels and (where the data set has them) masks of the loader, on ``device``."""
    images, labels = zip(*loader, strict=True)
    masks = None
    if "mask_path" in frame.columns:
        masks = torch.from_numpy(np.stack([load_mask(p, img_size) for p in frame["mask_path"]]))
    return _Batch(frame["image_id"].astype(str).tolist(), torch.cat(images).to(device), torch.cat(labels), masks)


def randomized_model(loaded: LoadedModel, seed: int, device: torch.device) -> nn.Module:
    """The model-parameter randomisation twin: the same architecture, freshly built by the factory
    under ``seed`` (the global RNG is left as found)."""
    # A twin of a --zero-init-residual model gets the default init: zero residual branches would
    # make every randomised block the identity, not a randomised model.
    config = dataclasses.replace(
        loaded.config, model=dataclasses.replace(loaded.config.model, zero_init_residual=False)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = build_model(config, loaded.num_classes, pretrained="none")
    return twin.to(device).eval()


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Class probabilities ``(N, C)`` (CPU) in batches."""
    with torch.no_grad():
        return torch.cat(
            [
                torch.softmax(model(images[s : s + batch_size]).float(), 1).cpu()
                for s in range(0, images.shape[0], batch_size)
            ]
        )


def _write_maps(writer: tracking.SaliencyWriter, batch: _Batch, report: ExplanationReport, probs, target) -> None:
    """Inputs and every method's raw maps with their index rows."""
    preds = probs.argmax(1)
    for image_id, pic in zip(batch.ids, denormalize(batch.images), strict=True):
        writer.add_input(image_id, pic)
    for method, maps in report.maps.items():
        for i, image_id in enumerate(batch.ids):
            score = probs[i, 1] if probs.shape[1] == 2 else probs[i, preds[i]]
            writer.add_map(
                method,
                image_id,
                maps[i].numpy(),
                label=int(batch.labels[i]),
                prediction=int(preds[i]),
                score=float(score),
                target=int(target[i]),
            )


def per_image_scores(report: ExplanationReport, batch: _Batch) -> pd.DataFrame:
    """``xai_scores.csv``: ``id, label, source`` (a method, ``baseline_<b>`` or
    ``baseline_randomized_<method>``) and one column per score (empty where it does not apply)."""
    frame = report.per_image
    ids, labels = np.asarray(batch.ids), batch.labels.numpy()
    head = pd.DataFrame({"id": ids[frame["image"]], "label": labels[frame["image"]], "source": frame["source"]})
    return pd.concat([head, frame.drop(columns=["image", "source"])], axis=1)


def _params(cfg: InterpretConfig, loaded: LoadedModel, methods: list[str]) -> dict[str, object]:
    """The params of an interpret run."""
    tcfg = loaded.config
    return {
        "source_run_id": loaded.source_run_id,
        "model_uri": cfg.model_uri,
        "checkpoint": loaded.checkpoint,
        "methods": ",".join(methods),
        "target": cfg.target,
        "split": cfg.split,
        "max_images": cfg.max_images,
        "steps": cfg.steps,
        "curve_images": cfg.curve_images,
        "xai_removal": cfg.removal,
        "randomized_images": cfg.randomized_images,
        "n_boot": cfg.n_boot,
        "seed": cfg.seed,
        "model": tcfg.model.model,
        "dataset": tcfg.data.dataset,
        "img_size": tcfg.data.img_size,
    }


def lesion_masks(masks: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor | None:
    """The masks that score a map: a mask marks the evidence for the lesion class, so a map that
    explains class 0 ("no lesion") gets no mask score and no oracle (its mask is emptied). With
    ``--target label`` on the demo sets before version 3 this keeps exactly the lesion images, whose
    masks were the only non-empty ones; on version 3 a class-0 image may show a weak ring."""
    if masks is None:
        return None
    return masks & (target.cpu() != 0).view(-1, 1, 1)


def _explain(cfg: InterpretConfig, loaded: LoadedModel, batch: _Batch, methods: list[str], device: torch.device):
    """Predict, explain and score: ``(report, probabilities, explained targets)``."""
    model = loaded.model
    probs = _predict(model, batch.images, cfg.batch_size)
    target = batch.labels if cfg.target == "label" else probs.argmax(1)
    report = evaluate_explanations(
        model,
        batch.images,
        target.to(device),
        methods,
        masks=lesion_masks(batch.masks, target),
        removal=cfg.removal,
        randomized_model=randomized_model(loaded, cfg.seed + RANDOMIZED_SEED_OFFSET, device),
        steps=cfg.steps,
        curve_images=cfg.curve_images,
        randomized_images=cfg.randomized_images,
        batch_size=cfg.batch_size,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
    )
    return report, probs, target


def interpret(cfg: InterpretConfig, *, parent_run_id: str | None = None, progress: bool = True):
    """Explain a trained model's images and score the explanations (``medattn interpret``).

    For the first ``max_images`` images of the split (split order) and each method, logs the raw
    map ``saliency/<method>/<image_id>.npy``, the input ``inputs/<image_id>.png`` (the model's
    view, de-normalised), an index ``saliency/index.csv`` and per-image scores ``xai_scores.csv``
    (:func:`per_image_scores`). Metrics are those of
    :func:`medattn.explain.evaluation.evaluate_explanations`: ``xai_<method>_<score>`` with
    ``_ci_low`` / ``_ci_high`` (bootstrap 95 % CIs over images), the sanity baselines
    ``xai_baseline_<b>_<score>`` (random, input grey level, centre prior, Sobel edges, and the same
    method on a randomised model, :func:`randomized_model`), ``xai_<method>_randomized_spearman``
    and ``xai_<method>_passes_sanity``. Mask scores (pointing game, mask mass) use the lesion
    images only (:func:`lesion_masks`), and the ground-truth mask is scored as a map too
    (``xai_oracle_<score>``, ``xai_oracle_passes_sanity``). The removal scores (``--removal``,
    param ``xai_removal``) are ROAD's ``morf_auc`` / ``lerf_auc`` by default, ``deletion_auc`` /
    ``insertion_auc`` with ``zeros`` or ``blur``, on ``curve_images`` images (the first with a
    non-empty mask on data sets with masks). Method names are written
    with ``_`` in metric names (``transformer-lrp`` → ``xai_transformer_lrp_...``).

    Returns:
        InterpretResult: the interpret run's id and what it logged.
    """
    uri = tracking.connect(cfg.tracking_uri)
    split = cfg.split
    loaded = load_source(cfg)
    tcfg = loaded.config
    methods = list(cfg.methods) or methods_for(loaded.model)
    device = resolve_device(cfg.device)
    index = data_index(tcfg, cfg.data_dir)
    frame = index.split(split).iloc[: cfg.max_images].reset_index(drop=True)
    subset = dataclasses.replace(index, frame=frame.assign(split=split))
    loader = make_loader(subset, split, tcfg, train=False, batch_size=cfg.batch_size, num_workers=0)
    loaded.model.to(device).eval()
    batch = _collect(loader, frame, tcfg.data.img_size, device)
    for method in methods:  # a method that does not fit the model fails before any run
        attribute(loaded.model, batch.images[:1], method, torch.zeros(1, dtype=torch.long, device=device))
    experiment_id = tracking.stage_experiment(cfg.experiment, tcfg.data.dataset, uri, loaded.source_run_id)
    with tracking.stage_run(
        experiment_id=experiment_id,
        run_id=tracking.project_run_id(parent_run_id),
        run_name=f"interpret-{tcfg.model.model}-{split}",
        tags=source_tags("interpret", loaded, split),
        parent_run_id=parent_run_id,
    ) as run_id:
        tracking.log_params(_params(cfg, loaded, methods))
        report, probs, target = _explain(cfg, loaded, batch, methods, device)
        writer = tracking.SaliencyWriter()
        _write_maps(writer, batch, report, probs, target)
        per_image = per_image_scores(report, batch)
        index_df = writer.log(per_image)
        tracking.log_metrics(report.metrics)
    summary = per_image.drop(columns=["id", "label"]).groupby("source", sort=False).mean(numeric_only=True)
    return InterpretResult(run_id, loaded.source_run_id, summary.reset_index(), index_df, report.metrics, uri)
