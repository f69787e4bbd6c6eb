"""``medattn bench``: throughput of training, the input pipeline, inference and explanations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medattn.cli.options import DeviceOpt, default, option, registry_names, split_list
from medattn.stages.bench import BenchConfig

C = BenchConfig  # options left out (None) keep the config class's defaults, shown in their help


def command(
    models: Annotated[
        str, option("--models", help=f"Comma-separated, of: {', '.join(registry_names('model'))}; or all.")
    ] = ",".join(C.models),
    batch_size: Annotated[
        int | None,
        option("--batch-size", help="Training batch of the pure/pipeline/files measurements." + default(C.batch_size)),
    ] = None,
    img_size: Annotated[int | None, option("--img-size", help="Image side in pixels." + default(C.img_size))] = None,
    steps: Annotated[
        int | None,
        option("--steps", help="Timed training steps per measurement (after the warm-up)." + default(C.steps)),
    ] = None,
    num_workers: Annotated[
        int | None,
        option("--num-workers", help="DataLoader workers of the files (PIL) measurement." + default(C.num_workers)),
    ] = None,
    device: DeviceOpt = None,
    compile: Annotated[
        bool, option("--compile/--no-compile", help="torch.compile the model for pure/pipeline.")
    ] = C.compile,
    quick: Annotated[
        bool, option("--quick", help="Tiny CPU run (2 models, 32 px, batch 4) for the test suite.")
    ] = C.quick,
    prepare: Annotated[
        bool,
        option(
            "--prepare/--no-prepare",
            help="Also measure `medattn data prepare` on synthetic high-resolution ISIC/MIMIC/APTOS-like files: "
            "prepare_img_s against serial full-resolution decoding, and the scaling with 1, 2, ... workers.",
        ),
    ] = C.prepare,
    prepare_workers: Annotated[
        int | None,
        option(
            "--prepare-workers",
            help="Most workers of the --prepare scaling series (default: every CPU).",
            show_default=False,
        ),
    ] = C.prepare_workers,
    out: Annotated[
        Path | None,
        option(
            "--out",
            help="JSON file to write (a .md table goes next to it). (default: "
            "benchmarks/results/<gpu>-<date>.json on CUDA)",
        ),
    ] = None,
) -> None:
    """Measure images/s: pure, pipeline (uint8 cache + GPU augmentation), files, seed config, inference, explanations."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    chosen = {
        "batch_size": batch_size,
        "img_size": img_size,
        "steps": steps,
        "num_workers": num_workers,
        "device": device,
        "compile": compile,
        "out": str(out) if out else None,
        "prepare": prepare,
        "prepare_workers": prepare_workers,
    }
    names = split_list(models)
    if quick:
        cfg = api.quick_config(**chosen, models=names if names != C.models else None)
    else:
        cfg = BenchConfig(models=names, **{k: v for k, v in chosen.items() if v is not None})
    api.bench(cfg, echo=typer.echo)
