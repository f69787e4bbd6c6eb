"""The report's comparison sections: the original project's published numbers next to yours, paired
ΔAUC of each attention variant against its backbone, and the low-data curves.
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

import medattn
from medattn import plots, tracking
from medattn.stages import compare_paired
from medattn.stages.report_model import Bullet, Figure, Num, Section, Table, _snake, figure_uri
from medattn.stages.report_runs import Cell, Experiment, _Artifacts, _model_order, _pct

#: Package folder of the report template and the original project's published numbers.
RESOURCES = "resources"
PAPER_RESULTS = "paper_results.csv"
#: Caveats of the original project's numbers, shown with ``--paper``.
PAPER_CAVEATS = (
    "One run per cell (seed 42): the original numbers carry no confidence interval and no spread over seeds, "
    "so a difference of a few hundredths from yours can be noise on either side.",
    "Accuracy near the majority rate on ISIC 2020: about 98 % of its images are benign, so a model that always "
    "answers 'benign' scores an accuracy of about 0.98; compare AUC there.",
    "Their settings: Adam lr 1e-6, batch 32, 300 epochs, the checkpoint of lowest validation loss, 224 px; "
    "ImageNet weights for DenseNet-121, ResNet-50, SE-ResNet-50 and DeiT-Tiny, random initialisation for "
    "SE-/CBAM-DenseNet-121 and CBAM-ResNet-50 (medattn's --init paper reproduces that); balanced class weights "
    "on ISIC 2020 and MIMIC-CXR.",
    "AUC is published at 1, 10 and 50 % of the training data for every model and at 100 % for DeiT-Tiny only; "
    "the six CNNs' 100 % AUC is not in the original logs ('not published').",
    "Source: the original project's repository (survey-attention-medical-imaging), results/experiments.xlsx of "
    "2022-04-13, which matches its per-run test logs; whether the printed paper shows exactly this table could "
    "not be confirmed, so cite these as the original project's results.",
)


# ---- the original project's numbers ---------------------------------------------------------
def paper_results() -> pd.DataFrame:
    """The original project's published test numbers shipped with medattn: ``dataset, model,
    perc_train, metric, value`` (metric ``accuracy`` or ``auc``)."""
    with importlib.resources.files(medattn).joinpath(RESOURCES, PAPER_RESULTS).open() as fh:
        return pd.read_csv(fh)


def section_paper(exp: Experiment) -> tuple[Section, list[Table]]:
    """The original project's numbers next to the experiment's, per data set, model and fraction."""
    sec = Section("paper", "Next to the original project's published numbers")
    paper = paper_results()
    sec.intro.append(
        "The original project's test numbers (one run each) beside yours for the same data set, model and "
        "training fraction; Δ = yours − theirs. Read them with these caveats:"
    )
    sec.bullets.extend(Bullet(c) for c in PAPER_CAVEATS)
    tables: list[Table] = []
    cells = {(c.dataset, c.model, round(c.perc, 6)): c for c in exp.cells}
    for dataset in exp.datasets:
        theirs = paper[paper["dataset"] == dataset]
        if theirs.empty:
            sec.notes.append(
                f"The original project published no numbers for data set {dataset!r} "
                f"(it has {', '.join(sorted(paper['dataset'].unique()))})."
            )
            continue
        values = {(r.model, round(float(r.perc_train), 6), r.metric): float(r.value) for r in theirs.itertuples()}
        keys = {(m, p) for m, p, _ in values} | {(m, p) for d, m, p in cells if d == dataset}
        rows = []
        for model, perc in sorted(keys, key=lambda k: (_model_order(k[0]), k[1])):
            cell = cells.get((dataset, model, perc))
            row: list[Any] = [model, _pct(perc)]
            for metric, name in (("accuracy", "test_accuracy"), ("auc", "test_auc")):
                ref = values.get((model, perc, metric))
                row.append(Num(ref, (), f"paper_{metric}") if ref is not None else "not published")
                if cell is None:
                    row += ["not run", "—"]
                    continue
                mine = cell.num(name)
                mine = Num(mine.value, mine.runs, mine.metric, sd=mine.sd, digits=3)  # the CI is in the results
                row.append(mine)
                delta = mine.value - ref if ref is not None and mine.finite else math.nan
                signed = Num(delta, mine.runs, f"delta_paper_{metric}", signed=True)
                row.append(signed if math.isfinite(delta) else "—")
            row.append(
                "not run"
                if cell is None
                else ("tested" if (model, perc, "accuracy") in values else "not in the original")
            )
            rows.append(row)
        tables.append(
            Table(
                f"paper_{_snake(dataset)}",
                f"{dataset}: the original project's test numbers and yours",
                [
                    "Model",
                    "% train",
                    "Original accuracy",
                    "Your accuracy",
                    "Δ accuracy",
                    "Original AUC",
                    "Your AUC",
                    "Δ AUC",
                    "Your cell",
                ],
                rows,
            )
        )
    sec.tables = tables
    return sec, tables


# ---- paired ΔAUC, low-data curves -----------------------------------------------------------
def _paired_rows(cells: Mapping[tuple[str, float], Cell], files: _Artifacts) -> pd.DataFrame:
    """:func:`medattn.stages.compare_paired.paired_table` of one data set's cells (their ``predictions.csv``)."""
    pairs = {k for k in cells if (compare_paired.plain_backbone(k[0]), k[1]) in cells}
    needed = pairs | {(compare_paired.plain_backbone(m), p) for m, p in pairs}
    frames = {
        k: {
            s: files.csv(r.info.run_id, tracking.PREDICTIONS)
            for s, r in zip(cells[k].seeds, cells[k].runs, strict=True)
        }
        for k in needed
    }
    frames = {k: {s: f for s, f in v.items() if f is not None} for k, v in frames.items()}
    return compare_paired.paired_table({k: v for k, v in frames.items() if v})


