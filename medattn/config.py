"""Frozen run configurations, composed from shared parts, and YAML experiment files.

A config is built in three layers: dataclass defaults < the YAML file given with ``--config`` <
options given on the command line. YAML files are flat mappings whose keys are the option names
(dash or underscore spelling: ``batch-size`` or ``batch_size``); unknown keys are an error with a
suggestion. The resolved config is logged to MLflow both as params and as ``config.yaml``.

Example (``experiments/demo.yaml``)::

    dataset: demo
    img_size: 64
    epochs: 4
    lr: 1.0e-3
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from medattn import registry
from medattn.errors import ConfigError
from medattn.metrics import EPOCH_METRIC_NAMES, metric_mode

RESIZE_MODES = ("direct_resize", "resizeshortest_randomcrop")
HEADS = ("pool", "flatten", "paper")  # models.factory.HEAD_CHOICES must match (tests check)
INITS = ("fair", "paper")
PRETRAINED = ("imagenet", "none")
SCHEDULERS = ("none", "cosine")
UNCERTAIN = ("ignore", "zeros", "ones")
DATA_PIPELINES = ("auto", "gpu", "cpu")
#: ``--duplicates``: near-duplicate images kept in one split (group), one kept per group (drop), or not
#: searched (ignore); the one list ``medattn.data.duplicates`` uses too.
DUPLICATES = ("group", "drop", "ignore")
#: Options that configs logged by older versions lack, with the value that reproduces what those
#: versions did (a run logged before issue 20 split without looking for near-duplicates).
LEGACY_DEFAULTS: dict[str, Any] = {"duplicates": "ignore"}
SPLITS = ("train", "val", "test")
#: ``interpret --target``: the class explained, the ground truth or the model's prediction.
TARGETS = ("label", "pred")
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "validate": "val", "test": "test"}
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
    # Input path (issue 8): "gpu" = uint8 cache + batched augmentation on the training device,
    # "cpu" = PIL transforms per image, "auto" = gpu on CUDA when the cache exists, else cpu.
    data_pipeline: str = "auto"
    # Issue 20: near-duplicate images (medattn.data.duplicates): group | drop | ignore.
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


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``medattn train`` needs; see :func:`build_train_config`."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    device: str = "auto"
    resume: str | None = None
    ckpt: str | None = None

    def __post_init__(self) -> None:
        """Check value ranges and canonicalise names (the Python API and the CLI reject the same things)."""
        data, model = _check_train(self)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "model", model)

    def flat(self) -> dict[str, Any]:
        """All options as one flat mapping (the MLflow params and ``config.yaml``)."""
        out: dict[str, Any] = {}
        for part in (self.data, self.model, self.optim, self.tracking):
            out.update(dataclasses.asdict(part))
        out.update(device=self.device, resume=self.resume, ckpt=self.ckpt)
        return out

    @property
    def pretrained(self) -> str:
        """The effective ``pretrained`` value (default: ``none`` for demo, ``imagenet`` otherwise)."""
        if self.model.pretrained is not None:
            return self.model.pretrained
        return "none" if self.data.dataset == "demo" else "imagenet"


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "tracking": TrackingConfig}
_TOP = ("device", "resume", "ckpt")
# keys of the resolved config that are about one invocation, not about the experiment
_NOT_IN_YAML = ("resume", "ckpt")


def _key(name: str) -> str:
    return str(name).strip().replace("-", "_")


def _all_keys() -> dict[str, str]:
    keys = {f.name: sec for sec, cls in _SECTIONS.items() for f in fields(cls)}
    keys.update({k: "" for k in _TOP})
    return keys


# accepted spellings from the original project (and the paper's YAML habits)
KEY_ALIASES = {
    "batchsize": "batch_size",
    "imgsize": "img_size",
    "classweights": "class_weights",
    "model_name": "model",
    "arch": "model",
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment YAML file into a flat mapping with canonical (underscore) keys.

    Args:
        path: a ``.yaml`` file holding a flat mapping of option names to values.

    Returns:
        The mapping, keys normalised; a ``grid`` entry (used by ``medattn grid``) is kept as is.

    Raises:
        ConfigError: the file is missing, not YAML, not a mapping, or has unknown keys.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass an existing YAML file to --config.")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}; fix the syntax.") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of option names to values.")
    known = _all_keys()
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = KEY_ALIASES.get(_key(k), _key(k))
        if key == "grid":
            out[key] = v
            continue
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ConfigError(f"unknown option {k!r} in config file {str(p)!r}{hint}")
        out[key] = v
    return out


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Convert YAML/CLI values to the field's type (YAML may give ``1e-4`` as a string)."""
    if value is None:
        return None
    typ = {f.name: f.type for f in fields(cls)}[name]
    try:
        if typ == "int":
            return int(value)
        if typ == "float":
            return float(value)
        if typ == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "yes", "1", "on"):
                    return True
                if low in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ in ("str", "str | None"):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name!r} has value {value!r}, which is not a valid {typ}.") from None
    return value


