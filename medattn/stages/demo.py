"""The ``demo`` stage: the whole lifecycle on the synthetic demo set, on a CPU in minutes.

Synthesise the demo set; per variant train, test, explain and draw figures; promote the best;
compare the variants. Runs nest under one parent run (kind ``demo``); under ``mlflow run`` the
project run is that parent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medattn import lazy, registry, tracking
from medattn.config import (
    TARGETS,
    RuntimePart,
    TrainConfig,
    at_least,
    build_train_config,
    load_yaml,
    parse_seeds,
    set_field,
    zero_init_applies,
)
from medattn.data import write_synthetic
from medattn.errors import ConfigError
from medattn.explain.sanity import BASELINES, HIGHER_IS_BETTER, ORACLE, metric_name
from medattn.stages.clinical import table_subgroups
from medattn.stages.compare import CompareConfig, compare
from medattn.stages.evaluate import TestConfig, test
from medattn.stages.figures import FiguresConfig, figures
from medattn.stages.interpret import InterpretConfig, interpret
from medattn.stages.promote import PromoteConfig, PromoteResult, promote
from medattn.stages.report import ReportConfig, report
from medattn.stages.train import train

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help

#: Where the demo writes its report page (in the working directory).
DEMO_REPORT = "demo_report.html"

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


# The demo's training settings (experiments/demo.yaml holds the same values for `medattn train`).
# 8 epochs, not 4, on the version-2 set: ResNet-50's val AUC still rises steeply at epoch 4
# (0.41/0.50/0.58/0.74/0.80/0.84/0.91/0.93 by epoch at difficulty 0.3); test AUC 0.729 after 6
# epochs, 0.867 [0.774, 0.942] after 8 (docs/results.md). The checkpoint of the highest val AUC, not
# the lowest val loss: on the 80 validation images of set version 3 the ResNets' val loss jumps
# (0.70 -> 2.94 between two epochs) on a few confident errors while their AUC still rises, and the
# lowest loss picked SE-ResNet-50's epoch 5 (val AUC 0.61) over its epoch 7 (0.82) (docs/demo.md).
DEMO_TRAIN_DEFAULTS: dict[str, Any] = {
    "img_size": 64,
    "epochs": 8,
    "batch_size": 32,
    "lr": 1e-3,
    "select_metric": "val_auc",
    "pretrained": "none",
    "save_freq": 0,
}


# DeiT-Tiny from scratch on ~240 images: demo-only deviations from the paper, each measured on the
# demo set (version 3, 64 px, validation AUC on its 80 images). 16-px patches give a 4 x 4 token grid
# in which every token covers a whole blob: chance. 8-px patches (8 x 8 grid) with the full 12 blocks,
# 8 epochs at lr 5e-4: test AUC 0.62. 4 blocks, 16 epochs at 5e-4: 0.45 ... 0.69, still rising;
# 4 blocks, 20 epochs at 1e-3 without a schedule: 0.75 at epoch 9, then unstable (0.43 ... 0.76);
# with a cosine schedule: 0.68 ... 0.74 from epoch 7 on. The demo trains 24 epochs, the most its
# 10-minute budget allows (validation AUC peaks at 0.74; 0.72 with 16 epochs). Test AUC moves with the
# schedule's length (16 epochs: 0.688, 20: 0.698, 24: 0.778): a ViT from scratch on 240 images is noisy.
#
# The ResNet-50 variants from scratch: residual branches that start at zero (Goyal et al. 2017,
# `--zero-init-residual`) and lr 2e-3. With torchvision's initialisation and lr 1e-3, plain and
# CBAM-ResNet-50 stayed at chance for 8 epochs (val AUC 0.47-0.61, test 0.518 and 0.557); zero-init
# alone reached val AUC 0.80/0.77/0.74 (plain/SE/CBAM) by epoch 8, still rising; with lr 2e-3
# 0.86/0.82/0.84 by epoch 7, at no extra cost (12 epochs at 1e-3 also reached 0.87, at 1.5 times the time).
DEMO_MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "deit_tiny": {"epochs": 24, "lr": 1e-3, "scheduler": "cosine", "nr_layers": 4, "patch_size": 8},
    **{name: {"zero_init_residual": True, "lr": 2e-3} for name in ("resnet50", "se_resnet50", "cbam_resnet50")},
}


# Images per attribution and removal batch in the demo's interpret runs: 4 times interpret's default,
# so the 64-px forward passes of the removal curves run in fewer, fuller batches on the CPU.
DEMO_EXPLAIN_BATCH = 32

#: The demo run's artifact of sanity verdicts per model × map (:func:`sanity_rows`).
SANITY_CSV = "sanity.csv"


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
    # The first 32 test images are explained (about 14 that show a ring and that a model which
    # learned assigns to the lesion class: the mask scores rest on those); the costly parts are capped
    # below. Measured from a fresh clone on 2 idle cores with 48 explained images, 16 curve and 16
    # randomised images, 4 figures and batches of 8: interpret runs took 171 s of a 541-s demo, and
    # `make demo` 10 min 59 s. With 8 randomised images the randomised model's CIs were too wide for
    # DeepLIFT and LRP to pass on DenseNet-121 (as documented: fewer images make the rule stricter).
    explain_images: int = 32  # test images explained per model (0: skip interpret)
    explain_steps: int = 8  # removal steps (ROAD: geometric, 0.7 … 90 % of the pixels)
    curve_images: int | None = 12  # lesion images with removal curves per map
    randomized_images: int | None = 16  # images explained on the randomised model per method
    figure_images: int = 2  # explained images drawn as figures per model
    # The demo explains the class each model predicted (`medattn interpret --target pred`), not the label:
    # a removal curve measures how the model's confidence in its own decision falls, p_i / p_0 - 1, and
    # for an image the model assigns to the other class p_0 is small and the ratio has no upper bound.
    # Measured on the demo (version 3, DenseNet-121, 16 lesion images, ROAD MoRF): with label targets
    # the ground-truth mask scored -0.39 [-0.50, -0.25], the centre prior -0.15 [-0.29, -0.00]; with
    # predicted targets -0.57 [-0.60, -0.53] against -0.34 [-0.39, -0.28].
    explain_target: str = "pred"  # the class each map explains: pred or label
    difficulty: float | None = None  # the demo set's difficulty (None: the data set's default)
    promote: bool = True
    seeds: tuple[int, ...] | None = None  # every variant trained and tested once per seed

    def __post_init__(self) -> None:  # noqa: D105
        if self.n < 20:
            raise ConfigError(f"--n must be at least 20 so that every split holds both classes, got {self.n}.")
        at_least("explain_images", self.explain_images, 0, "0 (off) or more")
        at_least("test_extra", self.test_extra, 0, "0 or more")
        at_least("figure_images", self.figure_images, 1, "at least 1")
        for name in ("curve_images", "randomized_images"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 1, "at least 1")
        if self.explain_target not in TARGETS:
            raise ConfigError(f"--explain-target must be label or pred, got {self.explain_target!r}.")
        if self.difficulty is not None and not 0.0 <= self.difficulty <= 1.0:
            raise ConfigError(f"--difficulty must lie in [0, 1], got {self.difficulty}.")
        set_field(self, "models", tuple(registry.canonical("model", m) for m in self.models))
        set_field(self, "seeds", parse_seeds(self.seeds))


@dataclass(frozen=True)
class DemoResult:
    """Outcome of :func:`demo`: the parent run and one row per model."""

    parent_run_id: str
    table: pd.DataFrame
    tracking_uri: str
    train_runs: dict[str, str]
    test_runs: dict[str, str]
    xai: pd.DataFrame = field(default_factory=lambda: pd.DataFrame())  # model, method, deletion_auc, ...
    interpret_runs: dict[str, str] = field(default_factory=dict)
    promoted: PromoteResult | None = None
    compare_run_id: str | None = None
    verdicts: list[str] = field(default_factory=list)  # one sentence per attention type (compare's paired ΔAUC)
    report: Path | None = None  # the experiment's report page (demo_report.html)
    sanity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame())  # model, map, passes_sanity, failing


def _ci(metrics: Mapping[str, float], key: str) -> str:
    return f"[{metrics.get(f'{key}_ci_low', math.nan):.3f}, {metrics.get(f'{key}_ci_high', math.nan):.3f}]"


def _row(name: str, res, tres, seconds: float) -> dict[str, Any]:
    m = tres.metrics
    return {
        "model": name,
        "seed": res.config.get("seed"),
        "best_epoch": res.best_epoch,
        "val_auc": res.best_metrics.get("val_auc", math.nan),
        "test_auc": m.get("test_auc", math.nan),
        "test_auc_ci": f"[{m.get('test_auc_ci_low', math.nan):.3f}, {m.get('test_auc_ci_high', math.nan):.3f}]",
        "test_oracle_auc": m.get("test_oracle_auc", math.nan),
        "test_oracle_gap": m.get("test_oracle_gap", math.nan),
        "test_oracle_gap_ci": _ci(m, "test_oracle_gap"),
        "test_n_images": m.get("test_n_images", math.nan),
        "test_balanced_accuracy": m.get("test_balanced_accuracy", math.nan),
        "test_f1": m.get("test_f1", math.nan),
        "train_s": round(seconds, 1),
        "train_run": res.run_id,
    }


def sanity_line(metrics: Mapping[str, float], sources: Iterable[str]) -> str:
    """One phrase per explained method: its pointing game with the 95 % CI, the best baseline's,
    and whether it passes the sanity rule on every score (its CI beyond every baseline's), naming the scores that
    fail, e.g. ``deeplift PG 0.62 [0.47, 0.77] vs baseline 0.41 (edge): passes`` or ``lrp PG 1.00
    [1.00, 1.00] vs baseline 0.44 (input): fails (deletion_auc)``."""
    methods = [s for s in sources if not s.startswith("baseline_") and s != ORACLE]
    baselines = [s.removeprefix("baseline_") for s in sources if s.startswith("baseline_")]
    parts = []
    for method in methods:
        key = f"xai_{method.replace('-', '_')}"
        pg = metrics.get(f"{key}_pointing_game", math.nan)
        low, high = (
            metrics.get(f"{key}_pointing_game_ci_low", math.nan),
            metrics.get(f"{key}_pointing_game_ci_high", math.nan),
        )
        rivals = {
            b: metrics.get(f"xai_baseline_{b}_pointing_game", -math.inf)
            for b in baselines
            if not b.startswith("randomized_") or b == f"randomized_{method.replace('-', '_')}"
        }
        best = max(rivals, key=rivals.get, default="")
        parts.append(
            f"{method} PG {pg:.2f} [{low:.2f}, {high:.2f}] vs baseline {rivals.get(best, math.nan):.2f} ({best}): "
            + _verdict(metrics, key)
        )
    return "; ".join(parts)


def _verdict(metrics: Mapping[str, float], key: str) -> str:
    """``passes`` or ``fails (<the scores that fail>)`` of one source's sanity rule."""
    failed = [s for s in HIGHER_IS_BETTER if metrics.get(f"{key}_{s}_passes") == 0.0]
    return "passes" if metrics.get(f"{key}_passes_sanity") == 1.0 else f"fails ({', '.join(failed) or 'no score'})"


def removal_line(metrics: Mapping[str, float], sources: Iterable[str]) -> str:
    """The removal scores with 95 % CIs of every explained method and of the oracle map (the
    ground-truth mask), the best model-free baseline per score, and the oracle's sanity verdict,
    e.g. ``MoRF ↓ deeplift 0.21 [0.17, 0.25], oracle 0.12 [0.10, 0.15], best baseline 0.45
    (input); LeRF ↑ ...; oracle map: passes``."""
    keys = [metric_name(s) for s in sources if not s.startswith("baseline_") and s != ORACLE] + [ORACLE]
    parts = []
    for score, label in _REMOVAL_LABELS.items():
        shown = [
            f"{k} {metrics[f'xai_{k}_{score}']:.2f} {_ci(metrics, f'xai_{k}_{score}')}"
            for k in keys
            if f"xai_{k}_{score}" in metrics
        ]
        if not shown:
            continue
        rivals = {b: metrics[f"xai_baseline_{b}_{score}"] for b in BASELINES if f"xai_baseline_{b}_{score}" in metrics}
        if rivals:
            pick = (max if HIGHER_IS_BETTER[score] else min)(rivals, key=rivals.get)
            shown.append(f"best baseline {rivals[pick]:.2f} ({pick})")
        parts.append(f"{label} " + ", ".join(shown))
    if f"xai_{ORACLE}_passes_sanity" in metrics:
        parts.append(f"oracle map: {_verdict(metrics, f'xai_{ORACLE}')}")
    return "; ".join(parts)


_REMOVAL_LABELS = {
    "morf_auc": "MoRF ↓",
    "lerf_auc": "LeRF ↑",
    "deletion_auc": "deletion ↓",
    "insertion_auc": "insertion ↑",
}


def sanity_rows(model: str, metrics: Mapping[str, float], sources: Iterable[str]) -> list[dict[str, Any]]:
    """One row per explained method and for the oracle map: whether it passes the sanity rule and
    the scores that fail (``sanity.csv`` of the demo run)."""
    names = [s for s in sources if not s.startswith("baseline_")]
    rows = []
    for name in dict.fromkeys(names):
        key = f"xai_{metric_name(name)}"
        if f"{key}_passes_sanity" not in metrics:
            continue
        failed = [s for s in HIGHER_IS_BETTER if metrics.get(f"{key}_{s}_passes") == 0.0]
        rows.append(
            {
                "model": model,
                "map": name,
                "passes_sanity": int(metrics[f"{key}_passes_sanity"]),
                "failing_scores": ",".join(failed),
            }
        )
    return rows


def _variant(cfg: DemoConfig, name: str, base: dict[str, Any], ctx: dict[str, Any], echo) -> None:
    """Train and test one variant once per seed; explain and draw the first seed's model."""
    for i, seed in enumerate(ctx["seeds"] or [None]):
        _seed_run(cfg, name, {**base, "seed": seed} if seed is not None else base, ctx, echo, explain=i == 0)


def variant_config(
    cfg: DemoConfig, name: str, base: dict[str, Any], *, experiment: str, tracking_uri: str | None = None
) -> TrainConfig:
    """The training config of one demo variant: ``base`` (the demo's defaults or the ``--config`` YAML),
    then the variant's own demo settings (:data:`DEMO_MODEL_OVERRIDES`, unless a YAML was given), then
    the demo's options."""
    explicit = {
        "dataset": "demo",
        "data_dir": str(cfg.data_dir),
        "model": name,
        "experiment": experiment,
        "epochs": cfg.epochs,
        "device": cfg.device,
        "tracking_uri": tracking_uri,
    }
    per_model = {} if cfg.config_file else dict(DEMO_MODEL_OVERRIDES.get(name, {}))
    if not zero_init_applies(name):  # a YAML's zero_init_residual is for the ResNets among the variants
        per_model["zero_init_residual"] = False
    return build_train_config({**base, **per_model, **{k: v for k, v in explicit.items() if v is not None}})


def _seed_run(cfg: DemoConfig, name: str, base: dict[str, Any], ctx: dict[str, Any], echo, *, explain: bool) -> None:
    """Train, test and (with ``explain_images`` and ``explain``) explain and draw one variant under the parent run."""
    uri, parent_id = ctx["uri"], ctx["parent_id"]
    tcfg = variant_config(cfg, name, base, experiment=ctx["experiment"], tracking_uri=uri)
    t0 = time.perf_counter()
    res = train(tcfg, parent_run_id=parent_id, progress=ctx["progress"])
    seconds = time.perf_counter() - t0
    if res.model_uri:  # a showcase run keeps only its model, so `make demo` stays under 1 GB
        tracking.prune_checkpoints(res.run_id, keep_resume=False)
    tres = test(
        # per-subgroup metrics for the attributes the demo's labels.csv carries (e.g. a synthetic site)
        TestConfig(run_id=res.run_id, tracking_uri=uri, device=cfg.device, subgroups=table_subgroups(cfg.data_dir)),
        parent_run_id=parent_id,
        progress=ctx["progress"],
    )
    ctx["train_runs"].setdefault(name, res.run_id)  # the first seed's runs
    ctx["test_runs"].setdefault(name, tres.run_id)
    ctx["rows"].append(_row(name, res, tres, seconds))
    m = tres.metrics
    line = (
        (f"    seed {base['seed']}: " if ctx["seeds"] else "    ")
        + f"test AUC {m.get('test_auc', math.nan):.3f} {_ci(m, 'test_auc')}, balanced accuracy "
        f"{m.get('test_balanced_accuracy', math.nan):.3f} on {m.get('test_n_images', math.nan):.0f} images "
        f"(trained in {seconds:.0f} s)"
    )
    if "test_oracle_auc" in m:
        line += (
            f"; oracle AUC {m['test_oracle_auc']:.3f} {_ci(m, 'test_oracle_auc')}, gap "
            f"{m['test_oracle_gap']:+.3f} {_ci(m, 'test_oracle_gap')}"
        )
    if cfg.explain_images and explain:
        ires = interpret(
            InterpretConfig(
                run_id=res.run_id,
                tracking_uri=uri,
                device=cfg.device,
                max_images=cfg.explain_images,
                steps=cfg.explain_steps,
                curve_images=cfg.curve_images,
                randomized_images=cfg.randomized_images,
                target=cfg.explain_target,
                batch_size=DEMO_EXPLAIN_BATCH,
            ),
            parent_run_id=parent_id,
            progress=ctx["progress"],
        )
        ctx["interpret_runs"][name] = ires.run_id
        figures(FiguresConfig(run_id=ires.run_id, tracking_uri=uri, max_images=cfg.figure_images))
        ctx["xai_rows"] += [{"model": name, **r.to_dict()} for _, r in ires.scores.iterrows()]
        ctx["sanity_rows"] += sanity_rows(name, ires.metrics, ires.scores["source"])
        line += "\n      " + sanity_line(ires.metrics, ires.scores["source"])
        line += "\n      " + removal_line(ires.metrics, ires.scores["source"])
    echo(line)


def _ensure_data(cfg: DemoConfig, echo: Callable[[str], None]) -> None:
    """Write the synthetic demo set into ``cfg.data_dir`` unless it already holds one."""
    data_dir = Path(cfg.data_dir)
    if (data_dir / "labels.csv").is_file():
        return
    echo(f"writing the synthetic demo set ({cfg.n} images + {cfg.test_extra} for the test split only) to {data_dir}")
    difficulty = {} if cfg.difficulty is None else {"difficulty": cfg.difficulty}
    write_synthetic(data_dir, n=cfg.n, img_size=cfg.synth_size, seed=cfg.seed, test_extra=cfg.test_extra, **difficulty)


def demo(
    cfg: DemoConfig,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    seeds: Sequence[int] | None = None,
    report_out: str | Path | None = DEMO_REPORT,
) -> DemoResult:
    """Synthesise the demo set; per variant train, test, explain and draw figures; promote the best;
    compare the variants.

    The best variant by ``val_auc`` gets the ``champion`` alias of ``medattn-demo`` (a tie broken by
    the lowest ``val_loss``, :func:`medattn.stages.promote.choose`). Last, a top-level ``compare``
    run in the same experiment holds the comparison table and figures across variants, with each
    attention variant's paired ΔAUC against its plain backbone; the demo ends by printing one
    verdict sentence per attention type. With ``seeds`` (``--seeds 0,1,2``; ``None``: ``cfg.seeds``)
    every variant is trained and tested once per seed (the first seed's model is explained), and the
    verdicts add the mean ± sd across seeds. Last, the experiment's report page is written to
    ``report_out`` (``None``: none) and logged to a ``report`` run (:func:`medattn.stages.report.report`).
    """
    uri = tracking.connect(cfg.tracking_uri)
    base = {**DEMO_TRAIN_DEFAULTS, **(load_yaml(cfg.config_file) if cfg.config_file else {})}
    base.pop("grid", None)
    _ensure_data(cfg, echo)
    project = tracking.project_run_id(claim=True)  # the project run is the parent; later stages start their own
    experiment_id = None if project else tracking.ensure_experiment(cfg.experiment, uri)
    ctx: dict[str, Any] = {
        "uri": uri,
        "progress": progress,
        "rows": [],
        "xai_rows": [],
        "train_runs": {},
        "test_runs": {},
        "interpret_runs": {},
        "sanity_rows": [],
        "seeds": list(parse_seeds(seeds) or cfg.seeds or []),
    }
    with tracking.stage_run(
        experiment_id=experiment_id, run_id=project, run_name="demo", tags={tracking.TAG_KIND: "demo"}
    ) as parent_id:
        ctx["parent_id"] = parent_id
        ctx["experiment"] = tracking.experiment_name_of(tracking.get_run(parent_id).info.experiment_id)
        for i, name in enumerate(cfg.models):
            echo(f"[{i + 1}/{len(cfg.models)}] {name}: train, test" + (", interpret" if cfg.explain_images else ""))
            _variant(cfg, name, base, ctx, echo)
        table, xai = pd.DataFrame(ctx["rows"]), pd.DataFrame(ctx["xai_rows"])
        tracking.log_text(table.to_csv(index=False), tracking.COMPARISON_CSV)
        sanity = pd.DataFrame(ctx["sanity_rows"])
        if len(xai):
            tracking.log_text(xai.to_csv(index=False), tracking.XAI_CSV)
        if len(sanity):
            tracking.log_text(sanity.to_csv(index=False), SANITY_CSV)
        promoted = None
        if cfg.promote:
            promoted = promote(PromoteConfig(experiment=ctx["experiment"], metric="val_auc", tracking_uri=uri))
            tracking.set_tags({tracking.TAG_CHAMPION: f"{promoted.model_uri} ({promoted.variant})"})
            if promoted.tie_break:
                echo(f"champion: {promoted.tie_break}")
    compared = compare(CompareConfig(experiment=ctx["experiment"], tracking_uri=uri))
    for sentence in compared.verdicts:
        echo(sentence)
    page = None
    if report_out is not None:
        page = report(ReportConfig(experiment=ctx["experiment"], out=str(report_out), tracking_uri=uri)).path
    return DemoResult(
        parent_id,
        table,
        uri,
        ctx["train_runs"],
        ctx["test_runs"],
        xai,
        ctx["interpret_runs"],
        promoted,
        compared.run_id,
        compared.verdicts,
        page,
        sanity,
    )
