"""The report's results sections: the test metrics of every cell with their confidence intervals, and
the clinical evaluation (calibration, operating points, subgroups) read by metric-name pattern.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from medattn.stages.report_model import Num, RunRef, Section, Table
from medattn.stages.report_runs import Cell, Experiment, _pct
from medattn.stages.report_setup import _majority_rates


def section_results(exp: Experiment, majority: Mapping[str, float]) -> tuple[Section, list[Table]]:
    """The results table; also the calibration, operating-point and subgroup tables where logged."""
    sec = Section("results", "Results on the test split")
    sec.intro.append(
        "Each number is the test run's value with its 95 % bootstrap CI where one seed was tested, or the mean ± "
        "sd over seeds where a cell has several (each seed's own CI is in its run). Sensitivity and specificity "
        "are at the 0.5 threshold of the predicted probability."
    )
    sec.intro.extend(_majority_rates(majority))
    if not exp.cells:
        sec.notes.append("No finished test run on the test split: nothing was tested (see the untested cells below).")
        return sec, []
    metrics = ["test_auc", "test_balanced_accuracy", "test_sensitivity", "test_specificity", "test_accuracy"]
    headers = ["Test AUC", "Balanced accuracy", "Sensitivity", "Specificity", "Accuracy"]
    all_metrics = {k for c in exp.cells for r in c.runs for k in r.data.metrics}
    if "test_oracle_auc" in all_metrics:
        metrics += ["test_oracle_auc", "test_oracle_gap"]
        headers += ["Oracle AUC (ceiling)", "Gap to the oracle"]
        sec.intro.append(
            "The oracle is the data generator's own probability of the label: its AUC is the best any model can "
            "reach on these images, and the gap is how far each model stays below it."
        )
    rows = [
        [
            c.dataset,
            c.model,
            _pct(c.perc),
            str(len(c.runs)),
            *(c.num(m) for m in metrics),
            c.num("test_n_images", digits=0),
            tuple(RunRef(i) for i in c.run_ids),
        ]
        for c in exp.cells
    ]
    sec.tables.append(
        Table(
            "results",
            "Test results per cell",
            ["Data set", "Model", "% train", "Seeds", *headers, "Images", "Run"],
            rows,
        )
    )
    return sec, _clinical_tables(exp.cells, all_metrics)


_OPERATING = re.compile(r"^test_(sens_at_spec|spec_at_sens)(\d+)$")
_SUBGROUP = re.compile(r"^test_(.+?)__(.+)$")
_CI = ("_ci_low", "_ci_high")


def _cell_head(c: Cell) -> list[Any]:
    return [c.dataset, c.model, _pct(c.perc)]


def _subgroup_num(cell: Cell, stat: str, group: str, all_metrics: set[str]) -> Num:
    """``test_<stat>__<group>`` of a cell with its CI in whichever of the two spellings the runs used."""
    name = f"test_{stat}__{group}"
    ci = (f"test_{stat}_ci_low__{group}", f"test_{stat}_ci_high__{group}")
    if ci[0] not in all_metrics:
        ci = (f"{name}_ci_low", f"{name}_ci_high")
    return cell.num(name, digits=0 if stat in ("n", "n_pos") else 3, ci=ci)


def _clinical_tables(cells: Sequence[Cell], all_metrics: set[str]) -> list[Table]:
    """Calibration, operating points and subgroups, each only when some test run logged it."""
    tables = []
    calibration = [m for m in ("test_ece", "test_brier") if m in all_metrics]
    if calibration:
        tables.append(
            Table(
                "calibration",
                "Calibration (expected calibration error and Brier score: lower is better)",
                [
                    "Data set",
                    "Model",
                    "% train",
                    *(m.removeprefix("test_").upper() if m == "test_ece" else "Brier" for m in calibration),
                ],
                [[*_cell_head(c), *(c.num(m) for m in calibration)] for c in cells],
            )
        )
    operating = sorted((m for m in all_metrics if _OPERATING.match(m)), key=lambda m: (_OPERATING.match(m)[1], m))
    if operating:
        thresholds = sorted({k for c in cells for r in c.runs for k in r.data.params if k.startswith("threshold_")})
        names = {"sens_at_spec": "Sensitivity at specificity {}", "spec_at_sens": "Specificity at sensitivity {}"}
        headers = [names[_OPERATING.match(m)[1]].format(f"0.{_OPERATING.match(m)[2]}") for m in operating]
        tables.append(
            Table(
                "operating_points",
                "Operating points (thresholds chosen on the validation split where the runs say so)",
                [
                    "Data set",
                    "Model",
                    "% train",
                    *headers,
                    *(f"Threshold {t.removeprefix('threshold_')}" for t in thresholds),
                ],
                [
                    [*_cell_head(c), *(c.num(m) for m in operating), *(c.param_num(t) for t in thresholds)]
                    for c in cells
                ],
            )
        )
    groups: dict[str, list[str]] = {}
    for m in sorted(all_metrics):
        found = _SUBGROUP.match(m)
        # a subgroup's CI is test_<stat>_ci_low__<group> (test_auc_ci_low__sex_female), or <...>__<group>_ci_low
        if found and not found[1].endswith(_CI) and not m.endswith(_CI):
            groups.setdefault(found[2], []).append(found[1])
    if groups:
        stats = sorted({s for v in groups.values() for s in v}, key=lambda s: (s != "n", s != "auc", s))
        rows = []
        for c in cells:
            for group in groups:
                nums = [_subgroup_num(c, s, group, all_metrics) for s in stats]
                if any(n.finite for n in nums):
                    rows.append([*_cell_head(c), group, *nums])
        tables.append(
            Table(
                "subgroups",
                "Subgroups (metrics of the test images of each attribute value)",
                [
                    "Data set",
                    "Model",
                    "% train",
                    "Subgroup",
                    *({"n": "Images", "n_pos": "Positives"}.get(s, s.replace("_", " ")) for s in stats),
                ],
                rows,
            )
        )
    return tables


def section_clinical(tables: list[Table]) -> Section | None:
    """The calibration, operating-point and subgroup tables (``None`` when no test run logged any)."""
    if not tables:
        return None
    return Section(
        "clinical",
        "Calibration, operating points and subgroups",
        intro=["Values as in the results table: one seed's value [95 % CI], or the mean ± sd over seeds."],
        tables=tables,
    )
