"""The four parts a training config is composed of (data, model, optimisation, tracking), each
built by name from its options.

Every option is a named keyword of its part's builder (:func:`optim_config` has ``lr``), so the path
of a value from the command line to where it is used can be read, and followed by a call-graph tool,
without a step that looks names up at run time. A keyword left at ``None`` ("not given") takes the
value of the layer below: an experiment file's or a resumed run's logged config, else the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medattn.errors import ConfigError

#: ``--duplicates``: near-duplicate images kept in one split (group), one kept per group (drop), or not
#: searched (ignore); the one list ``medattn.data.duplicates`` uses too.
DUPLICATES = ("group", "drop", "ignore")
#: ``--mode``: whether a metric is maximised or minimised (``search``, ``promote``).
MODES = ("max", "min")


@dataclass(frozen=True)
class DataConfig:
    """Which data, how it is split, subsampled and resized."""

    dataset: str = "demo"
    data_dir: str = "demo_data"
    img_size: int = 224
    resize: str = "direct_resize"
    low_data_regimen: bool = False
    perc_train: float = 1.0
    multiclass: bool = False
    uncertain: str = "ignore"
    num_workers: int = 0
    # Input path: "gpu" = uint8 cache + batched augmentation on the training device,
    # "cpu" = PIL transforms per image, "auto" = gpu on CUDA when the cache exists, else cpu.
    data_pipeline: str = "auto"
    # Near-duplicate images (medattn.data.duplicates): group | drop | ignore.
    duplicates: str = "group"


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture and how it is initialised."""

    model: str = "resnet50"
    pretrained: str | None = None  # None: "imagenet" for real data sets, "none" for demo
    weights: str | None = None
    head: str = "pool"
    nr_layers: int = 12
    patch_size: int = 16  # deit_tiny's patch side (the paper's 16; the demo uses 8, DEMO_MODEL_OVERRIDES)
    init: str = "fair"
    zero_init_residual: bool = False  # ResNets: every bottleneck's residual branch starts at zero


@dataclass(frozen=True)
class OptimConfig:
    """How the model is optimised."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: str = "none"
    class_weights: bool = False
    select_metric: str = "val_loss"
    seed: int = 42
    amp: bool = True
    compile: bool = False


@dataclass(frozen=True)
class TrackingConfig:
    """Where and how the run is tracked."""

    tracking_uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None
    register: bool = False
    save_freq: int = 0
    system_metrics: bool = True


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert a YAML/CLI value to the type of the option's default (YAML may give ``1e-4`` as a string).

    Options whose default is ``None`` hold text (``--weights``, ``--experiment``, ...).
    """
    typ = str if default is None else type(default)
    try:
        if typ is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "yes", "1", "on"):
                    return True
                if low in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        return typ(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name!r} has value {value!r}, which is not a valid {typ.__name__}.") from None


def pick(under: Mapping[str, Any], name: str, given: Any, default: Any) -> Any:
    """Option ``name``'s value: ``given`` (the command line's; ``None``: not given), else ``under[name]``
    (an experiment file's or a resumed run's logged value), else ``default`` (the config class's).

    The value is converted to the default's type (:func:`_coerce`).
    """
    value = given if given is not None else under.get(name)
    return default if value is None else _coerce(name, value, default)