def _paired_cells(dataset: str, row: Mapping[str, Any], ids: tuple[str, ...]) -> list[Any]:
    """One row of the paired table on the page."""
    delta = Num(row["delta_auc"], ids, "delta_auc", ci_low=row["ci_low"], ci_high=row["ci_high"], signed=True)
    seeds: Any = "one seed"
    if row["n_seed_pairs"] > 1:
        pairs = int(row["n_seed_pairs"])
        seeds = Num(row["seed_delta_mean"], ids, "seed_delta_auc", sd=row["seed_delta_sd"], signed=True, seeds=pairs)
    return [
        dataset,
        row["variant"],
        row["backbone"],
        _pct(row["perc_train"]),
        Num(row["n_images"], ids, "n_images", digits=0),
        f"{row['n_seeds_variant']} / {row['n_seeds_backbone']}",
        delta,
        Num(row["p_value"], ids, "p_value", digits=-2),
        seeds,
    ]


def section_paired(exp: Experiment, files: _Artifacts) -> Section:
    """ΔAUC of each attention variant against its plain backbone (paired bootstrap on the shared
    test images, as ``medattn compare`` computes it), the forest plot and one verdict per row."""
    sec = Section("paired", "Attention against its plain backbone")
    sec.intro.append(
        "ΔAUC = AUC(variant) − AUC(plain backbone) on the test images both predicted, with its paired bootstrap "
        f"95 % CI ({compare_paired.PAIRED_N_BOOT} resamples) and two-sided p-value; with several seeds the probabilities "
        "are averaged per side and the per-seed ΔAUC is summarised as mean ± sd. A model that knows nothing "
        "differs from its backbone by ΔAUC 0."
    )
    forest_rows, rows = [], []
    for dataset in exp.datasets:
        cells = {(c.model, c.perc): c for c in exp.cells if c.dataset == dataset}
        for row in _paired_rows(cells, files).to_dict("records"):
            ids = (
                cells[(row["variant"], row["perc_train"])].run_ids + cells[(row["backbone"], row["perc_train"])].run_ids
            )
            rows.append(_paired_cells(dataset, row, ids))
            sec.bullets.append(Bullet(compare_paired.verdict(row), ids))
            label = f"{row['variant']} vs {row['backbone']}"
            forest_rows.append(
                {
                    "label": label + ("" if row["perc_train"] >= 1 else f" ({_pct(row['perc_train'])})"),
                    "delta": row["delta_auc"],
                    "ci_low": row["ci_low"],
                    "ci_high": row["ci_high"],
                    "p_value": row["p_value"],
                }
            )
    if not rows:
        sec.notes.append(
            "No attention variant has its plain backbone tested at the same training fraction in this experiment: "
            "nothing to pair (the untested cells below say which are missing)."
        )
        return sec
    sec.tables.append(
        Table(
            "paired_auc",
            "Paired ΔAUC of each attention variant against its plain backbone",
            [
                "Data set",
                "Variant",
                "Backbone",
                "% train",
                "Images",
                "Seeds (variant / backbone)",
                "ΔAUC [95 % CI]",
                "p-value",
                "Per-seed ΔAUC (mean ± sd)",
            ],
            rows,
        )
    )
    sec.figures.append(
        Figure(
            "Forest plot",
            figure_uri(plots.forest_figure(forest_rows)),
            "Forest plot of the paired ΔAUC of each attention variant against its plain backbone with 95 % CIs",
            "Each row: ΔAUC with its paired bootstrap 95 % CI; the dashed line is no difference.",
        )
    )
    return sec


def section_low_data(exp: Experiment) -> Section:
    """Test AUC and balanced accuracy against the fraction of training data, one line per model."""
    sec = Section("low_data", "Low-data regimen")
    drawn = False
    for dataset in exp.datasets:
        cells = [c for c in exp.cells if c.dataset == dataset]
        fractions = {c.perc for c in cells}
        if len(fractions) < 2:
            continue
        for metric, label in (("test_auc", "AUC"), ("test_balanced_accuracy", "balanced accuracy")):
            rows = [
                {"model": c.model, "perc_train": c.perc, "value": n.value, "ci_low": n.ci_low, "ci_high": n.ci_high}
                for c in cells
                if (n := c.num(metric)).finite
            ]
            if rows:
                fig = plots.low_data_figure(rows, metric, title=f"{dataset}: test {label} against the training data")
                sec.figures.append(
                    Figure(
                        f"{dataset}: {label}",
                        figure_uri(fig),
                        f"Test {label} against the % of training data per model",
                        "One line per model; bands are 95 % CIs where one seed was tested. "
                        "The numbers are in the results table.",
                    )
                )
                drawn = True
    if not drawn:
        fractions = sorted({c.perc for c in exp.cells})
        sec.notes.append(
            f"Every model was tested at one training fraction ({', '.join(_pct(p) for p in fractions) or 'none'}): "
            "no low-data curve. Train with --low-data-regimen --perc-train P (or a grid over perc_train) to draw one."
        )
    return sec
