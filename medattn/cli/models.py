"""``medattn models``: the model table, and one model built to check how its weights load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medattn.cli.options import choices, option
from medattn.config import HEADS, INITS, PRETRAINED, ModelConfig

M = ModelConfig


def command(
    model: Annotated[
        str | None,
        option(
            "--model",
            help="Also build this model and report how its initial weights load "
            "(check a --weights file before training).",
        ),
    ] = None,
    pretrained: Annotated[
        str, option("--pretrained", help="With --model: initial weights, imagenet or none.", **choices(PRETRAINED))
    ] = "none",
    weights: Annotated[
        Path | None,
        option("--weights", help="With --model: a local state_dict / timm checkpoint instead of the download."),
    ] = None,
    init: Annotated[
        str,
        option(
            "--init",
            help="With --model: fair (every backbone initialised) or paper (the original project's).",
            **choices(INITS),
        ),
    ] = M.init,
    head: Annotated[
        str,
        option(
            "--head",
            help="With --model: pool, flatten or paper (the original's head per family: DenseNets flatten, ResNets "
            "and DeiT pool).",
            **choices(HEADS),
        ),
    ] = M.head,
    img_size: Annotated[int, option("--img-size", help="With --model: input side in pixels.")] = 224,
    nr_layers: Annotated[int, option("--nr-layers", help="With --model: DeiT blocks (only for ViT).")] = M.nr_layers,
    num_classes: Annotated[int, option("--num-classes", help="With --model: output classes.")] = 2,
) -> None:
    """List the models: architecture, attention placement and parameter count."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn.models import canonical_model_name, count_parameters, create_model_with_report, model_table

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
