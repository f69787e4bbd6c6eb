"""The sections of ``medattn report``'s page, built from the runs of one experiment.

Each ``section_*`` function reads MLflow runs (metrics, params, tags, a few small artifacts through
:mod:`medattn.tracking`) and returns a :class:`~medattn.stages.report_model.Section` of sentences,
tables and inlined figures; a number is a :class:`~medattn.stages.report_model.Num` that carries the
ids of the runs it comes from. Clinical sections (calibration, operating points, subgroups), the
oracle's columns and the explanation scores are read by metric-name pattern, so they appear as soon
as runs log them. :mod:`medattn.stages.report` renders the sections with the Jinja2 template and
writes the page.

:func:`build_sections` puts them in order; this module holds the last two (problems: failed,
missing and untested cells; the run index). The others live by group:
:mod:`~medattn.stages.report_setup` (data, models, settings, versions),
:mod:`~medattn.stages.report_results` (test metrics, clinical evaluation),
:mod:`~medattn.stages.report_paper` (published numbers, paired ΔAUC, low-data curves) and
:mod:`~medattn.stages.report_xai` (explanation scores, saliency maps), on the document model of
:mod:`~medattn.stages.report_model` and the runs of :mod:`~medattn.stages.report_runs`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medattn import tracking
from medattn.stages import compare_paired
from medattn.stages.report_model import RunRef, Section, Table
from medattn.stages.report_paper import section_low_data, section_paired, section_paper
from medattn.stages.report_results import section_clinical, section_results
from medattn.stages.report_runs import CELL_KINDS, Experiment, _Artifacts, _frac, _model_order, _params, _pct, _tag
from medattn.stages.report_setup import section_setup
from medattn.stages.report_xai import section_saliency, section_xai


# ---- failed, missing and untested cells -----------------------------------------------------
def _grid_gaps(exp: Experiment, dataset: str, explained: Mapping[str, Any]) -> list[list[Any]]:
    """Problem rows of one data set's models × fractions grid: cells not tested, fewer seeds than the
    others, attention variants without their backbone, models never explained."""
    rows: list[list[Any]] = []
    cells = {(c.model, c.perc): c for c in exp.cells if c.dataset == dataset}
    models = sorted({m for m, _ in cells}, key=_model_order)
    fractions = sorted({p for _, p in cells})
    most = max((len(c.runs) for c in cells.values()), default=0)
    for model in models:
        for perc in fractions:
            cell = cells.get((model, perc))
            if cell is None:
                rows.append(
                    [
                        "cell not tested",
                        dataset,
                        model,
                        _pct(perc),
                        "other models were tested at this fraction; this one has no finished test run",
                        "",
                    ]
                )
            elif len(cell.runs) < most:
                rows.append(
                    [
                        "fewer seeds",
                        dataset,
                        model,
                        _pct(perc),
                        f"{len(cell.runs)} of {most} seeds tested",
                        RunRef(cell.run_ids[0]),
                    ]
                )
        backbone = compare_paired.plain_backbone(model)
        for perc in fractions:
            if (model, perc) in cells and backbone is not None and (backbone, perc) not in cells:
                rows.append(
                    [
                        "no paired ΔAUC",
                        dataset,
                        model,
                        _pct(perc),
                        f"its plain backbone {backbone} was not tested at this fraction",
                        RunRef(cells[(model, perc)].run_ids[0]),
                    ]
                )
        if model not in explained:
            rows.append(["not explained", dataset, model, "", "no finished interpret run of this model", ""])
    return rows


def section_problems(exp: Experiment, interp: Mapping[str, Mapping[str, Any]]) -> Section:
    """Every run that did not finish and every cell that is missing a stage, listed (never left out)."""
    sec = Section("problems", "Failed, missing and untested cells")
    rows: list[list[Any]] = []
    for run in exp.runs:
        kind = _tag(run, tracking.TAG_KIND)
        if kind in CELL_KINDS and run.info.status != "FINISHED":
            rows.append(
                [
                    f"{kind} run {run.info.status.lower()}",
                    _tag(run, tracking.TAG_DATASET, "?"),
                    _tag(run, tracking.TAG_MODEL, "?"),
                    _pct(_frac(run)),
                    "did not finish: its metrics are not in this report",
                    RunRef(run.info.run_id),
                ]
            )
    tested_sources = {_tag(r, tracking.TAG_SOURCE_RUN) for r in exp.test_runs()}
    for run in exp.finished("train"):
        if run.info.run_id not in tested_sources:
            rows.append(
                [
                    "trained, not tested",
                    _tag(run, tracking.TAG_DATASET, "?"),
                    _tag(run, tracking.TAG_MODEL, "?"),
                    _pct(_frac(run)),
                    f"medattn test --run-id {run.info.run_id}",
                    RunRef(run.info.run_id),
                ]
            )
    for dataset in exp.datasets:
        rows += _grid_gaps(exp, dataset, interp.get(dataset, {}))
    if rows:
        sec.tables.append(
            Table(
                "problems",
                "What did not finish, or was not run",
                ["What", "Data set", "Model", "% train", "Detail", "Run"],
                rows,
            )
        )
    else:
        sec.intro.append("None: every run finished, and every cell was trained, tested, paired and explained.")
    return sec


def section_runs(exp: Experiment) -> Table:
    """The run index every number links to."""
    rows = [
        [
            RunRef(r.info.run_id),
            _tag(r, tracking.TAG_KIND, "?"),
            r.info.run_name or "",
            r.info.status,
            _tag(r, tracking.TAG_DATASET),
            _tag(r, tracking.TAG_MODEL),
            _pct(_frac(r)) if _tag(r, tracking.TAG_PERC_TRAIN) else "",
            _params(r).get("seed", "")
            if _tag(r, tracking.TAG_KIND) == "train"
            else exp.seeds.get(_tag(r, tracking.TAG_SOURCE_RUN), ""),
            RunRef(_tag(r, tracking.TAG_SOURCE_RUN)) if _tag(r, tracking.TAG_SOURCE_RUN) else "",
            dt.datetime.fromtimestamp(r.info.start_time / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
            if r.info.start_time
            else "",
        ]
        for r in exp.runs
        if _tag(r, tracking.TAG_KIND) != "report"
    ]
    return Table(
        "runs",
        "Every run of the experiment (the numbers above link here)",
        ["Run id", "Kind", "Name", "Status", "Data set", "Model", "% train", "Seed", "Source run", "Started (UTC)"],
        rows,
    )


def build_sections(exp: Experiment, workdir: Path, *, paper: bool = False, max_images: int = 4) -> list[Section]:
    """Every section of the page, in reading order (those with nothing to say left out).

    Args:
        exp: the experiment (:func:`load_experiment`).
        workdir: a folder for the artifacts read (the caller removes it).
        paper: add the original project's numbers (:func:`section_paper`).
        max_images: test images in the saliency grid.
    """
    files = _Artifacts(workdir)
    setup, majority = section_setup(exp, files)
    results, clinical = section_results(exp, majority)
    sections = [setup, results]
    if paper:
        sections.append(section_paper(exp)[0])
    xai, interp = section_xai(exp)
    sections += [section_paired(exp, files), section_low_data(exp), xai]
    sections.append(section_saliency(interp, workdir, max_images))
    sections.append(section_problems(exp, interp))
    clinical_section = section_clinical(clinical)
    if clinical_section is not None:
        sections.append(clinical_section)
    sections.append(Section("runs", "Run index", tables=[section_runs(exp)]))
    return sections
