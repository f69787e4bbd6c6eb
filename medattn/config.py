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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from medattn import registry
from medattn.config_parts import (
    DUPLICATES,
    MODES,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
    data_config,
    model_config,
    optim_config,
    pick,
    tracking_config,
)
from medattn.errors import ConfigError
from medattn.metrics import EPOCH_METRIC_NAMES, metric_mode
from medattn.registry import choose

RESIZE_MODES = ("direct_resize", "resizeshortest_randomcrop")
HEADS = ("pool", "flatten", "paper")  # models.factory.HEAD_CHOICES must match (tests check)
INITS = ("fair", "paper")
PRETRAINED = ("imagenet", "none")
SCHEDULERS = ("none", "cosine")
UNCERTAIN = ("ignore", "zeros", "ones")
DATA_PIPELINES = ("auto", "gpu", "cpu")
#: Options that configs logged by older versions lack, with the value that reproduces what those
#: versions did (runs logged before near-duplicate grouping existed split without looking for them).
LEGACY_DEFAULTS: dict[str, Any] = {"duplicates": "ignore"}
SPLITS = ("train", "val", "test")
#: ``interpret --target``: the class explained, the ground truth or the model's prediction.
TARGETS = ("label", "pred")
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "validate": "val", "test": "test"}


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
        data, model, optim = _check_train(self)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "optim", optim)

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


#: Keys a file may never set: where runs and trials are stored is where the team's credentials
#: (``MLFLOW_TRACKING_USERNAME/PASSWORD``, a database password) are sent, so only the person running
#: the command chooses it, on the command line or in the environment.
STORE_KEYS = {
    "tracking_uri": "--tracking-uri or MLFLOW_TRACKING_URI",
    "storage": "--storage or OPTUNA_STORAGE",
}


def _refuse_store_key(path: Path, key: str) -> None:
    """Refuse a file's ``tracking_uri`` / ``storage`` key (see :data:`STORE_KEYS`)."""
    name = _key(key).lower()
    for store_key, how in STORE_KEYS.items():
        if name == store_key or name.replace("_", "") == store_key.replace("_", ""):
            raise ConfigError(
                f"config file {str(path)!r} sets {key!r}, but a file never chooses where runs go (the team's "
                f"credentials would be sent there); remove it and pass the store with {how}."
            )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment YAML file into a flat mapping with canonical (underscore) keys.

    Args:
        path: a ``.yaml`` file holding a flat mapping of option names to values.

    Returns:
        The mapping, keys normalised; a ``grid`` entry (used by ``medattn grid``) is kept as is.

    Raises:
        ConfigError: the file is missing, not YAML, not a mapping, has unknown keys, or sets
            ``tracking_uri`` / ``storage`` (:data:`STORE_KEYS`; also inside ``grid``).
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
    grid = raw.get("grid")
    for k in [*raw, *(grid if isinstance(grid, Mapping) else ())]:
        _refuse_store_key(p, str(k))
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