# One builder per config part, each option a named keyword: the command line passes what it was given
# (None: not given) and the layer below (a --config file, a resumed run) fills in the rest.
def data_config(
    under: Mapping[str, Any] | None = None,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    img_size: int | None = None,
    resize: str | None = None,
    low_data_regimen: bool | None = None,
    perc_train: float | None = None,
    multiclass: bool | None = None,
    uncertain: str | None = None,
    num_workers: int | None = None,
    data_pipeline: str | None = None,
    duplicates: str | None = None,
) -> DataConfig:
    """The :class:`DataConfig` of the options given here over ``under``'s over the defaults (:func:`pick`)."""
    u, d = under or {}, DataConfig
    return DataConfig(
        dataset=pick(u, "dataset", dataset, d.dataset),
        data_dir=pick(u, "data_dir", data_dir, d.data_dir),
        img_size=pick(u, "img_size", img_size, d.img_size),
        resize=pick(u, "resize", resize, d.resize),
        low_data_regimen=pick(u, "low_data_regimen", low_data_regimen, d.low_data_regimen),
        perc_train=pick(u, "perc_train", perc_train, d.perc_train),
        multiclass=pick(u, "multiclass", multiclass, d.multiclass),
        uncertain=pick(u, "uncertain", uncertain, d.uncertain),
        num_workers=pick(u, "num_workers", num_workers, d.num_workers),
        data_pipeline=pick(u, "data_pipeline", data_pipeline, d.data_pipeline),
        duplicates=pick(u, "duplicates", duplicates, d.duplicates),
    )


def model_config(
    under: Mapping[str, Any] | None = None,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    weights: str | None = None,
    head: str | None = None,
    nr_layers: int | None = None,
    patch_size: int | None = None,
    init: str | None = None,
    zero_init_residual: bool | None = None,
) -> ModelConfig:
    """The :class:`ModelConfig` of the options given here over ``under``'s over the defaults (:func:`pick`)."""
    u, m = under or {}, ModelConfig
    return ModelConfig(
        model=pick(u, "model", model, m.model),
        pretrained=pick(u, "pretrained", pretrained, m.pretrained),
        weights=pick(u, "weights", weights, m.weights),
        head=pick(u, "head", head, m.head),
        nr_layers=pick(u, "nr_layers", nr_layers, m.nr_layers),
        patch_size=pick(u, "patch_size", patch_size, m.patch_size),
        init=pick(u, "init", init, m.init),
        zero_init_residual=pick(u, "zero_init_residual", zero_init_residual, m.zero_init_residual),
    )


def optim_config(
    under: Mapping[str, Any] | None = None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    scheduler: str | None = None,
    class_weights: bool | None = None,
    select_metric: str | None = None,
    seed: int | None = None,
    amp: bool | None = None,
    compile: bool | None = None,
) -> OptimConfig:
    """The :class:`OptimConfig` of the options given here over ``under``'s over the defaults (:func:`pick`)."""
    u, o = under or {}, OptimConfig
    return OptimConfig(
        epochs=pick(u, "epochs", epochs, o.epochs),
        batch_size=pick(u, "batch_size", batch_size, o.batch_size),
        lr=pick(u, "lr", lr, o.lr),
        weight_decay=pick(u, "weight_decay", weight_decay, o.weight_decay),
        scheduler=pick(u, "scheduler", scheduler, o.scheduler),
        class_weights=pick(u, "class_weights", class_weights, o.class_weights),
        select_metric=pick(u, "select_metric", select_metric, o.select_metric),
        seed=pick(u, "seed", seed, o.seed),
        amp=pick(u, "amp", amp, o.amp),
        compile=pick(u, "compile", compile, o.compile),
    )


def tracking_config(
    under: Mapping[str, Any] | None = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    register: bool | None = None,
    save_freq: int | None = None,
    system_metrics: bool | None = None,
) -> TrackingConfig:
    """The :class:`TrackingConfig` of the options given here over ``under``'s over the defaults (:func:`pick`)."""
    u, t = under or {}, TrackingConfig
    return TrackingConfig(
        tracking_uri=pick(u, "tracking_uri", tracking_uri, t.tracking_uri),
        experiment=pick(u, "experiment", experiment, t.experiment),
        run_name=pick(u, "run_name", run_name, t.run_name),
        register=pick(u, "register", register, t.register),
        save_freq=pick(u, "save_freq", save_freq, t.save_freq),
        system_metrics=pick(u, "system_metrics", system_metrics, t.system_metrics),
    )
