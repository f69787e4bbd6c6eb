"""The ``medattn`` command line: thin Typer commands over :mod:`medattn.api`.

Each command parses options, builds a config, calls the library and prints the outcome. User
mistakes raise :class:`medattn.errors.MedattnError`; the group below turns them into one line on
stderr and exit code 2 (never a traceback).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from medattn import api, distributed, registry, tracking
from medattn.config import (
    CASES,
    DATA_PIPELINES,
    DEMO_MODELS,
    DUPLICATES,
    HEADS,
    INITS,
    MODES,
    PRETRAINED,
    REMOVALS,
    RESIZE_MODES,
    SCHEDULERS,
    SPLIT_ALIASES,
    TARGETS,
    UNCERTAIN,
    parse_batch_sizes,
)
from medattn.data import check_data, prepare_cache, write_synthetic
from medattn.data.synthetic import DEFAULT_DIFFICULTY, DEFAULT_TAU, DEFAULT_VERSION
from medattn.errors import MedattnError
from medattn.metrics import CLASSIFICATION_KEYS, EPOCH_METRIC_NAMES
from medattn.models import canonical_model_name, count_parameters, create_model_with_report, model_table


def _dashify(token: str) -> str:
    """``--data_dir=x`` → ``--data-dir=x``: every option also answers to its underscore spelling
    (the original project's flags, and what ``mlflow run -P name=value`` passes through)."""
    if not token.startswith("--") or token == "--":
        return token
    name, eq, value = token.partition("=")
    return name.replace("_", "-") + eq + value


ARGV_KEY = "medattn.argv"


class _Group(TyperGroup):
    """Click group that accepts underscore option spellings and prints :class:`MedattnError` as
    ``Error: <sentence>`` with exit code 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:  # noqa: D102 - click API
        args = [_dashify(a) for a in args]
        ctx.meta.setdefault(ARGV_KEY, list(args))  # `train --nproc N` re-launches itself with these
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):  # noqa: D102 - click API
        try:
            with tracking.auth_errors():  # a server's 401 / 403 as one sentence (issue 19)
                return super().invoke(ctx)
        except MedattnError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    help="medattn: train, test and explain attention-augmented medical image classifiers, every run tracked in MLflow.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    cls=_Group,
    help="Data sets: write the synthetic demo set, prepare a uint8 cache, check a data folder.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def main() -> None:
    """Entry point for ``python -m medattn``."""
    app()


# --------------------------------------------------------------------------------------------
# Fixed sets of values: listed in --help and completed by the shell, from their one source.
# --------------------------------------------------------------------------------------------
def choices(values: Sequence[str]) -> dict[str, Any]:
    """``typer.Option`` keywords for an option with a fixed set of values: ``--help`` lists them
    (``[a|b|c]``) and shell completion offers them. They are not enforced here: the config
    canonicalises the aliases the CLI accepts (``SEResNet50``, ``APTOS``, ``validation``) and answers
    a typo with one "did you mean" sentence and exit code 2."""
    names = [str(v) for v in values]

    def complete(incomplete: str) -> list[str]:
        return [n for n in names if n.lower().startswith(incomplete.lower())]

    return {"metavar": "[" + "|".join(names) + "]", "autocompletion": complete}


def registry_names(kind: str) -> list[str]:
    """The canonical names of a registry (``dataset``, ``model``, ``explanation method``)."""
    reg = registry.lookup(kind)
    return reg.names() if reg is not None else []


DATASET_CHOICES = choices(registry_names("dataset"))
MODEL_CHOICES = choices(registry_names("model"))
SPLIT_CHOICES = choices(list(SPLIT_ALIASES))
EPOCH_METRIC_CHOICES = choices(EPOCH_METRIC_NAMES)
TEST_METRIC_CHOICES = choices([f"test_{k}" for k in CLASSIFICATION_KEYS])
MODE_CHOICES = choices(MODES)
SALIENCY_CHOICES = choices(["ALL", *(m.upper() for m in registry_names("explanation method"))])


def _quiet(ctx: typer.Context, value: bool) -> bool:
    """``--quiet``: MLflow's download bars off until the command ends (the command turns its own off)."""
    if value:
        ctx.with_resource(tracking.quiet_artifact_downloads())
    return value


QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress bars (epochs, batches, explanations, MLflow downloads).", callback=_quiet
    ),
]


def given(value: str | None) -> str | None:
    """``None`` for an empty value: ``mlflow run`` passes an MLproject parameter left at its
    default ``""`` as ``--name ''``, which means "not given"."""
    return value if value and value.strip() else None


# --------------------------------------------------------------------------------------------
# Shared option types (dash-case, with the original project's underscore spellings as aliases).
# --------------------------------------------------------------------------------------------
DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="Data set (the seed's APTOS, ISIC2020, MIMICCXR accepted).",
        **DATASET_CHOICES,
    ),
]
DataDirOpt = Annotated[
    Path,
    typer.Option("--data-dir", "--data_dir", help="Folder holding the data set in its on-disk layout."),
]


# --------------------------------------------------------------------------------------------
# medattn data ...
# --------------------------------------------------------------------------------------------
UncertainOpt = Annotated[
    str,
    typer.Option(
        "--uncertain",
        help="mimic-cxr only: uncertain (-1) Pleural Effusion labels are left out (ignore) or become 0 (zeros) or 1 (ones).",
        **choices(UNCERTAIN),
    ),
]


DUPLICATES_HELP = (
    "Near-duplicate images (fingerprint distance <= 0.15, joined transitively): keep each group in one split "
    "(group), keep one image per group (drop), or ignore."
)
DuplicatesOpt = Annotated[str, typer.Option("--duplicates", help=DUPLICATES_HELP, **choices(DUPLICATES))]


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write labels.csv, images/ and masks/ into.")],
    n: Annotated[
        int, typer.Option("--n", help="Number of images split train/val/test (versions 1-2: half with lesions).")
    ] = 600,
    img_size: Annotated[
        int, typer.Option("--img-size", "--imgsize", "--img_size", help="Image side in pixels (at least 32).")
    ] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed writes byte-identical files.")] = 0,
    difficulty: Annotated[
        float,
        typer.Option(
            "--difficulty",
            help="Difficulty in [0, 1]: how faint the blobs can be (versions 2-3) and how small version 2's ring cores (0: crisp; 1: many lesions nearly invisible).",
        ),
    ] = DEFAULT_DIFFICULTY,
    version: Annotated[
        int,
        typer.Option(
            "--version",
            help="3: the label drawn from a latent ring strength, labels.csv with oracle_prob and site; 2: rings among look-alike solid blobs, the label a rule; 1: the old set, lesions in class 1 only.",
        ),
    ] = DEFAULT_VERSION,
    tau: Annotated[
        float,
        typer.Option(
            "--tau",
            help="Version 3: temperature of P(label=1) = sigmoid((strength - 0.35) / tau); smaller is a more predictable label (docs/demo.md).",
        ),
    ] = DEFAULT_TAU,
    test_extra: Annotated[
        int,
        typer.Option(
            "--test-extra", help="Version 3: further images that only the test split receives (the demo split)."
        ),
    ] = 0,
) -> None:
    """Write the synthetic demo set: fundus-like images, lesion labels and ground-truth masks."""
    folder = write_synthetic(
        out, n=n, img_size=img_size, seed=seed, difficulty=difficulty, version=version, tau=tau, test_extra=test_extra
    )
    extra = f" plus {test_extra} test-only" if test_extra else ""
    typer.echo(f"Wrote {n}{extra} synthetic images ({img_size} px, seed {seed}) with masks and labels.csv to {folder}")