def build_train_config(
    overrides: Mapping[str, Any] | None = None, *, config_file: str | Path | None = None
) -> TrainConfig:
    """Compose a :class:`TrainConfig` from defaults, an optional YAML file and overrides.

    Args:
        overrides: option name → value; ``None`` values are ignored (not given on the CLI).
        config_file: a YAML experiment file (``experiments/*.yaml``).

    Returns:
        The validated, frozen config. Dataset and model names are canonicalised.

    Raises:
        ConfigError: an unknown key or an invalid value.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update({k: v for k, v in load_yaml(config_file).items() if k != "grid"})
    known = _all_keys()
    for k, v in (overrides or {}).items():
        key = KEY_ALIASES.get(_key(k), _key(k))
        if key not in known:
            raise ConfigError(f"unknown option {k!r}.")
        if v is not None:
            values[key] = v
    parts: dict[str, Any] = {}
    for sec, cls in _SECTIONS.items():
        kw = {f.name: _coerce(cls, f.name, values[f.name]) for f in fields(cls) if f.name in values}
        parts[sec] = cls(**kw)
    top = {k: (str(values[k]) if values.get(k) is not None else None) for k in _TOP if k in values}
    cfg = TrainConfig(**parts, **top)
    return validate(cfg)


def validate(cfg: TrainConfig) -> TrainConfig:
    """The config, checked (the constructor already checks; kept for callers of the older API)."""
    return cfg


def _check_train(cfg: TrainConfig) -> tuple[DataConfig, ModelConfig]:
    """Check a training config; returns its data and model parts with canonical names.

    Dataset and model names are canonicalised by their registries (:func:`medattn.registry.canonical`).
    """
    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.tracking
    _choice("resize", d.resize, RESIZE_MODES)
    _choice("uncertain", d.uncertain, UNCERTAIN)
    _choice("data_pipeline", d.data_pipeline, DATA_PIPELINES)
    duplicates = str(d.duplicates).strip().lower()
    _choice("duplicates", duplicates, DUPLICATES)
    _choice("head", m.head, HEADS)
    _choice("init", m.init, INITS)
    if m.pretrained is not None:
        _choice("pretrained", m.pretrained, PRETRAINED)
    _choice("scheduler", o.scheduler, SCHEDULERS)
    if not 0.0 < d.perc_train <= 1.0:
        raise ConfigError(f"--perc-train must be in (0, 1], got {d.perc_train}.")
    _positive("img_size", d.img_size)
    _positive("epochs", o.epochs)
    _positive("batch_size", o.batch_size)
    _positive("nr_layers", m.nr_layers)
    _positive("patch_size", m.patch_size)
    if o.lr <= 0:
        raise ConfigError(f"--lr must be positive, got {o.lr}.")
    _at_least("num_workers", d.num_workers, 0, "0 or more")
    _at_least("save_freq", t.save_freq, 0, "0 (off) or more")
    if o.select_metric not in EPOCH_METRIC_NAMES:
        close = difflib.get_close_matches(o.select_metric, EPOCH_METRIC_NAMES, n=1)
        raise ConfigError(
            f"--select-metric must name a logged metric such as val_loss or val_auc, got {o.select_metric!r}"
            + (f"; did you mean {close[0]!r}?" if close else ".")
        )
    if cfg.resume and cfg.ckpt:
        raise ConfigError("give either --resume RUN_ID or --ckpt PATH, not both.")
    # the seed required both flags; --perc-train < 1 implies the low-data regimen here
    low = d.low_data_regimen or d.perc_train < 1.0
    data = dataclasses.replace(
        d, dataset=registry.canonical("dataset", d.dataset), low_data_regimen=low, duplicates=duplicates
    )
    model = registry.canonical("model", m.model)
    _check_zero_init(cfg, model, data.dataset)
    return data, dataclasses.replace(m, model=model)


def _check_zero_init(cfg: TrainConfig, model: str, dataset: str) -> None:
    """``--zero-init-residual`` only where it takes effect: a ResNet variant trained from scratch."""
    m = cfg.model
    if not m.zero_init_residual:
        return
    if not zero_init_applies(model):
        raise zero_init_error(model)
    pretrained = m.pretrained if m.pretrained is not None else ("none" if dataset == "demo" else "imagenet")
    if pretrained != "none" or m.weights or cfg.ckpt:
        raise ConfigError(
            "--zero-init-residual sets how a ResNet starts from scratch, and loaded weights would replace it; "
            "add --pretrained none and leave out --weights/--ckpt, or drop --zero-init-residual."
        )


def zero_init_applies(model: str) -> bool:
    """Whether ``--zero-init-residual`` applies to ``model``: a ResNet-50 variant (True while the
    model registry is not loaded, as the other registry checks)."""
    models = registry.lookup("model")
    return models is None or getattr(models.get(model), "backbone", None) == "resnet50"


def zero_init_error(model: str) -> ConfigError:
    """The one sentence for ``--zero-init-residual`` on a model without ResNet bottlenecks."""
    return ConfigError(
        "--zero-init-residual applies to the ResNet-50 variants (their bottlenecks' last BatchNorm); "
        f"{model} has no such residual branch, so leave the option out for it."
    )


def check_metric(metric: str, *, shown: str | None = None, what: str = "a metric medattn train logs per epoch") -> str:
    """``metric`` if medattn train logs it per epoch (:data:`~medattn.metrics.EPOCH_METRIC_NAMES`).

    Args:
        metric: the name to check.
        shown: the spelling the user gave (default ``metric``).
        what: how the error sentence describes the expected metric.

    Raises:
        ConfigError: an unknown name, with a suggestion.
    """
    if metric not in EPOCH_METRIC_NAMES:
        close = difflib.get_close_matches(metric, EPOCH_METRIC_NAMES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "use e.g. val_auc or val_loss."
        raise ConfigError(f"--metric {shown or metric!r} is not {what}; {hint}")
    return metric


def check_mode(mode: str | None, metric: str) -> str:
    """The optimisation direction: ``mode``, or the metric's natural one (``min`` for losses)."""
    mode = mode or metric_mode(metric)
    if mode not in MODES:
        raise ConfigError(f"--mode must be max or min, got {mode!r}.")
    return mode


