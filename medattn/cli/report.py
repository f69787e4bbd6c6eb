"""``medattn report``: an experiment's answer as one self-contained HTML page (and PDF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medattn.cli.options import QuietOpt, TrackingUriOpt, done, given, option


def command(
    experiment: Annotated[
        str, option("--experiment", help="Experiment to report on (its train, test and interpret runs).")
    ],
    out: Annotated[
        Path,
        option("--out", help="HTML file to write (its folder must exist); with --pdf the PDF goes beside it."),
    ] = Path("report.html"),
    paper: Annotated[
        bool,
        option(
            "--paper",
            help="Put the original project's published test accuracy and AUC next to yours for the same data set, "
            "model and training fraction, with the difference and the source's caveats.",
        ),
    ] = False,
    pdf: Annotated[
        bool, option("--pdf", help="Also print the page to PDF with headless Chromium (exit 2 when it is missing).")
    ] = False,
    ui_url: Annotated[
        str | None,
        option(
            "--ui-url",
            help="Address of an MLflow UI over this store (e.g. http://127.0.0.1:5000): numbers link to run pages "
            "there. (default: the tracking URI when it is a server, else links to the page's run index)",
        ),
    ] = None,
    max_images: Annotated[int, option("--max-images", help="Test images in the saliency grid.")] = 4,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """One self-contained HTML page of an experiment's answer: what was run, the results with CIs, each
    attention variant's paired ΔAUC against its plain backbone with verdicts, low-data curves, explanation
    scores with sanity baselines, saliency grids, failed or missing cells, every number linked to its run;
    logged with its tables as CSV to a new run tagged medattn.kind=report."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api, tracking

    result = api.report(
        api.ReportConfig(
            experiment=experiment,
            out=str(out),
            paper=paper,
            pdf=pdf,
            ui_url=given(ui_url),
            max_images=max_images,
            tracking_uri=tracking_uri,
        )
    )
    typer.echo(f"Wrote {result.path} ({result.n_runs} runs of experiment {result.experiment!r})")
    if result.pdf is not None:
        typer.echo(f"Wrote {result.pdf}")
    typer.echo(f"open it with: {api.open_command(result.path)}")
    done("report", result.run_id, result.tracking_uri, tracking.get_run(result.run_id).info.experiment_id)