@data_app.command("prepare")
def data_prepare(
    dataset: DatasetOpt,
    data_dir: DataDirOpt,
    img_size: Annotated[
        int,
        typer.Option(
            "--img-size", "--imgsize", "--img_size", help="Side of the cached images; train with the same --img-size."
        ),
    ] = 224,
    uncertain: UncertainOpt = "ignore",
    workers: Annotated[
        int | None, typer.Option("--workers", help="Decoding processes (default: every CPU).", show_default=False)
    ] = None,
) -> None:
    """Decode and resize every image once into a memory-mappable uint8 cache that loaders use when present.

    Decoding runs in parallel at reduced resolution; a prepare that was stopped continues where it left off.
    """
    folder = prepare_cache(dataset, data_dir, img_size=img_size, uncertain=uncertain, workers=workers)
    typer.echo(f"Wrote the {img_size} px uint8 cache (images.npy, manifest.csv) to {folder}")


@data_app.command("check")
def data_check(
    dataset: DatasetOpt,
    data_dir: DataDirOpt,
    uncertain: UncertainOpt = "ignore",
    low_data_regimen: Annotated[
        bool,
        typer.Option(
            "--low-data-regimen", "--low_data_regimen", help="Also check the low-data regimen's train subsample."
        ),
    ] = False,
    perc_train: Annotated[
        float,
        typer.Option(
            "--perc-train", "--perc_train", help="Fraction of training images kept in the low-data regimen, in (0, 1]."
        ),
    ] = 1.0,
    duplicates: DuplicatesOpt = "group",
    duplicates_out: Annotated[
        Path | None,
        typer.Option("--duplicates-out", help="Write every near-duplicate group (one row per image) to this CSV file."),
    ] = None,
) -> None:
    """Report every problem of a data folder at once, the near-duplicate groups, then images and positives
    per split (exit 2 on problems)."""
    report = check_data(
        dataset,
        data_dir,
        uncertain=uncertain,
        low_data_regimen=low_data_regimen,
        perc_train=perc_train,
        duplicates=duplicates,
        duplicates_out=duplicates_out,
    )
    for problem in report.problems:
        typer.echo(f"Error: {problem}", err=True)
    for note in report.notes:
        typer.echo(f"Note: {note}")
    if len(report.summary):
        typer.echo(report.summary.to_string(index=False))
    if not report.ok:
        typer.echo(f"Found {len(report.problems)} problem(s) in {data_dir} ({report.dataset}).", err=True)
        raise typer.Exit(2)
    typer.echo(f"Checked {int(report.summary['images'].sum())} images of {report.dataset} in {data_dir}: no problems.")