def _at_least(name: str, value: float, low: float, what: str) -> None:
    if value < low:
        raise ConfigError(f"--{name.replace('_', '-')} must be {what}, got {value}.")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(choices)}."
        raise ConfigError(f"--{name.replace('_', '-')} {value!r} is not valid; {hint}")


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}.")


def config_from_flat(flat: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from :meth:`TrainConfig.flat` (e.g. a run's ``config.yaml``).

    Unknown keys (from newer versions) are ignored so that old runs stay loadable; keys older
    versions did not log take :data:`LEGACY_DEFAULTS` (the behaviour of those versions).
    """
    known = _all_keys()
    kept = {k: v for k, v in with_legacy_defaults(flat).items() if k in known and k not in _NOT_IN_YAML}
    parts = {
        sec: cls(**{f.name: _coerce(cls, f.name, kept[f.name]) for f in fields(cls) if f.name in kept})
        for sec, cls in _SECTIONS.items()
    }
    return TrainConfig(**parts, device=str(kept.get("device", "auto")))


def with_legacy_defaults(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A logged flat config with :data:`LEGACY_DEFAULTS` filled in where it lacks them.

    Rebuilding (``test``, ``interpret``) or resuming a run logged by an older version then makes
    the same splits it trained on.
    """
    return {**LEGACY_DEFAULTS, **flat}


def split_name(name: str) -> str:
    """Canonical split name (``validation`` → ``val``); ConfigError otherwise."""
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ConfigError(f"unknown split {name!r}; choose train, validation or test.")
    return SPLIT_ALIASES[key]


# =============================================================================================
# the other commands: configs composed of shared parts, checked in their constructors
# =============================================================================================
#: The variants ``medattn demo`` trains by default (the paper's seven).
DEMO_MODELS = (
    "resnet50",
    "se_resnet50",
    "cbam_resnet50",
    "densenet121",
    "se_densenet121",
    "cbam_densenet121",
    "deit_tiny",
)
#: Choices of ``interpret --removal`` (:mod:`medattn.explain.evaluation`; road first, the default).
REMOVALS = ("road", "zeros", "blur")
#: Choices of ``compare --cases``.
CASES = ("tp", "tn", "fp", "fn", "agree", "disagree")
#: ``search --storage`` default (relative to the working directory).
DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_BATCH_SIZES = (8, 16, 32, 64)


def _set(obj: object, name: str, value: Any) -> None:
    """Assign a canonicalised value in a frozen dataclass's ``__post_init__``."""
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, kw_only=True)
class TrackingPart:
    """Where runs are tracked (every command)."""

    tracking_uri: str | None = None


@dataclass(frozen=True, kw_only=True)
class RuntimePart(TrackingPart):
    """Where and how reproducibly a command runs."""

    device: str = "auto"
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class SourcePart:
    """Which trained model a command reads (exactly one of the three) and on which split."""

    run_id: str | None = None
    model_uri: str | None = None
    ckpt: str | None = None
    split: str = "test"
    data_dir: str | None = None
    experiment: str | None = None

    def __post_init__(self) -> None:
        """Exactly one source; the split canonicalised."""
        if len([x for x in (self.run_id, self.model_uri, self.ckpt) if x]) != 1:
            raise ConfigError("give exactly one of --run-id, --model-uri or --ckpt.")
        _set(self, "split", split_name(self.split))


@dataclass(frozen=True, kw_only=True)
class TestConfig(SourcePart, RuntimePart):
    """Options of ``medattn test``; exactly one of ``run_id``, ``model_uri``, ``ckpt``."""

    __test__ = False  # not a pytest class

    batch_size: int = 64
    num_workers: int = 0
    n_boot: int = 1000

    def __post_init__(self) -> None:  # noqa: D105
        super().__post_init__()
        _positive("batch_size", self.batch_size)
        _at_least("num_workers", self.num_workers, 0, "0 or more")
        _at_least("n_boot", self.n_boot, 0, "0 or more")


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
    curve_images: int | None = None  # deletion/insertion on the first this many images (None: all)
    randomized_images: int | None = None  # images explained on the randomised model (None: all)
    n_boot: int = 1000  # bootstrap resamples per 95 % CI (0: no CIs, hence no method passes)
    removal: str = "road"  # removal curves: road (MoRF/LeRF, noisy linear imputation), zeros or blur

    def __post_init__(self) -> None:  # noqa: D105
        super().__post_init__()
        if self.removal not in REMOVALS:
            raise ConfigError(f"--removal must be one of {', '.join(REMOVALS)}, got {self.removal!r}.")
        if self.target not in TARGETS:
            raise ConfigError(f"--target must be label or pred, got {self.target!r}.")
        _at_least("max_images", self.max_images, 1, "at least 1")
        _at_least("steps", self.steps, 1, "at least 1")
        for name in ("curve_images", "randomized_images"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1, "at least 1")
        _at_least("n_boot", self.n_boot, 0, "0 or more")
        _positive("batch_size", self.batch_size)
        _set(self, "methods", tuple(registry.canonical("explanation method", m) for m in self.methods))


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
            _at_least("max_images", self.max_images, 0, "0 (every image) or more")
            _set(self, "max_images", self.max_images or None)
        _set(self, "saliency_maps", saliency_choice(self.saliency_maps))
        _check_alpha(self.alpha_overlay)


def saliency_choice(value: str) -> str:
    """``all`` or the canonical name of an explanation method (``--saliency-maps``)."""
    choice = value.strip().lower().replace("_", "-")
    if choice == "all":
        return choice
    reg = registry.lookup("explanation method")
    if reg is not None and choice in reg:
        return reg.canonical(choice)
    names = ["all", *(reg.names() if reg is not None else [])]
    raise ConfigError(f"--saliency-maps must be one of {', '.join(n.upper() for n in names)}, got {value!r}.")


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha-overlay must lie in [0, 1], got {alpha}.")


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
        _at_least("max_images", self.max_images, 1, "at least 1")
        if not self.metric.startswith("test_"):
            raise ConfigError(f"--metric must be a test metric such as test_auc, got {self.metric!r}.")
        _check_alpha(self.alpha_overlay)


@dataclass(frozen=True, kw_only=True)
class PromoteConfig(TrackingPart):
    """Options of ``medattn promote``.

    Attributes:
        experiment: MLflow experiment whose training runs compete (default ``medattn-<dataset>``).
        dataset: only runs of this data set compete; also names the default experiment
            (``demo`` when neither is given).
        metric: per-epoch metric name, e.g. ``val_auc`` (``best_val_auc`` is used when logged).
        mode: ``max`` or ``min``; default ``min`` for losses, ``max`` otherwise.
        alias: registry alias to move.
        tracking_uri: MLflow tracking URI.
    """

    experiment: str | None = None
    dataset: str | None = None
    metric: str = "val_auc"
    mode: str | None = None
    alias: str = "champion"

    def __post_init__(self) -> None:  # noqa: D105
        base = self.metric[len("best_") :] if self.metric.startswith("best_") else self.metric
        check_metric(base, shown=self.metric, what="a metric medattn train logs")
        check_mode(self.mode, base)
        alias = self.alias.strip()
        if (
            not alias
            or not all(c.isalnum() or c in "_-" for c in alias)
            or alias.lower() == "latest"
            or (alias[0] in "vV" and alias[1:].isdigit())
        ):
            raise ConfigError(
                f"--alias {self.alias!r} is not a valid registry alias; use letters, digits, '-' or '_' "
                "(not 'latest' or v<number>), e.g. champion."
            )
        if self.dataset:
            _set(self, "dataset", registry.canonical("dataset", self.dataset))

    @property
    def base_metric(self) -> str:
        """The per-epoch metric compared (``best_`` prefix removed)."""
        return self.metric[len("best_") :] if self.metric.startswith("best_") else self.metric


def parse_batch_sizes(text: str | int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``"8,16,32"`` → ``(8, 16, 32)`` (sorted, duplicates removed).

    Raises:
        ConfigError: no entry is a positive integer, or some entry is not one.
    """
    items = text.split(",") if isinstance(text, str) else list(text if not isinstance(text, int) else [text])
    sizes: set[int] = set()
    for item in items:
        raw = str(item).strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"--batch-sizes entry {raw!r} is not an integer; give e.g. 8,16,32,64.") from None
        if value <= 0:
            raise ConfigError(f"--batch-sizes entry {value} is not positive; give e.g. 8,16,32,64.")
        sizes.add(value)
    if not sizes:
        raise ConfigError("--batch-sizes holds no valid batch size; give e.g. 8,16,32,64.")
    return tuple(sorted(sizes))


def parse_seeds(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``--seeds 0,1,2`` as a tuple of distinct integers (``None`` or empty: not given; issue 12.3).

    Raises:
        ConfigError: an entry is not an integer, or a seed is repeated.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        seeds = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"--seeds must be comma-separated integers such as 0,1,2, got {text!r}.") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {text!r}; give each seed once.")
    return seeds or None


@dataclass(frozen=True, kw_only=True)
class SearchConfig(TrackingPart):
    """Options of ``medattn search``.

    Attributes:
        dataset: data set id (aliases accepted).
        model: architecture (seed spellings accepted).
        data_dir: data folder (default: the config file's or ``demo_data``).
        n_trials: trials added by this invocation (at least 1).
        storage: Optuna storage URL; a relative sqlite path is relative to the working directory.
            ``None`` or empty: ``$OPTUNA_STORAGE``, else :data:`DEFAULT_STORAGE` (issue 19: credentials
            stay out of ``mlflow run -P``).
        study_name: default ``medattn-<dataset>-<model>-<metric>``.
        n_jobs: parallel trials in threads of this process (use an RDB storage and several
            processes for more workers).
        metric: per-epoch metric the trials are ranked and pruned by.
        mode: ``max`` or ``min``; default from the metric (``min`` for losses).
        epochs: epochs per trial (default: the config file's, else the train default).
        config_file: an ``experiments/*.yaml`` file with the fixed training options.
        lr_min: lower end of the log-uniform learning-rate range.
        lr_max: upper end of the log-uniform learning-rate range.
        batch_sizes: categorical batch-size choices (sorted, duplicates removed).
        img_size: image side (default: the config file's, else the train default).
        device: ``auto``, ``cpu`` or ``cuda:N`` (default: the config file's, else auto).
        experiment: MLflow experiment (default ``medattn-<dataset>``).
        tracking_uri: MLflow tracking URI.
        seed: seed of the TPE sampler (training seeds come from the config).
        prune_startup_trials: MedianPruner ``n_startup_trials``.
        prune_warmup_epochs: MedianPruner ``n_warmup_steps`` (epochs before pruning may happen).
        heartbeat_s: seconds between the heartbeats of a running trial in the storage; a trial
            silent for twice that is failed and retried by the next worker (0: no heartbeat).
        trial_retries: how often a trial whose worker died is retried.
        log_models: log each trial's model to MLflow (checkpoints are always logged).
        train_overrides: further ``medattn train`` options fixed for every trial (e.g.
            ``{"nr_layers": 1}``); they win over the config file.
    """

    dataset: str = "demo"
    model: str = "resnet50"
    data_dir: str | None = None
    n_trials: int = 20
    storage: str | None = None
    study_name: str | None = None
    n_jobs: int = 1
    metric: str = "val_auc"
    mode: str | None = None
    epochs: int | None = None
    config_file: str | None = None
    lr_min: float = 1e-6
    lr_max: float = 1e-2
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    img_size: int | None = None
    device: str | None = None
    experiment: str | None = None
    seed: int = 0
    prune_startup_trials: int = 5
    prune_warmup_epochs: int = 1
    heartbeat_s: int = 60
    trial_retries: int = 1
    log_models: bool = False
    train_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # noqa: D105
        metric = check_metric(self.metric)
        mode = check_mode(self.mode, metric)
        if mode != metric_mode(metric):
            verb = "minimised" if metric_mode(metric) == "min" else "maximised"
            raise ConfigError(f"--mode {mode} contradicts {metric}, which is always {verb}; leave --mode out.")
        _at_least("n_trials", self.n_trials, 1, "at least 1")
        _at_least("n_jobs", self.n_jobs, 1, "at least 1")
        if not (math.isfinite(self.lr_min) and math.isfinite(self.lr_max)) or self.lr_min <= 0:
            raise ConfigError(f"--lr-min must be a positive number, got {self.lr_min}.")
        if self.lr_min >= self.lr_max:
            raise ConfigError(f"--lr-min ({self.lr_min:g}) must be smaller than --lr-max ({self.lr_max:g}).")
        if self.prune_startup_trials < 0 or self.prune_warmup_epochs < 0:
            raise ConfigError("--prune-startup-trials and --prune-warmup-epochs must be 0 or more.")
        _at_least("heartbeat_s", self.heartbeat_s, 0, "0 (no heartbeat) or more seconds")
        _at_least("trial_retries", self.trial_retries, 0, "0 or more")
        _set(self, "batch_sizes", parse_batch_sizes(self.batch_sizes))
        _set(self, "mode", mode)


# The demo's training settings (experiments/demo.yaml holds the same values for `medattn train`).
# Issue 12: 8 epochs, not 4, on the version-2 set: ResNet-50's val AUC still rises steeply at epoch 4
# (0.41/0.50/0.58/0.74/0.80/0.84/0.91/0.93 by epoch at difficulty 0.3); test AUC 0.729 after 6
# epochs, 0.867 [0.774, 0.942] after 8 (README, "Demo results").
DEMO_TRAIN_DEFAULTS: dict[str, Any] = {
    "img_size": 64,
    "epochs": 8,
    "batch_size": 32,
    "lr": 1e-3,
    "select_metric": "val_loss",
    "pretrained": "none",
    "save_freq": 0,
}
# A ViT from scratch needs more (and gentler) steps than the CNNs before its predictions leave
# one class; measured on the demo set at 64 px: 4 epochs at 1e-3 gave balanced accuracy 0.5.
# A demo-only deviation from the paper: 8-px patches instead of DeiT's 16 px. At 64 px a 16-px
# patch grid is 4 × 4 tokens, each covering a whole blob and its surroundings; from scratch on
# ~240 training images DeiT stayed at chance (test AUC ~0.5). 8-px patches give an 8 × 8 grid.
DEMO_MODEL_OVERRIDES: dict[str, dict[str, Any]] = {"deit_tiny": {"epochs": 8, "lr": 5e-4, "patch_size": 8}}


@dataclass(frozen=True, kw_only=True)
class DemoConfig(RuntimePart):
    """Options of ``medattn demo`` (defaults sized for a 2-core CPU in a few minutes)."""

    data_dir: str = "demo_data"
    n: int = 400
    synth_size: int = 96
    models: tuple[str, ...] = DEMO_MODELS
    config_file: str | None = None  # a YAML whose values replace DEMO_TRAIN_DEFAULTS
    epochs: int | None = None
    experiment: str = "medattn-demo"
    # Further images that only the test split receives (the demo split): ~80 of the 400 plus these
    # make a test split of ≥ 600 images, so a test AUC's 95 % CI is about ±0.03 wide at AUC 0.85.
    test_extra: int = 560
    # The first 80 test images are explained (about 40 whose explained class is the lesion, so the
    # mask scores' CIs rest on about 40 images); the costly parts are capped below.
    explain_images: int = 80  # test images explained per model (0: skip interpret)
    explain_steps: int = 8  # deletion/insertion steps in the demo
    curve_images: int | None = 16  # images with deletion/insertion curves per method
    randomized_images: int | None = 16  # images explained on the randomised model per method
    # Heat-map figures cost ~0.1 s each on 2 cores; every explained image took ~12 s per model.
    figure_images: int = 8  # explained images drawn as figures per model
    difficulty: float | None = None  # the demo set's difficulty (None: the data set's default)
    promote: bool = True
    seeds: tuple[int, ...] | None = None  # every variant trained and tested once per seed (issue 12.3)

    def __post_init__(self) -> None:  # noqa: D105
        if self.n < 20:
            raise ConfigError(f"--n must be at least 20 so that every split holds both classes, got {self.n}.")
        _at_least("explain_images", self.explain_images, 0, "0 (off) or more")
        _at_least("test_extra", self.test_extra, 0, "0 or more")
        _at_least("figure_images", self.figure_images, 1, "at least 1")
        for name in ("curve_images", "randomized_images"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1, "at least 1")
        if self.difficulty is not None and not 0.0 <= self.difficulty <= 1.0:
            raise ConfigError(f"--difficulty must lie in [0, 1], got {self.difficulty}.")
        _set(self, "models", tuple(registry.canonical("model", m) for m in self.models))
        _set(self, "seeds", parse_seeds(self.seeds))


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Options of ``medattn bench``.

    Attributes:
        models: model names, or ``("all",)``.
        batch_size: training batch of pure/pipeline/files.
        img_size: image side.
        steps: timed training steps (pure, pipeline).
        warmup: untimed steps before each timed region.
        seed_batch_size: batch of the seed configuration.
        seed_steps: timed steps of the seed configuration.
        files_steps: timed steps of the files path (slow: bounded by PIL decoding).
        num_workers: DataLoader workers of the files path.
        infer_batch_size: inference batch.
        infer_steps: timed inference batches.
        attr_batch_size: batched explanation size.
        attr_steps: timed batched explanation calls per method.
        single_steps: timed one-image explanation calls per method.
        num_images: images of the synthetic data set.
        source_size: ``(height, width)`` of its JPEG files (ISIC/APTOS photos are ~512×680 after
            the usual downscaling).
        nr_layers: DeiT blocks.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        compile: ``torch.compile`` the model for pure and pipeline.
        work_dir: where the synthetic data set is written (a temporary folder if ``None``).
        out: JSON file to write (default: ``benchmarks/results/<device>-<date>.json`` for a full
            CUDA run, ``medattn-bench-<device>-<date>.json`` in the working directory otherwise).
        quick: tiny CPU settings for the test suite (:func:`quick_config`).
        prepare: also measure ``medattn data prepare`` (issue 18) on synthetic high-resolution files.
        prepare_workers: most workers of the prepare scaling series (``None``: every CPU).
    """

    models: tuple[str, ...] = ("all",)
    batch_size: int = 128
    img_size: int = 224
    steps: int = 20
    warmup: int = 5
    seed_batch_size: int = 4
    seed_steps: int = 25
    files_steps: int = 4
    num_workers: int = 8
    infer_batch_size: int = 256
    infer_steps: int = 10
    attr_batch_size: int = 32
    attr_steps: int = 3
    single_steps: int = 8
    num_images: int = 768
    source_size: tuple[int, int] = (512, 680)
    nr_layers: int = 12
    device: str = "auto"
    compile: bool = False
    work_dir: str | None = None
    out: str | None = None
    quick: bool = False
    prepare: bool = False
    prepare_workers: int | None = None

    def __post_init__(self) -> None:  # noqa: D105
        if self.prepare_workers is not None:
            _at_least("prepare_workers", self.prepare_workers, 1, "1 or more (leave it out to use every CPU)")
        for key in (
            "batch_size",
            "img_size",
            "steps",
            "seed_batch_size",
            "seed_steps",
            "files_steps",
            "infer_batch_size",
            "infer_steps",
            "attr_batch_size",
            "attr_steps",
            "single_steps",
            "num_images",
        ):
            _positive(key, getattr(self, key))
        if self.num_workers < 0 or self.warmup < 0:
            raise ConfigError("--num-workers and --warmup must be 0 or more.")
        names = [m.strip() for part in self.models for m in str(part).split(",") if m.strip()]
        if names and names != ["all"]:
            _set(self, "models", tuple(registry.canonical("model", m) for m in names))


def quick_config(**overrides: Any) -> BenchConfig:
    """Tiny settings for the test suite on a CPU: 2 models, 32 px, batch 4, 2 steps, no warm-up."""
    base = dict(
        models=("resnet50", "deit_tiny"),
        batch_size=4,
        img_size=32,
        steps=2,
        warmup=0,
        seed_batch_size=4,
        seed_steps=1,
        files_steps=1,
        num_workers=0,
        infer_batch_size=4,
        infer_steps=1,
        attr_batch_size=2,
        attr_steps=1,
        single_steps=1,
        num_images=40,
        source_size=(40, 48),
        nr_layers=2,
        device="cpu",
        quick=True,
    )
    base.update({k: v for k, v in overrides.items() if v is not None})
    return BenchConfig(**base)
