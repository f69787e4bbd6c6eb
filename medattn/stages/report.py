"""The ``report`` stage: an experiment's answer as one self-contained page a researcher can share.

Everything medattn concludes is spread over MLflow runs (test metrics, paired ΔAUC, explanation
scores, saliency maps, params). ``report`` reads every run of one experiment and renders, with the
Jinja2 template ``medattn/resources/report.html.j2``, one HTML file in the order a reader asks:
what was run (data sets with split sizes, class balance and near-duplicate handling, models with
parameter counts, the settings that differ between cells, seeds, versions, git commits); the
results table (test AUC, balanced accuracy, sensitivity, specificity with their CIs, mean ± sd over
seeds, the oracle's ceiling where the data set has one); optionally the original project's
published numbers next to the user's (``--paper``); the paired ΔAUC of each attention variant
against its plain backbone with its forest plot and verdicts; the low-data curves; explanation
scores with the sanity baselines and verdicts; a saliency grid of the same images across models and
methods; failed, missing and untested cells; calibration, operating-point and subgroup tables when
the test runs logged them (read by metric-name pattern, so they appear as soon as runs have them
and are left out when none has); and an index of every run.

The sections are built in :mod:`medattn.stages.report_sections`; this module checks the options,
renders the template, writes the files and logs the report run. Every number carries the ids of
the runs it comes from (``data-runs``) and links to them (the run index at the bottom of the page,
or the MLflow UI when a server URL is known). Images are inlined as ``data:`` URIs and the CSS is in
the page, so it opens from a USB stick without a network. The page is written atomically (a temp
file in the target folder, then renamed), optionally printed to PDF by headless Chromium, and
logged with its tables as CSV to a new run tagged ``medattn.kind=report``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jinja2
import pandas as pd

import medattn
from medattn import tracking
from medattn.config import TrackingPart
from medattn.errors import ConfigError, MedattnError
from medattn.stages.report_model import Section
from medattn.stages.report_paper import RESOURCES, paper_results
from medattn.stages.report_runs import Experiment, load_experiment
from medattn.stages.report_sections import build_sections
from medattn.stages.report_xai import parse_xai_metrics

__all__ = [
    "ReportConfig",
    "ReportResult",
    "Section",
    "build_sections",
    "find_chromium",
    "load_experiment",
    "open_command",
    "paper_results",
    "parse_xai_metrics",
    "print_pdf",
    "render",
    "report",
    "write_atomic",
]

#: The report template, in the package folder ``resources`` (beside the published numbers).
TEMPLATE = "report.html.j2"
#: Headless browsers tried for ``--pdf``, in order (a path, or a name looked up on ``PATH``).
CHROMIUM_CANDIDATES: tuple[str, ...] = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
#: Seconds Chromium may take to print the page.
PDF_TIMEOUT_S = 120.0


# =============================================================================================
# config and result
# =============================================================================================
@dataclass(frozen=True, kw_only=True)
class ReportConfig(TrackingPart):
    """Options of ``medattn report``.

    Attributes:
        experiment: the MLflow experiment to report on.
        out: the HTML file to write (its folder must exist); the PDF goes beside it as ``.pdf``.
        paper: put the original project's published numbers next to the experiment's.
        pdf: also print the page to PDF with headless Chromium.
        ui_url: address of an MLflow UI showing this store (numbers then link to run pages there);
            default: the tracking URI when it is an http(s) server.
        max_images: test images in the saliency grid.
        tracking_uri: MLflow tracking URI.
    """

    experiment: str = "medattn-demo"
    out: str = "report.html"
    paper: bool = False
    pdf: bool = False
    ui_url: str | None = None
    max_images: int = 4

    def __post_init__(self) -> None:  # noqa: D105
        if self.max_images < 1:
            raise ConfigError(f"--max-images must be at least 1, got {self.max_images}.")
        if self.ui_url and urlparse(self.ui_url).scheme not in ("http", "https"):
            raise ConfigError(
                f"--ui-url must be an http(s) address such as http://127.0.0.1:5000, got {self.ui_url!r}."
            )
        if not str(self.out).strip():
            raise ConfigError("--out must name an HTML file, e.g. report.html.")


@dataclass(frozen=True)
class ReportResult:
    """Outcome of :func:`report`: the files written, the report run and the tables it shows."""

    path: Path
    pdf: Path | None
    run_id: str
    experiment: str
    tables: dict[str, pd.DataFrame]
    tracking_uri: str
    n_runs: int


# =============================================================================================
# writing: the page, its PDF, the report run
# =============================================================================================
def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of the report template (HTML autoescaped)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medattn", RESOURCES),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(context: Mapping[str, Any]) -> str:
    """The report page from its context (see :func:`report`)."""
    env = template_environment()
    env.filters["repr"] = lambda v: repr(float(v))
    return env.get_template(TEMPLATE).render(**context)


def check_out(out: str | Path) -> Path:
    """The absolute path of ``--out``, after checking that a file can be created in its folder.

    Raises:
        MedattnError: the path is a folder, its folder is missing, or nothing can be written there.
    """
    path = Path(out).expanduser().absolute()
    if path.is_dir():
        raise MedattnError(f"--out {str(out)!r} is a folder; give a file name such as {str(path / 'report.html')!r}.")
    try:
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise MedattnError(
            f"cannot write the report to {str(out)!r} ({exc.strerror or type(exc).__name__} in {str(path.parent)!r}); "
            "choose another --out."
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in ``path``'s folder and rename it over ``path``: a reader sees
    the old file or the whole new one, never half of it, and a failure leaves no temp file behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_chromium() -> str | None:
    """The first headless-capable Chromium of :data:`CHROMIUM_CANDIDATES` on this machine, else ``None``."""
    for candidate in CHROMIUM_CANDIDATES:
        found = candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else shutil.which(candidate)
        if found:
            return found
    return None


def chromium_command(binary: str, profile: Path, *args: str) -> list[str]:
    """Headless Chromium with a throwaway profile and no background network traffic."""
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]


def print_pdf(html: Path, pdf: Path, binary: str, timeout: float = PDF_TIMEOUT_S) -> Path:
    """Print the page ``html`` to ``pdf`` with headless Chromium (written to a temp file, then renamed).

    Raises:
        MedattnError: Chromium failed or wrote nothing.
    """
    fd, tmp = tempfile.mkstemp(dir=pdf.parent, prefix=f".{pdf.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix="medattn-chromium-") as profile:
            cmd = chromium_command(
                binary, Path(profile), "--no-pdf-header-footer", f"--print-to-pdf={tmp}", html.as_uri()
            )
            done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0 or os.path.getsize(tmp) == 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            raise MedattnError(
                f"Chromium could not print {str(html)!r} to PDF ({tail[0][:160]}); the HTML report is written."
            )
        os.replace(tmp, pdf)
    except subprocess.TimeoutExpired:
        raise MedattnError(
            f"Chromium did not print {str(html)!r} to PDF within {timeout:.0f} s; the HTML report is written."
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return pdf


def _link_for(exp: Experiment, ui: str | None) -> Callable[[str], str]:
    known = {r.info.run_id for r in exp.runs}

    def link(run_id: str) -> str:
        if ui:
            return tracking.run_url(ui, exp.id, run_id)
        return f"#run-{run_id}" if run_id in known else ""

    return link


def _log(cfg: ReportConfig, exp: Experiment, path: Path, pdf: Path | None, tables: Mapping[str, pd.DataFrame]) -> str:
    """Log the page, its PDF and its tables (``tables/<name>.csv``) to a new ``report`` run."""
    with tempfile.TemporaryDirectory(prefix="medattn-report-") as tmp:
        folder = Path(tmp)
        (folder / tracking.REPORT_TABLES_DIR).mkdir()
        shutil.copyfile(path, folder / tracking.REPORT_HTML)
        if pdf is not None:
            shutil.copyfile(pdf, folder / tracking.REPORT_PDF)
        for name, frame in tables.items():
            frame.to_csv(folder / tracking.REPORT_TABLES_DIR / f"{name}.csv", index=False)
        with tracking.stage_run(
            experiment_id=exp.id,
            run_id=tracking.project_run_id(),
            run_name="report",
            tags={tracking.TAG_KIND: "report"},
            description=f"The report of experiment {exp.name!r}: {tracking.REPORT_HTML} and its tables as CSV.",
        ) as run_id:
            tracking.log_params(
                {"experiment": exp.name, "paper": cfg.paper, "pdf": cfg.pdf, "n_runs": len(exp.runs), "out": str(path)}
            )
            tracking.log_artifacts(folder)
    return run_id


def report(cfg: ReportConfig) -> ReportResult:
    """Write the report page of an experiment (and its PDF) and log it to a new ``report`` run.

    Bad input fails before anything is written or any run starts: ``--pdf`` without Chromium, an
    ``--out`` that cannot be written, an unknown experiment, or one without finished runs.

    Returns:
        A :class:`ReportResult`: the HTML (and PDF) path, the report run, the tables as frames.

    Raises:
        MedattnError: one of the above.
    """
    chromium = find_chromium() if cfg.pdf else None
    if cfg.pdf and chromium is None:
        raise MedattnError(
            "--pdf needs headless Chromium, which is not installed (apt-get install chromium); "
            "leave out --pdf and print the HTML from a browser instead."
        )
    path = check_out(cfg.out)
    uri = tracking.connect(cfg.tracking_uri)
    exp = load_experiment(cfg.experiment, uri)
    ui = cfg.ui_url or (uri if urlparse(uri).scheme in ("http", "https") else None)
    workdir = Path(tempfile.mkdtemp(prefix="medattn-report-"))
    try:
        with tracking.quiet_artifact_downloads():
            sections = build_sections(exp, workdir, paper=cfg.paper, max_images=cfg.max_images)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    tables = {t.name: t.frame() for s in sections for t in s.tables}
    html = render(
        {
            "experiment": exp.name,
            "experiment_id": exp.id,
            "store": tracking.redact_url(uri),
            "ui": tracking.run_url(ui, exp.id, "").rsplit("/runs/", 1)[0] if ui else None,
            "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "version": medattn.__version__,
            "sections": sections,
            "link": _link_for(exp, ui),
            "paper": cfg.paper,
        }
    )
    write_atomic(path, html.encode("utf-8"))
    pdf = print_pdf(path, path.with_suffix(".pdf"), chromium) if chromium else None
    run_id = _log(cfg, exp, path, pdf, tables)
    return ReportResult(path, pdf, run_id, exp.name, tables, uri, len(exp.runs))


def open_command(path: Path) -> str:
    """A one-line command that opens the page in the default browser on any platform."""
    return f"python -m webbrowser {Path(path).absolute().as_uri()}"