def train_config(values: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of a flat mapping of option names to values (missing: the defaults).

    Raises:
        ConfigError: an invalid value (the keys are checked by the callers: :func:`known_options`).
    """
    return TrainConfig(
        data=data_config(values),
        model=model_config(values),
        optim=optim_config(values),
        tracking=tracking_config(values),
        device=pick(values, "device", None, TrainConfig.device),
        resume=pick(values, "resume", None, TrainConfig.resume),
        ckpt=pick(values, "ckpt", None, TrainConfig.ckpt),
    )


def known_options(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``values`` with canonical keys (:data:`KEY_ALIASES`, underscores) and without ``None`` ("not given").

    Raises:
        ConfigError: a key that is no option of ``medattn train``.
    """
    known = _all_keys()
    out: dict[str, Any] = {}
    for k, v in (values or {}).items():
        key = KEY_ALIASES.get(_key(k), _key(k))
        if key not in known:
            raise ConfigError(f"unknown option {k!r}.")
        if v is not None:
            out[key] = v
    return out


def config_file_values(config_file: str | Path | None) -> dict[str, Any]:
    """The options an experiment file sets (:func:`load_yaml` without its ``grid``); ``{}`` without a file."""
    if config_file is None:
        return {}
    return {k: v for k, v in load_yaml(config_file).items() if k != "grid"}


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
    return train_config({**config_file_values(config_file), **known_options(overrides)})


def validate(cfg: TrainConfig) -> TrainConfig:
    """The config, checked (the constructor already checks; kept for callers of the older API)."""
    return cfg


def _check_train(cfg: TrainConfig) -> tuple[DataConfig, ModelConfig, OptimConfig]:
    """Check a training config; returns its data, model and optim parts with canonical names.

    Dataset and model names are canonicalised by their registries (:func:`medattn.registry.canonical`),
    the fixed choices by the same look-up (:func:`medattn.registry.choose`).
    """
    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.tracking
    d = dataclasses.replace(
        d,
        resize=_choice("resize", d.resize, RESIZE_MODES),
        uncertain=_choice("uncertain", d.uncertain, UNCERTAIN),
        data_pipeline=_choice("data_pipeline", d.data_pipeline, DATA_PIPELINES),
        duplicates=_choice("duplicates", d.duplicates, DUPLICATES),
    )
    m = dataclasses.replace(
        m,
        head=_choice("head", m.head, HEADS),
        init=_choice("init", m.init, INITS),
        pretrained=None if m.pretrained is None else _choice("pretrained", m.pretrained, PRETRAINED),
    )
    o = dataclasses.replace(
        o,
        scheduler=_choice("scheduler", o.scheduler, SCHEDULERS),
        select_metric=check_metric(o.select_metric, option="--select-metric"),
    )
    if not 0.0 < d.perc_train <= 1.0:
        raise ConfigError(f"--perc-train must be in (0, 1], got {d.perc_train}.")
    positive("img_size", d.img_size)
    positive("epochs", o.epochs)
    positive("batch_size", o.batch_size)
    positive("nr_layers", m.nr_layers)
    positive("patch_size", m.patch_size)
    if o.lr <= 0:
        raise ConfigError(f"--lr must be positive, got {o.lr}.")
    at_least("num_workers", d.num_workers, 0, "0 or more")
    at_least("save_freq", t.save_freq, 0, "0 (off) or more")
    if cfg.resume and cfg.ckpt:
        raise ConfigError("give either --resume RUN_ID or --ckpt PATH, not both.")
    # the seed required both flags; --perc-train < 1 implies the low-data regimen here
    low = d.low_data_regimen or d.perc_train < 1.0
    data = dataclasses.replace(d, dataset=registry.canonical("dataset", d.dataset), low_data_regimen=low)
    model = registry.canonical("model", m.model)
    _check_zero_init(cfg, model, data.dataset)
    return data, dataclasses.replace(m, model=model), o


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
    """Whether ``--zero-init-residual`` applies to ``model``: a ResNet-50 variant."""
    return getattr(registry.lookup("model").get(model), "backbone", None) == "resnet50"


def zero_init_error(model: str) -> ConfigError:
    """The one sentence for ``--zero-init-residual`` on a model without ResNet bottlenecks."""
    return ConfigError(
        "--zero-init-residual applies to the ResNet-50 variants (their bottlenecks' last BatchNorm); "
        f"{model} has no such residual branch, so leave the option out for it."
    )


def check_metric(metric: str, *, shown: str | None = None, option: str = "--metric") -> str:
    """The canonical name of a metric medattn train logs per epoch (:data:`~medattn.metrics.EPOCH_METRIC_NAMES`).

    Args:
        metric: the name to check (``Val-AUC`` -> ``val_auc``).
        shown: the spelling the user gave, for the error message (default ``metric``).
        option: the option that took it, for the error message.

    Raises:
        ConfigError: an unknown name, with a suggestion (:func:`medattn.registry.choose`).
    """
    return choose(metric, EPOCH_METRIC_NAMES, what="per-epoch metric", option=option, shown=shown)


def check_mode(mode: str | None, metric: str) -> str:
    """The optimisation direction: ``mode``, or the metric's natural one (``min`` for losses)."""
    mode = mode or metric_mode(metric)
    if mode not in MODES:
        raise ConfigError(f"--mode must be max or min, got {mode!r}.")
    return mode


def at_least(name: str, value: float, low: float, what: str) -> None:
    if value < low:
        raise ConfigError(f"--{name.replace('_', '-')} must be {what}, got {value}.")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """The canonical spelling of option ``--name``'s ``value`` (:func:`medattn.registry.choose`)."""
    return choose(value, choices, what=name.replace("_", " "), option=f"--{name.replace('_', '-')}")


def positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}.")


def config_from_flat(flat: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from :meth:`TrainConfig.flat` (e.g. a run's ``config.yaml``).

    Unknown keys (from newer versions) are ignored so that old runs stay loadable; keys older
    versions did not log take :data:`LEGACY_DEFAULTS` (the behaviour of those versions).
    """
    known = _all_keys()
    kept = {k: v for k, v in with_legacy_defaults(flat).items() if k in known and k not in _NOT_IN_YAML}
    return train_config(kept)


def with_legacy_defaults(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A logged flat config with :data:`LEGACY_DEFAULTS` filled in where it lacks them.

    Rebuilding (``test``, ``interpret``) or resuming a run logged by an older version then makes
    the same splits it trained on.
    """
    return {**LEGACY_DEFAULTS, **flat}


def split_name(name: str) -> str:
    """Canonical split name (``validation`` → ``val``; :data:`SPLIT_ALIASES`); ConfigError otherwise."""
    return choose(name, SPLIT_ALIASES, what="split")


# =============================================================================================
# shared parts of the other commands' configs (each command's config lives in its stage module)
# =============================================================================================
#: Choices of ``interpret --removal`` (:mod:`medattn.explain.removal`; road first, the default).
REMOVALS = ("road", "zeros", "blur")


def set_field(obj: object, name: str, value: Any) -> None:
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
        set_field(self, "split", split_name(self.split))


def saliency_choice(value: str) -> str:
    """``all`` or the canonical name of an explanation method (``--saliency-maps``; any case)."""
    methods = registry.lookup("explanation method")
    spellings = {"all": "all", **{n: n for n in methods.names()}}
    return choose(value, spellings, what="method", option="--saliency-maps")


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha-overlay must lie in [0, 1], got {alpha}.")


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
    """``--seeds 0,1,2`` as a tuple of distinct integers (``None`` or empty: not given).

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


#: Subgroup attributes ``medattn test --subgroups`` knows (each data set documents where it reads them).
SUBGROUP_ATTRIBUTES = ("sex", "age", "site")


def check_subgroups(names: str | Sequence[str]) -> tuple[str, ...]:
    """``"sex,age"`` or ``("sex", "age")`` → ``("sex", "age")``: known attributes, each once, in order.

    Raises:
        ConfigError: an attribute outside :data:`SUBGROUP_ATTRIBUTES` (with a "did you mean").
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if not item:
            continue
        if item not in SUBGROUP_ATTRIBUTES:
            close = difflib.get_close_matches(item, SUBGROUP_ATTRIBUTES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"unknown subgroup column {item!r} in --subgroups; {hint}choose from {', '.join(SUBGROUP_ATTRIBUTES)}."
            )
        if item not in out:
            out.append(item)
    return tuple(out)
