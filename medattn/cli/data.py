"""``medattn data synth | prepare | check``: the synthetic demo set, the uint8 cache, a data folder's check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medattn.cli.options import DUPLICATES_HELP, DataDirOpt, choices, option, registry_choices
from medattn.config import DUPLICATES, UNCERTAIN, DataConfig
from medattn.data.synthetic import DEFAULT_DIFFICULTY, DEFAULT_TAU, DEFAULT_VERSION

app = typer.Typer(
    help="Data sets: write the synthetic demo set, prepare a uint8 cache, check a data folder.",
    no_args_is_help=True,
    add_completion=False,
)
D = DataConfig

DatasetOpt = Annotated[
    str,
    option(
        "--dataset", help="Data set (the seed's APTOS, ISIC2020, MIMICCXR accepted).", **registry_choices("dataset")
    ),
]
UncertainOpt = Annotated[
    str,
    option(
        "--uncertain",
        help="mimic-cxr only: uncertain (-1) Pleural Effusion labels are left out (ignore) or become 0 (zeros) or 1 "
        "(ones).",
        **choices(UNCERTAIN),
    ),
]


@app.command("synth")
def data_synth(
    out: Annotated[Path, option("--out", help="Folder to write labels.csv, images/ and masks/ into.")],
    n: Annotated[
        int, option("--n", help="Number of images split train/val/test (versions 1-2: half with lesions).")
    ] = 600,
    img_size: Annotated[int, option("--img-size", help="Image side in pixels (at least 32).")] = 128,
    seed: Annotated[int, option("--seed", help="Random seed; the same seed writes byte-identical files.")] = 0,
    difficulty: Annotated[
        float,
        option(
            "--difficulty",
            help="Difficulty in [0, 1]: how faint the blobs can be (versions 2-3) and how small version 2's ring "
            "cores (0: crisp; 1: many lesions nearly invisible).",
        ),
    ] = DEFAULT_DIFFICULTY,
    version: Annotated[
        int,
        option(
            "--version",
            help="3: the label drawn from a latent ring strength, labels.csv with oracle_prob and site; 2: rings "
            "among look-alike solid blobs, the label a rule; 1: the old set, lesions in class 1 only.",
        ),
    ] = DEFAULT_VERSION,
    tau: Annotated[
        float,
        option(
            "--tau",
            help="Version 3: temperature of P(label=1) = sigmoid((strength - 0.35) / tau); smaller is a more "
            "predictable label (docs/demo.md).",
        ),
    ] = DEFAULT_TAU,
    test_extra: Annotated[
        int,
        option("--test-extra", help="Version 3: further images that only the test split receives (the demo split)."),
    ] = 0,
) -> None:
    """Write the synthetic demo set: fundus-like images, lesion labels and ground-truth masks."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn.data import write_synthetic

    folder = write_synthetic(
        out, n=n, img_size=img_size, seed=seed, difficulty=difficulty, version=version, tau=tau, test_extra=test_extra
    )
    extra = f" plus {test_extra} test-only" if test_extra else ""
    typer.echo(f"Wrote {n}{extra} synthetic images ({img_size} px, seed {seed}) with masks and labels.csv to {folder}")


@app.command("prepare")
def data_prepare(
    dataset: DatasetOpt,
    data_dir: DataDirOpt,
    img_size: Annotated[
        int, option("--img-size", help="Side of the cached images; train with the same --img-size.")
    ] = D.img_size,
    uncertain: UncertainOpt = D.uncertain,
    workers: Annotated[
        int | None, option("--workers", help="Decoding processes (default: every CPU).", show_default=False)
    ] = None,
) -> None:
    """Decode and resize every image once into a memory-mappable uint8 cache that loaders use when present.

    Decoding runs in parallel at reduced resolution; a prepare that was stopped continues where it left off.
    """
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn.data import prepare_cache

    folder = prepare_cache(dataset, data_dir, img_size=img_size, uncertain=uncertain, workers=workers)
    typer.echo(f"Wrote the {img_size} px uint8 cache (images.npy, manifest.csv) to {folder}")


@app.command("check")
def data_check(
    dataset: DatasetOpt,
    data_dir: DataDirOpt,
    uncertain: UncertainOpt = D.uncertain,
    low_data_regimen: Annotated[
        bool, option("--low-data-regimen", help="Also check the low-data regimen's train subsample.")
    ] = D.low_data_regimen,
    perc_train: Annotated[
        float, option("--perc-train", help="Fraction of training images kept in the low-data regimen, in (0, 1].")
    ] = D.perc_train,
    duplicates: Annotated[str, option("--duplicates", help=DUPLICATES_HELP, **choices(DUPLICATES))] = D.duplicates,
    duplicates_out: Annotated[
        Path | None,
        option("--duplicates-out", help="Write every near-duplicate group (one row per image) to this CSV file."),
    ] = None,
) -> None:
    """Report every problem of a data folder at once, the near-duplicate groups, then images and positives
    per split (exit 2 on problems)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn.data import check_data

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