# --------------------------------------------------------------------------------------------
# medattn models
# --------------------------------------------------------------------------------------------
@app.command("models")
def models_command(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Also build this model and report how its initial weights load "
            "(check a --weights file before training).",
        ),
    ] = None,
    pretrained: Annotated[
        str,
        typer.Option("--pretrained", help="With --model: initial weights, imagenet or none.", **choices(PRETRAINED)),
    ] = "none",
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="With --model: a local state_dict / timm checkpoint instead of the download."),
    ] = None,
    init: Annotated[
        str,
        typer.Option(
            "--init",
            help="With --model: fair (every backbone initialised) or paper (the original project's).",
            **choices(INITS),
        ),
    ] = "fair",
    head: Annotated[
        str,
        typer.Option(
            "--head",
            help="With --model: pool, flatten or paper (the original's head per family: DenseNets flatten, ResNets and DeiT pool).",
            **choices(HEADS),
        ),
    ] = "pool",
    img_size: Annotated[int, typer.Option("--img-size", "--imgsize", help="With --model: input side in pixels.")] = 224,
    nr_layers: Annotated[
        int, typer.Option("--nr-layers", "--nr_layers", help="With --model: DeiT blocks (only for ViT).")
    ] = 12,
    num_classes: Annotated[int, typer.Option("--num-classes", help="With --model: output classes.")] = 2,
) -> None:
    """List the models: architecture, attention placement and parameter count."""
    if model is not None:
        model = canonical_model_name(model)  # a typo fails before the table is printed
    rows = model_table()
    header = ("name", "architecture", "attention", "params", "placement")
    cells = [(r["name"], r["architecture"], r["attention"], f"{r['params']:,}", r["placement"]) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in (header, tuple("-" * w for w in widths), *cells):
        typer.echo(
            "  ".join(
                c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    typer.echo("Parameters counted at num_classes=2, img_size=224, head=pool, 12 DeiT blocks.")
    if model is not None:
        built, report = create_model_with_report(
            model,
            num_classes,
            pretrained=pretrained,
            weights=weights,
            head=head,
            nr_layers=nr_layers,
            img_size=img_size,
            init=init,
        )
        typer.echo(f"{model}: {count_parameters(built):,} parameters at img_size={img_size}, head={head}.")
        typer.echo(report.summary() if report is not None else "No weights loaded: every tensor starts at random init.")


# --------------------------------------------------------------------------------------------
# medattn train / test / demo
# --------------------------------------------------------------------------------------------
TrackingUriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db "
        "(artifacts in <cwd>/mlruns).",
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N. (default: auto)"),
]
GpuIdOpt = Annotated[int | None, typer.Option("--gpu-id", "--gpu_id", help="Use cuda:N (same as --device cuda:N).")]


def _done(kind: str, run_id: str, uri: str, experiment_id: str | None = None) -> None:
    """The final line of every command: what was logged where and how to look at it."""
    exp = f" in experiment {tracking.experiment_name_of(experiment_id)!r}" if experiment_id is not None else ""
    typer.echo(f"Logged {kind} run {run_id}{exp} to {uri}; view it with: {tracking.ui_command(uri)}")


_TrainDatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Data set (the seed's APTOS, ISIC2020, MIMICCXR accepted). (default: demo)",
        **DATASET_CHOICES,
    ),
]
_TrainDataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        "--data_dir",
        help="Folder with the data set in its on-disk layout (SPEC §2). (default: demo_data)",
    ),
]
_TrainModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Architecture (seed spellings such as SEResNet50 or DeiT-T-LRP accepted). (default: resnet50)",
        **MODEL_CHOICES,
    ),
]
_TrainLowDataRegimenOpt = Annotated[
    bool | None,
    typer.Option(
        "--low-data-regimen/--no-low-data-regimen",
        "--low_data_regimen",
        help="Train on a stratified subsample of the training split (see --perc-train); val/test unchanged.",
        show_default=False,
    ),
]
_TrainPercTrainOpt = Annotated[
    float | None,
    typer.Option(
        "--perc-train",
        "--perc_train",
        help="Fraction of the training split used in the low-data regimen, in (0, 1]. (default: 1.0)",
    ),
]
_TrainBatchSizeOpt = Annotated[
    int | None,
    typer.Option("--batch-size", "--batchsize", help="Batch size for training and validation. (default: 32)"),
]
_TrainImgSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--img-size",
        "--imgsize",
        help="Image side after the transforms, in pixels (a multiple of 16 for deit_tiny). (default: 224)",
    ),
]
_TrainResizeOpt = Annotated[
    str | None,
    typer.Option("--resize", help="Resize transform. (default: direct_resize)", **choices(RESIZE_MODES)),
]
_TrainClassWeightsOpt = Annotated[
    bool | None,
    typer.Option(
        "--class-weights/--no-class-weights",
        "--classweights",
        help="Weight the loss by balanced class weights of the training split.",
        show_default=False,
    ),
]
_TrainEpochsOpt = Annotated[
    int | None,
    typer.Option("--epochs", help="Number of training epochs (with --resume: the new total). (default: 10)"),
]
_TrainLrOpt = Annotated[float | None, typer.Option("--lr", help="Adam learning rate. (default: 1e-4)")]
_TrainWeightDecayOpt = Annotated[float | None, typer.Option("--weight-decay", help="Adam weight decay. (default: 0)")]
_TrainSchedulerOpt = Annotated[
    str | None,
    typer.Option("--scheduler", help="Learning-rate schedule. (default: none)", **choices(SCHEDULERS)),
]
_TrainSelectMetricOpt = Annotated[
    str | None,
    typer.Option(
        "--select-metric",
        help="Metric that picks the epoch whose weights become the logged model: val_loss (lowest, as in the paper) or e.g. val_auc (highest). (default: val_loss)",
        **EPOCH_METRIC_CHOICES,
    ),
]
_TrainNumWorkersOpt = Annotated[
    int | None, typer.Option("--num-workers", "--num_workers", help="DataLoader worker processes. (default: 0)")
]
_TrainDataPipelineOpt = Annotated[
    str | None,
    typer.Option(
        "--data-pipeline",
        help="auto (uint8 cache + batched augmentation on the GPU when the cache of `medattn data prepare` exists and the device is CUDA) | gpu (force it, also on CPU) | cpu (PIL per image). (default: auto)",
        **choices(DATA_PIPELINES),
    ),
]
_TrainSaveFreqOpt = Annotated[
    int | None,
    typer.Option(
        "--save-freq",
        "--save_freq",
        help="Also keep checkpoints/epoch_XXXX.pt every N epochs (0: off). (default: 0)",
    ),
]
_TrainResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume", help="Continue this MLflow run from its checkpoints/last.pt (same run, no duplicate steps)."
    ),
]
_TrainCkptOpt = Annotated[
    str | None,
    typer.Option("--ckpt", help="Start from a local checkpoint file (weights, optimiser and epoch) in a new run."),
]
_TrainNrLayersOpt = Annotated[
    int | None, typer.Option("--nr-layers", "--nr_layers", help="Transformer blocks of deit_tiny. (default: 12)")
]
_TrainPretrainedOpt = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
        help="Initial weights. (default: imagenet for real data sets, none for demo)",
        **choices(PRETRAINED),
    ),
]
_TrainWeightsOpt = Annotated[
    str | None,
    typer.Option("--weights", help="Local ImageNet state_dict/checkpoint for the backbone (machines without network)."),
]
_TrainHeadOpt = Annotated[
    str | None,
    typer.Option(
        "--head",
        help="pool (global average pool + linear) | flatten (the original project's linear over the flattened feature map) | paper (the original's head per family). (default: pool)",
        **choices(HEADS),
    ),
]
_TrainInitOpt = Annotated[
    str | None,
    typer.Option(
        "--init",
        help="fair (ImageNet backbone for every variant) | paper (SE/CBAM-DenseNet121 and CBAM-ResNet50 from scratch, as the original). (default: fair)",
        **choices(INITS),
    ),
]
_TrainZeroInitOpt = Annotated[
    bool | None,
    typer.Option(
        "--zero-init-residual/--no-zero-init-residual",
        help="ResNet variants: start every bottleneck's residual branch at zero (its last BatchNorm's gamma = 0), "
        "a control for the attention gates' down-scaling of that branch when training from scratch. (default: off)",
        show_default=False,
    ),
]
_TrainMulticlassOpt = Annotated[
    bool | None,
    typer.Option(
        "--multiclass/--binary",
        help="APTOS: 5-grade task instead of referable DR (diagnosis > 0).",
        show_default=False,
    ),
]
_TrainUncertainOpt = Annotated[
    str | None,
    typer.Option(
        "--uncertain",
        help="MIMIC-CXR uncertain labels: ignore (drop) | zeros | ones. (default: ignore)",
        **choices(UNCERTAIN),
    ),
]
_TrainDuplicatesOpt = Annotated[
    str | None,
    typer.Option("--duplicates", help=DUPLICATES_HELP + " (default: group)", show_default=False, **choices(DUPLICATES)),
]
_TrainSeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed", help="Seed of initialisation, shuffling and augmentation (splits always use 42). (default: 42)"
    ),
]
SEEDS_HELP = (
    "Comma-separated seeds, e.g. 0,1,2: one training run per seed (replaces --seed); compare then reports "
    "the mean ± sd of each variant's ΔAUC across seeds."
)
_TrainSeedsOpt = Annotated[str | None, typer.Option("--seeds", help=SEEDS_HELP)]
_TrainAmpOpt = Annotated[
    bool | None,
    typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA (ignored on CPU). (default: amp)", show_default=False),
]
_TrainCompileOpt = Annotated[
    bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model.", show_default=False)
]
_TrainConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML experiment file (experiments/*.yaml); command-line options override it."),
]
_TrainExperimentOpt = Annotated[
    str | None, typer.Option("--experiment", help="MLflow experiment. (default: medattn-<dataset>)")
]
_TrainRunNameOpt = Annotated[
    str | None, typer.Option("--run-name", help="MLflow run name. (default: <model>-<dataset>)")
]
_TrainRegisterOpt = Annotated[
    bool | None,
    typer.Option(
        "--register/--no-register",
        help="Register the model as medattn-<dataset> in the model registry.",
        show_default=False,
    ),
]
_TrainSystemMetricsOpt = Annotated[
    bool | None,
    typer.Option(
        "--system-metrics/--no-system-metrics",
        help="Log CPU/GPU/memory system metrics. (default: on)",
        show_default=False,
    ),
]
_TrainNprocOpt = Annotated[
    int | None,
    typer.Option(
        "--nproc",
        help="Train with PyTorch DDP on N local processes (one per GPU, or gloo on CPU): re-launches itself under torchrun --nproc-per-node N. --batch-size is then the global batch, split evenly over the processes.",
    ),
]


_LAUNCH_ONLY = ("ctx", "gpu_id", "config", "resume", "nproc", "quiet", "seeds")


@app.command()
def train(
    ctx: typer.Context,
    dataset: _TrainDatasetOpt = None,
    data_dir: _TrainDataDirOpt = None,
    model: _TrainModelOpt = None,
    low_data_regimen: _TrainLowDataRegimenOpt = None,
    perc_train: _TrainPercTrainOpt = None,
    batch_size: _TrainBatchSizeOpt = None,
    img_size: _TrainImgSizeOpt = None,
    resize: _TrainResizeOpt = None,
    class_weights: _TrainClassWeightsOpt = None,
    epochs: _TrainEpochsOpt = None,
    lr: _TrainLrOpt = None,
    weight_decay: _TrainWeightDecayOpt = None,
    scheduler: _TrainSchedulerOpt = None,
    select_metric: _TrainSelectMetricOpt = None,
    num_workers: _TrainNumWorkersOpt = None,
    data_pipeline: _TrainDataPipelineOpt = None,
    device: DeviceOpt = None,
    gpu_id: GpuIdOpt = None,
    save_freq: _TrainSaveFreqOpt = None,
    resume: _TrainResumeOpt = None,
    ckpt: _TrainCkptOpt = None,
    nr_layers: _TrainNrLayersOpt = None,
    pretrained: _TrainPretrainedOpt = None,
    weights: _TrainWeightsOpt = None,
    head: _TrainHeadOpt = None,
    init: _TrainInitOpt = None,
    zero_init_residual: _TrainZeroInitOpt = None,
    multiclass: _TrainMulticlassOpt = None,
    uncertain: _TrainUncertainOpt = None,
    duplicates: _TrainDuplicatesOpt = None,
    seed: _TrainSeedOpt = None,
    seeds: _TrainSeedsOpt = None,
    amp: _TrainAmpOpt = None,
    compile: _TrainCompileOpt = None,
    config: _TrainConfigOpt = None,
    experiment: _TrainExperimentOpt = None,
    run_name: _TrainRunNameOpt = None,
    register: _TrainRegisterOpt = None,
    system_metrics: _TrainSystemMetricsOpt = None,
    tracking_uri: TrackingUriOpt = None,
    nproc: _TrainNprocOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train one model; log params, per-epoch metrics, checkpoints, splits and the model to MLflow.

    Under torchrun (or with --nproc N) every process trains its share of each global batch and
    rank 0 alone logs to MLflow and writes checkpoints. With --seeds every seed is its own run.
    """
    if gpu_id is not None:
        device = f"cuda:{gpu_id}"
    params = dict(locals())  # every option but _LAUNCH_ONLY is a training option (build_train_config checks them)
    overrides = {k: v for k, v in params.items() if k not in _LAUNCH_ONLY}
    seed_list = api.parse_seeds(given(seeds))
    if seed_list and seed is not None:
        raise MedattnError("give either --seed or --seeds, not both.")
    cfg = api.resolve_train_config(overrides, config_file=config, resume=resume)
    cfgs = api.seed_configs(cfg, seed_list)  # one run per seed of --seeds
    if _relaunched(ctx, nproc, cfg.optim.batch_size):
        return
    main_rank = distributed.is_main_process()  # DDP: rank 0 prints the outcome
    for i, run_cfg in enumerate(cfgs):
        if seed_list and main_rank:
            typer.echo(f"[{i + 1}/{len(cfgs)}] {run_cfg.model.model}, seed={run_cfg.optim.seed}")
        result = api.train(run_cfg, progress=not quiet)
        if main_rank:
            _train_outcome(result)


def _train_outcome(result: api.TrainResult) -> None:
    """The lines ``medattn train`` prints for one training run."""
    best = result.best_metrics
    typer.echo(
        f"best epoch {result.best_epoch}: "
        + ", ".join(f"{k}={best[k]:.4f}" for k in ("val_loss", "val_auc", "val_balanced_accuracy") if k in best)
    )
    if result.registered_version:
        typer.echo(
            f"registered as {tracking.registered_model_name(result.config['dataset'])} version {result.registered_version}"
        )
    _done("train", result.run_id, result.tracking_uri, result.experiment_id)


def _relaunched(ctx: click.Context, nproc: int | None, batch_size: int) -> bool:
    """With ``--nproc N > 1`` outside torchrun: run this command again under torchrun (returns True).

    Raises:
        MedattnError: ``--nproc`` below 1, contradicting torchrun, or not dividing the global batch.
    """
    world = distributed.env_world_size()
    if nproc is not None and nproc < 1:
        raise MedattnError(f"--nproc must be at least 1, got {nproc}.")
    if nproc is not None and world > 1 and nproc != world:
        raise MedattnError(f"--nproc {nproc} contradicts torchrun's {world} processes; drop --nproc under torchrun.")
    if nproc is None or nproc <= 1 or world != 1:
        return False
    # Validate here, so that bad input is one sentence and exit 2 rather than N worker tracebacks.
    distributed.per_rank_batch(batch_size, nproc)
    _relaunch_under_torchrun(ctx, nproc)
    return True


def _relaunch_under_torchrun(ctx: click.Context, nproc: int) -> None:
    """Run this very ``medattn train`` command again under ``torchrun`` and exit with its status."""
    argv = ctx.meta.get(ARGV_KEY) or sys.argv[1:]
    cmd = distributed.torchrun_command(nproc, distributed.strip_nproc(argv))
    typer.echo(f"Launching {nproc} DDP processes: {' '.join(cmd[1:])}", err=True)
    code = subprocess.call(cmd)
    if code:
        raise typer.Exit(2 if code == 2 else 1)


SourceModelUriOpt = Annotated[
    str | None,
    typer.Option(
        "--model-uri",
        help="Model URI instead of --run-id: models:/NAME@ALIAS (e.g. models:/medattn-demo@champion), "
        "models:/NAME/VERSION, models:/m-<logged model id> or runs:/RUN_ID/model.",
    ),
]
SourceCkptOpt = Annotated[
    str | None, typer.Option("--ckpt", "--modelckpt", help="Local checkpoint file written by medattn train.")
]
SourceDataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir", "--data_dir", help="Data folder, when it moved since training. (default: the training run's)"
    ),
]


@app.command("test")
def test_cmd(
    run_id: Annotated[str | None, typer.Option("--run-id", help="Training run whose logged model is tested.")] = None,
    model_uri: SourceModelUriOpt = None,
    ckpt: SourceCkptOpt = None,
    split: Annotated[
        str,
        typer.Option("--split", help="Split to test (the seed's Test/Validation/Train accepted).", **SPLIT_CHOICES),
    ] = "test",
    data_dir: SourceDataDirOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "--batchsize", help="Inference batch size.")] = 64,
    num_workers: Annotated[
        int, typer.Option("--num-workers", "--num_workers", help="DataLoader worker processes.")
    ] = 0,
    device: DeviceOpt = None,
    gpu_id: GpuIdOpt = None,
    n_boot: Annotated[
        int, typer.Option("--n-boot", help="Bootstrap resamples for the 95 % CIs of AUC and balanced accuracy.")
    ] = 1000,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Experiment of the test run. (default: the training run's)")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Test a trained model on a split: test_* metrics with bootstrap CIs, predictions.csv, ROC and
    confusion-matrix figures, logged to a new run tagged with its source run.

    The metrics are named test_* whatever --split is; the split is the run's param and its tag
    medattn.split (medattn compare only reads test runs of the test split)."""
    if gpu_id is not None:
        device = f"cuda:{gpu_id}"
    cfg = api.TestConfig(
        run_id=given(run_id),
        model_uri=given(model_uri),
        ckpt=ckpt,
        split=split,
        data_dir=data_dir,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device or "auto",
        tracking_uri=tracking_uri,
        experiment=experiment,
        n_boot=n_boot,
    )
    result = api.test(cfg, progress=not quiet)
    m = result.metrics
    typer.echo(
        f"test AUC {m.get('test_auc', float('nan')):.4f} "
        f"[{m.get('test_auc_ci_low', float('nan')):.4f}, {m.get('test_auc_ci_high', float('nan')):.4f}], "
        f"balanced accuracy {m.get('test_balanced_accuracy', float('nan')):.4f}, "
        f"sensitivity {m.get('test_sensitivity', float('nan')):.4f}, specificity {m.get('test_specificity', float('nan')):.4f}"
    )
    _done("test", result.run_id, result.tracking_uri)


# issue 12: the demo set's difficulty and the interpret caps, as aliases to keep the commands short
_DemoDifficultyOpt = Annotated[
    float | None,
    typer.Option(
        "--difficulty", help="Difficulty in [0, 1] of a newly written demo set. (default: medattn data synth's)"
    ),
]
_CurveImagesOpt = Annotated[
    int | None,
    typer.Option(
        "--curve-images",
        help="Removal curves (ROAD MoRF/LeRF, or deletion/insertion) on N images only: the first N with a lesion mask where the data set has masks. (default: all)",
    ),
]
_RandomizedImagesOpt = Annotated[
    int | None,
    typer.Option(
        "--randomized-images",
        help="Explain the first N images on the randomised model (sanity baseline). (default: all)",
    ),
]
_NBootOpt = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples per 95 % CI.")]


@app.command()
def demo(
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Where the synthetic demo set is written (reused if present).")
    ] = "demo_data",
    n: Annotated[int, typer.Option("--n", help="Images in the synthetic set, split train/val/test.")] = 400,
    test_extra: Annotated[
        int,
        typer.Option(
            "--test-extra",
            help="Further synthetic images that only the test split receives (the demo split: a test split of ≥ 600 images by default).",
        ),
    ] = 560,
    models: Annotated[
        str,
        typer.Option("--models", help=f"Comma-separated variants to train, of: {', '.join(registry_names('model'))}."),
    ] = ",".join(DEMO_MODELS),
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs per model. (default: 8, from the demo settings)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="YAML with training settings replacing the demo defaults (experiments/demo.yaml)."
        ),
    ] = None,
    explain_images: Annotated[
        int, typer.Option("--explain-images", help="Test images explained and scored per model (0: skip interpret).")
    ] = 80,
    figure_images: Annotated[
        int, typer.Option("--figure-images", help="Explained images drawn as heat-map figures per model.")
    ] = 8,
    difficulty: _DemoDifficultyOpt = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote/--no-promote", help="Give the best variant (val_auc) the champion alias of medattn-demo."
        ),
    ] = True,
    experiment: Annotated[
        str, typer.Option("--experiment", help="MLflow experiment of the demo runs.")
    ] = "medattn-demo",
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Comma-separated seeds, e.g. 0,1,2: every variant is trained and tested once per seed (the first seed's model is explained); the verdicts add the mean ± sd of ΔAUC across seeds.",
        ),
    ] = None,
    device: DeviceOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """End to end on CPU: synthesise the demo set; train, test and explain each variant; compare the
    variants (ΔAUC of each attention variant against its plain backbone, one verdict sentence each);
    promote the best one to models:/medattn-demo@champion."""
    cfg = api.DemoConfig(
        data_dir=data_dir,
        n=n,
        test_extra=test_extra,
        models=tuple(m.strip() for m in models.split(",") if m.strip()),
        config_file=str(config) if config else None,
        epochs=epochs,
        tracking_uri=tracking_uri,
        experiment=experiment,
        device=device or "auto",
        explain_images=explain_images,
        figure_images=figure_images,
        difficulty=difficulty,
        promote=promote,
        seeds=api.parse_seeds(given(seeds)),
    )
    _demo_report(api.demo(cfg, echo=typer.echo, progress=not quiet))


def _demo_report(result: api.DemoResult) -> None:
    """The tables and closing lines ``medattn demo`` prints."""
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    typer.echo("\nTest performance per variant")
    typer.echo(result.table.drop(columns=["train_run"]).to_string(index=False, float_format=fmt))
    if len(result.xai):
        typer.echo(
            "\nExplanation scores (model × source; baseline_* = sanity baselines on the same images: uniform "
            "random, input grey level, centre prior, Sobel edges, the method on a randomised model)"
        )
        typer.echo(result.xai.to_string(index=False, float_format=fmt))
    if len(result.sanity):
        typer.echo(
            "\nSanity rule per model × map (passes: every score's 95 % CI beats every baseline's; the oracle "
            "map is the ground-truth mask, judged against the model-free baselines)"
        )
        typer.echo(result.sanity.to_string(index=False))
    if result.promoted is not None:
        typer.echo(
            f"\n{result.promoted.describe()}: {result.promoted.variant} "
            f"({result.promoted.metric} {result.promoted.value:.4f}); load it with {result.promoted.model_uri}"
        )
    if result.compare_run_id:
        typer.echo(
            f"comparison figures (low-data plot, explanation scores, saliency grid) in compare run {result.compare_run_id}"
        )
    _done("demo", result.parent_run_id, result.tracking_uri)


@app.command()
def interpret(
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Training run whose logged model is explained.")
    ] = None,
    model_uri: SourceModelUriOpt = None,
    ckpt: SourceCkptOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split whose images are explained.", **SPLIT_CHOICES)] = "test",
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help=f"Comma-separated, of: {', '.join(registry_names('explanation method'))}. (default: deeplift,lrp for CNNs; transformer-lrp for DeiT)",
        ),
    ] = None,
    max_images: Annotated[
        int, typer.Option("--max-images", help="Explain the first N images of the split (split order).")
    ] = 16,
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="Class explained: label (ground truth) or pred (the model's prediction).",
            **choices(TARGETS),
        ),
    ] = "label",
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", "--batchsize", help="Images explained per batch (one call per batch and method)."),
    ] = 8,
    steps: Annotated[
        int,
        typer.Option(
            "--steps",
            help="Removal steps (each costs one forward pass of 2 × batch; with road also 2 × batch imputations).",
        ),
    ] = 16,
    removal: Annotated[
        str,
        typer.Option(
            "--removal",
            help="How pixels are removed for the removal scores: road (noisy linear imputation; logs morf_auc/lerf_auc), zeros (the dataset mean) or blur (both log deletion_auc/insertion_auc).",
            **choices(REMOVALS),
        ),
    ] = "road",
    curve_images: _CurveImagesOpt = None,
    randomized_images: _RandomizedImagesOpt = None,
    n_boot: _NBootOpt = 1000,
    data_dir: SourceDataDirOpt = None,
    device: DeviceOpt = None,
    gpu_id: GpuIdOpt = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Experiment of the interpret run. (default: the training run's)")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Explain a trained model (DeepLIFT, LRP, transformer attribution), batched; log every map, the
    input images and removal scores (ROAD MoRF/LeRF by default; plus pointing-game, mask-mass and
    the ground-truth mask as an oracle map on demo)."""
    if gpu_id is not None:
        device = f"cuda:{gpu_id}"
    cfg = api.InterpretConfig(
        run_id=given(run_id),
        model_uri=given(model_uri),
        ckpt=ckpt,
        split=split,
        methods=tuple(m.strip() for m in (methods or "").split(",") if m.strip()),
        max_images=max_images,
        target=target,
        batch_size=batch_size,
        steps=steps,
        curve_images=curve_images,
        randomized_images=randomized_images,
        n_boot=n_boot,
        removal=removal,
        data_dir=data_dir,
        device=device or "auto",
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    result = api.interpret(cfg, progress=not quiet)
    typer.echo(result.scores.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _done("interpret", result.run_id, result.tracking_uri)


@app.command("grid")
def grid_cmd(
    config: Annotated[
        Path,
        typer.Option("--config", help="YAML experiment file with a 'grid' (e.g. experiments/paper/aptos2019.yaml)."),
    ],
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", "--data_dir", help="Data folder for every cell.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Pin the model axis to one variant.", **MODEL_CHOICES)
    ] = None,
    perc_train: Annotated[
        float | None, typer.Option("--perc-train", "--perc_train", help="Pin the training-fraction axis to one value.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override the epochs of every cell.")] = None,
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2: every cell is trained once per seed."),
    ] = None,
    device: DeviceOpt = None,
    tracking_uri: TrackingUriOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and exit.")] = False,
) -> None:
    """Train every cell of an experiment grid (models × training fractions [× seeds]), one run per cell."""
    overrides = dict(
        data_dir=data_dir, model=model, perc_train=perc_train, epochs=epochs, device=device, tracking_uri=tracking_uri
    )
    seed_list = api.parse_seeds(given(seeds))
    cells = api.grid_cells(config, overrides, seeds=seed_list)
    if dry_run:
        for cfg in cells:
            typer.echo(
                f"{cfg.data.dataset}  {cfg.model.model}  perc_train={cfg.data.perc_train:g}  epochs={cfg.optim.epochs}"
                + (f"  seed={cfg.optim.seed}" if seed_list else "")
            )
        typer.echo(f"{len(cells)} cells")
        return
    results = api.grid(config, overrides, echo=typer.echo, seeds=seed_list)
    typer.echo(
        f"Logged {len(results)} training runs to {results[-1].tracking_uri}; "
        f"view them with: mlflow ui --backend-store-uri {results[-1].tracking_uri}"
    )


# --------------------------------------------------------------------------------------------
# medattn search / promote
# --------------------------------------------------------------------------------------------
_SearchDatasetOpt = Annotated[
    str, typer.Option("--dataset", help="Data set (seed spellings accepted).", **DATASET_CHOICES)
]
_SearchModelOpt = Annotated[
    str,
    typer.Option("--model", help="Architecture every trial trains (seed spellings accepted).", **MODEL_CHOICES),
]
_SearchDataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir", "--data_dir", help="Folder with the data set. (default: the config file's, else demo_data)"
    ),
]
_SearchNTrialsOpt = Annotated[
    int, typer.Option("--n-trials", help="Trials this invocation adds to the study (at least 1).")
]
_SearchStorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Optuna storage URL: sqlite:///optuna.db (in the working directory) or any RDB URL such as postgresql://user@host/db; an existing study is resumed. Keep passwords out of it: without --storage, $OPTUNA_STORAGE is used. (default: $OPTUNA_STORAGE, else sqlite:///optuna.db)",
    ),
]
_SearchHeartbeatOpt = Annotated[
    int,
    typer.Option(
        "--heartbeat-s",
        help="Seconds between a running trial's heartbeats in the storage; a trial silent for twice that (its worker died) is marked failed and retried by the next worker. 0: no heartbeat.",
    ),
]
_SearchTrialRetriesOpt = Annotated[
    int,
    typer.Option("--trial-retries", help="How often a trial whose worker died is retried with the same parameters."),
]
_SearchLogModelsOpt = Annotated[
    bool,
    typer.Option("--log-models/--no-log-models", help="Log each trial's MLflow model (checkpoints are always logged)."),
]
_SearchStudyNameOpt = Annotated[
    str | None,
    typer.Option(
        "--study-name",
        help="Optuna study name; reuse it to add trials. (default: medattn-<dataset>-<model>-<metric>)",
    ),
]
_SearchNJobsOpt = Annotated[
    int,
    typer.Option(
        "--n-jobs",
        help="Trials run in parallel threads of this process (for more, start several processes on one RDB storage).",
    ),
]
_SearchMetricOpt = Annotated[
    str,
    typer.Option(
        "--metric",
        help="Per-epoch metric that ranks and prunes trials, e.g. val_auc or val_loss; each trial's best checkpoint is chosen by it too.",
        **EPOCH_METRIC_CHOICES,
    ),
]
_SearchModeOpt = Annotated[
    str | None, typer.Option("--mode", help="(default: min for *_loss, max otherwise)", **MODE_CHOICES)
]
_SearchEpochsOpt = Annotated[
    int | None, typer.Option("--epochs", help="Epochs per trial. (default: the config file's, else 10)")
]
_SearchConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML experiment file with the fixed training options (experiments/*.yaml)."),
]
_SearchLrMinOpt = Annotated[float, typer.Option("--lr-min", help="Lower end of the log-uniform learning-rate range.")]
_SearchLrMaxOpt = Annotated[float, typer.Option("--lr-max", help="Upper end of the log-uniform learning-rate range.")]
_SearchBatchSizesOpt = Annotated[
    str, typer.Option("--batch-sizes", help="Comma-separated batch sizes the search chooses from.")
]
_SearchImgSizeOpt = Annotated[
    int | None,
    typer.Option("--img-size", "--img_size", help="Image side in pixels. (default: the config file's, else 224)"),
]
_SearchPruneStartupTrialsOpt = Annotated[
    int,
    typer.Option("--prune-startup-trials", help="MedianPruner: no pruning until this many trials have completed."),
]
_SearchPruneWarmupEpochsOpt = Annotated[
    int, typer.Option("--prune-warmup-epochs", help="MedianPruner: no trial is pruned during its first N epochs.")
]
_SearchExperimentOpt = Annotated[
    str | None,
    typer.Option(
        "--experiment", help="MLflow experiment of the search and its trial runs. (default: medattn-<dataset>)"
    ),
]
_SearchSeedOpt = Annotated[
    int, typer.Option("--seed", help="Seed of the TPE sampler (a resumed study adds its trial count to it).")
]


@app.command("search")
def search_cmd(
    dataset: _SearchDatasetOpt = "demo",
    model: _SearchModelOpt = "resnet50",
    data_dir: _SearchDataDirOpt = None,
    n_trials: _SearchNTrialsOpt = 20,
    storage: _SearchStorageOpt = None,
    study_name: _SearchStudyNameOpt = None,
    n_jobs: _SearchNJobsOpt = 1,
    metric: _SearchMetricOpt = "val_auc",
    mode: _SearchModeOpt = None,
    epochs: _SearchEpochsOpt = None,
    config: _SearchConfigOpt = None,
    lr_min: _SearchLrMinOpt = 1e-6,
    lr_max: _SearchLrMaxOpt = 1e-2,
    batch_sizes: _SearchBatchSizesOpt = "8,16,32,64",
    img_size: _SearchImgSizeOpt = None,
    prune_startup_trials: _SearchPruneStartupTrialsOpt = 5,
    prune_warmup_epochs: _SearchPruneWarmupEpochsOpt = 1,
    experiment: _SearchExperimentOpt = None,
    device: DeviceOpt = None,
    seed: _SearchSeedOpt = 0,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
    duplicates: _TrainDuplicatesOpt = None,
    heartbeat_s: _SearchHeartbeatOpt = 60,
    trial_retries: _SearchTrialRetriesOpt = 1,
    log_models: _SearchLogModelsOpt = False,
) -> None:
    """Optuna search over learning rate (log-uniform) and batch size (categorical): TPE sampler,
    median pruning per epoch, one parent MLflow run with one nested training run per trial."""
    cfg = api.SearchConfig(
        dataset=dataset,
        model=model,
        data_dir=data_dir,
        n_trials=n_trials,
        storage=storage,
        study_name=study_name,
        n_jobs=n_jobs,
        metric=metric,
        mode=mode,
        epochs=epochs,
        config_file=str(config) if config else None,
        lr_min=lr_min,
        lr_max=lr_max,
        batch_sizes=parse_batch_sizes(batch_sizes),
        img_size=img_size,
        device=device,
        experiment=experiment,
        tracking_uri=tracking_uri,
        seed=seed,
        prune_startup_trials=prune_startup_trials,
        prune_warmup_epochs=prune_warmup_epochs,
        heartbeat_s=heartbeat_s,
        trial_retries=trial_retries,
        log_models=log_models,
        train_overrides={"duplicates": duplicates} if duplicates is not None else {},
    )
    result = api.search(cfg, progress=not quiet)
    counts = {s: sum(1 for v in result.states.values() if v == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    typer.echo(
        f"{len(result.states)} trial{'' if len(result.states) == 1 else 's'}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
        f"{counts['FAIL']} failed; the study now holds {result.n_study_trials}."
    )
    if result.best_value is not None:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items()
        )
        typer.echo(f"best {metric} {result.best_value:.4f} with {params} (run {result.best_trial_run_id})")
    else:
        typer.echo("no trial of the study has completed yet.")
    exp = tracking.experiment_name_of(result.experiment_id)
    typer.echo(
        f"Logged search run {result.parent_run_id} with {len(result.trial_run_ids)} nested trial "
        f"run{'' if len(result.trial_run_ids) == 1 else 's'} in experiment "
        f"{exp!r} to {result.tracking_uri} and study {result.study_name!r} to {result.storage}; "
        f"view it with: {tracking.ui_command(result.tracking_uri)}"
    )


@app.command("promote")
def promote_cmd(
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            help="Experiment whose finished training runs compete. (default: under mlflow run the project run's experiment, else medattn-<dataset>)",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="Only runs of this data set compete; names the default experiment. (default: demo)",
            **DATASET_CHOICES,
        ),
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="Metric that ranks the runs: best_<metric> when logged, else its last value.",
            **EPOCH_METRIC_CHOICES,
        ),
    ] = "val_auc",
    mode: _SearchModeOpt = None,
    alias: Annotated[
        str, typer.Option("--alias", help="Registry alias moved to the best run's model version.")
    ] = "champion",
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Register the best finished training run's model as medattn-<dataset> (if not yet) and move
    the alias (champion) to that version; idempotent."""
    result = api.promote(
        api.PromoteConfig(
            experiment=given(experiment) or tracking.project_experiment_name(tracking_uri),
            dataset=dataset,
            metric=metric,
            mode=mode,
            alias=alias,
            tracking_uri=tracking_uri,
        )
    )
    typer.echo(result.describe())
    if result.tie_break:
        typer.echo(result.tie_break)
    typer.echo(
        f"best run {result.run_id} ({result.variant}, {result.metric}={result.value:.4f}) in experiment "
        f"{result.experiment!r}" + (f"; registered as version {result.version}" if result.registered else "")
    )
    what = "Set" if result.changed else "Kept"
    typer.echo(
        f"{what} alias {result.alias!r} of registered model {result.name!r} on version {result.version} in "
        f"{result.tracking_uri}; load it with {result.model_uri}; view it with: {tracking.ui_command(result.tracking_uri)}"
    )


# --------------------------------------------------------------------------------------------
# medattn figures / compare
# --------------------------------------------------------------------------------------------
@app.command("figures")
def figures_cmd(
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Interpret run to draw; or a training run, whose latest finished interpret run (tag medattn.source_run) is used.",
        ),
    ] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri",
            help="Instead of --run-id: a training run's model URI (models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-<id>, runs:/RUN_ID/model); its latest interpret run is drawn.",
        ),
    ] = None,
    saliency_maps: Annotated[
        str,
        typer.Option(
            "--saliency-maps",
            "--saliency_maps",
            help="Which methods' maps to draw (any case).",
            **SALIENCY_CHOICES,
        ),
    ] = "ALL",
    alpha_overlay: Annotated[
        float,
        typer.Option(
            "--alpha-overlay", "--alpha_overlay", help="Opacity of the heat map over the greyscale image, in [0, 1]."
        ),
    ] = 0.5,
    max_images: Annotated[
        int,
        typer.Option(
            "--max-images",
            "--max_images",
            help="Draw the first N explained images (their heat maps and grid rows); 0: every explained image.",
        ),
    ] = 0,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Blended heat maps (captum style, bwr) per image and method, the original images, an images ×
    methods grid and the training-history curves, logged to the interpret run under figures/."""
    result = api.figures(
        api.FiguresConfig(
            run_id=given(run_id),
            model_uri=given(model_uri),
            saliency_maps=saliency_maps,
            alpha_overlay=alpha_overlay,
            max_images=max_images,
            tracking_uri=tracking_uri,
        )
    )
    typer.echo(
        f"{len(result.artifacts)} figures under figures/ (grid: figures/grid.png"
        + (", history: figures/history/*.png)" if result.history else "; no training history)")
    )
    _done("interpret", result.run_id, result.tracking_uri)


@app.command("compare")
def compare_cmd(
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            help="Experiment whose finished test runs (split test) are compared. (default: under mlflow run the project run's experiment, else medattn-demo)",
        ),
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="Test metric of the low-data-regimen figure and the table's first column.",
            **TEST_METRIC_CHOICES,
        ),
    ] = "test_auc",
    cases: Annotated[
        str | None,
        typer.Option(
            "--cases",
            help="List (and draw) the test images where all models share that outcome (tp, tn, fp, fn), all agree, or disagree.",
            **choices(CASES),
        ),
    ] = None,
    max_images: Annotated[int, typer.Option("--max-images", help="Images per saliency grid (rows).")] = 4,
    alpha_overlay: Annotated[
        float,
        typer.Option("--alpha-overlay", "--alpha_overlay", help="Opacity of the heat maps in the grids, in [0, 1]."),
    ] = 0.5,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Comparison table of test metrics with CIs per variant and training-data fraction, each attention
    variant's ΔAUC against its plain backbone (paired bootstrap CI, p-value, forest plot, one verdict
    sentence each), the low-data-regimen figure, explanation scores and a models × methods grid,
    logged to a new compare run; --cases selects images by the models' shared outcome."""
    experiment = given(experiment) or tracking.project_experiment_name(tracking_uri)
    result = api.compare(
        api.CompareConfig(
            **({"experiment": experiment} if experiment else {}),
            metric=metric,
            cases=cases,
            max_images=max_images,
            alpha_overlay=alpha_overlay,
            tracking_uri=tracking_uri,
        )
    )
    shown = [c for c in result.table.columns if c not in ("run_id", "source_run")]
    typer.echo(api.to_markdown(result.table[shown]))
    if result.cases is not None:
        typer.echo(
            f"{len(result.cases)} image{'' if len(result.cases) == 1 else 's'} where the models are '{cases}': "
            + (", ".join(result.cases) if result.cases else "none")
        )
    for sentence in result.verdicts:
        typer.echo(sentence)
    _done("compare", result.run_id, result.tracking_uri, tracking.get_run(result.run_id).info.experiment_id)


# --------------------------------------------------------------------------------------------
# medattn bench (issue 8)
# --------------------------------------------------------------------------------------------
@app.command("bench")
def bench_cmd(
    models: Annotated[
        str, typer.Option("--models", help=f"Comma-separated, of: {', '.join(registry_names('model'))}; or all.")
    ] = "all",
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="Training batch of the pure/pipeline/files measurements. (default: 128)"),
    ] = None,
    img_size: Annotated[int | None, typer.Option("--img-size", help="Image side in pixels. (default: 224)")] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Timed training steps per measurement (after the warm-up). (default: 20)"),
    ] = None,
    num_workers: Annotated[
        int | None,
        typer.Option("--num-workers", help="DataLoader workers of the files (PIL) measurement. (default: 8)"),
    ] = None,
    device: DeviceOpt = None,
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile the model for pure/pipeline.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny CPU run (2 models, 32 px, batch 4) for the test suite.")
    ] = False,
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare/--no-prepare",
            help="Also measure `medattn data prepare` on synthetic high-resolution ISIC/MIMIC/APTOS-like files: "
            "prepare_img_s against serial full-resolution decoding, and the scaling with 1, 2, ... workers.",
        ),
    ] = False,
    prepare_workers: Annotated[
        int | None,
        typer.Option(
            "--prepare-workers",
            help="Most workers of the --prepare scaling series (default: every CPU).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="JSON file to write (a .md table goes next to it). (default: benchmarks/results/<gpu>-<date>.json on CUDA)",
        ),
    ] = None,
) -> None:
    """Measure images/s: pure, pipeline (uint8 cache + GPU augmentation), files, seed config, inference, explanations."""
    given = dict(
        batch_size=batch_size,
        img_size=img_size,
        steps=steps,
        num_workers=num_workers,
        device=device,
        compile=compile,
        out=str(out) if out else None,
        prepare=prepare,
        prepare_workers=prepare_workers,
    )
    names = tuple(m for m in models.split(",") if m.strip())
    if quick:
        cfg = api.quick_config(**given, models=names if models != "all" else None)
    else:
        cfg = api.BenchConfig(models=names, **{k: v for k, v in given.items() if v is not None})
    api.bench(cfg, echo=typer.echo)
