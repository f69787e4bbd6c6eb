"""Clinical evaluation inside a test run and across variants (docs/evaluation.md).

What ``medattn test`` adds to every run (calibration, operating points from the validation split,
subgroups when asked) and what ``medattn compare`` adds to its paired statistics (ΔECE and
Δsensitivity at the operating points of each attention variant against its plain backbone). The
numbers are the pure functions of :mod:`medattn.clinical`; this module finds their inputs (the
per-image metadata, the thresholds a test run logged) and logs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medattn import clinical, lazy, plots, tracking
from medattn.config import SUBGROUP_ATTRIBUTES
from medattn.data.base import DataIndex
from medattn.data.mimic_cxr import read_patients
from medattn.errors import ConfigError, DataError, MedattnError
from medattn.metrics import paired_bootstrap, roc_auc

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help

RELIABILITY_FIGURE = "figures/reliability.png"
SUBGROUPS_CSV = "subgroups.csv"
SUBGROUP_FOREST_FIGURE = "figures/subgroups_forest.png"
PAIRED_CLINICAL_CSV = "paired_clinical.csv"
#: Tag of a test run: where its operating-point thresholds came from (``val`` or ``val (in-sample)``).
TAG_OPERATING_POINTS = "medattn.operating_points"
#: Where each data set's subgroup attributes come from (for error messages and docs).
SOURCES = {
    "isic2020": "sex, age_approx and anatom_site_general_challenge of the ground-truth CSV",
    "mimic-cxr": "MIMIC-IV's patients.csv.gz (--patients-csv) for sex and age",
    "demo": "sex, age or site columns of labels.csv",
}


# =============================================================================================
# subgroups: per-image attributes
# =============================================================================================
def subgroup_values(
    index: DataIndex, frame: pd.DataFrame, names: tuple[str, ...], patients_csv: str | None = None
) -> dict[str, list[str]]:
    """``{attribute: group name per row of frame}`` for the asked attributes.

    ``sex`` and ``site`` are slugs of the value (:func:`medattn.clinical.slug`), ``age`` its band
    (:func:`medattn.clinical.age_group`); a missing value is the group ``missing``. MIMIC-CXR's sex
    and age come from MIMIC-IV's patients table joined on the patient (subject) id.

    Raises:
        ConfigError: ``patients_csv`` for a data set other than MIMIC-CXR.
        DataError: an attribute the data set does not carry per image.
    """
    if patients_csv and index.dataset != "mimic-cxr":
        raise ConfigError(
            f"--patients-csv applies to mimic-cxr only (MIMIC-IV's patients table), not {index.dataset}; drop it."
        )
    frame = frame.reset_index(drop=True)
    if patients_csv:
        patients = read_patients(patients_csv).set_index("patient_id")
        ids = frame["patient_id"].astype(str)
        for column in ("sex", "age"):
            frame[column] = ids.map(patients[column]).to_numpy()
    out: dict[str, list[str]] = {}
    for name in names:
        if name not in frame.columns:
            where = SOURCES.get(index.dataset, "a column of the data set's label table")
            hint = (
                "pass MIMIC-IV's patients.csv.gz with --patients-csv"
                if index.dataset == "mimic-cxr" and name in ("sex", "age")
                else f"medattn reads subgroups of {index.dataset} from {where}; drop {name!r} from --subgroups"
            )
            raise DataError(f"the {index.dataset} data in {index.data_dir} has no {name!r} per image; {hint}.")
        fn = clinical.age_group if name == "age" else clinical.slug
        out[name] = [fn(v) for v in frame[name]]
    return out


def table_subgroups(data_dir: str | Path, label_file: str = "labels.csv") -> tuple[str, ...]:
    """The subgroup attributes (sex, age, site) whose columns a data folder's label table carries
    (the demo set's ``labels.csv``: a generator that writes a ``site`` column makes the demo report it)."""
    path = Path(data_dir) / label_file
    try:
        columns = set(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError):
        return ()
    return tuple(a for a in SUBGROUP_ATTRIBUTES if a in columns)


# =============================================================================================
# the test run
# =============================================================================================
@dataclass
class ClinicalResult:
    """What :func:`evaluate_clinical` computed: metrics (no ``test_`` prefix), params, tags, subgroup table."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    subgroups: pd.DataFrame | None = None


def evaluate_clinical(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    split: str,
    val: tuple[np.ndarray, np.ndarray] | None,
    groups: Mapping[str, list[str]] | None = None,
    min_positives: int = clinical.MIN_SUBGROUP_POSITIVES,
    n_boot: int = 1000,
    seed: int = 0,
) -> ClinicalResult:
    """Calibration, operating points (binary tasks; thresholds from ``val``) and subgroups of one split.

    Args:
        y_true, scores: the evaluated split.
        split: its name; ``val`` makes the operating points in-sample (tagged so).
        val: ``(labels, probabilities)`` of the validation split the thresholds are chosen on.
        groups: ``{attribute: group per image}`` (:func:`subgroup_values`), or ``None``.
        min_positives: subgroups with fewer positives or negatives are reported as too small.
        n_boot: bootstrap resamples per CI.
        seed: bootstrap seed.
    """
    res = ClinicalResult()
    res.metrics.update(clinical.calibration_metrics(y_true, scores, n_boot=n_boot, seed=seed))
    if scores.shape[1] == 2 and val is not None:
        thresholds, op_metrics = clinical.operating_point_metrics(*val, y_true, scores, n_boot=n_boot, seed=seed)
        res.params.update({k: float(v) for k, v in thresholds.items()})
        res.params["operating_points_from"] = "val"
        res.metrics.update(op_metrics)
        res.tags[TAG_OPERATING_POINTS] = "val (in-sample)" if split == "val" else "val"
    if groups:
        res.subgroups = clinical.subgroup_table(
            y_true, scores, groups, min_positives=min_positives, n_boot=n_boot, seed=seed
        )
        res.metrics.update(clinical.subgroup_metrics(res.subgroups))
        res.params.update({"subgroups": ",".join(groups), "min_subgroup_positives": min_positives})
    return res


def thresholds_of(result: ClinicalResult) -> dict[str, float]:
    """``{label: threshold}`` of the logged operating points, for the ROC figure."""
    return {op.metric: float(result.params[op.param]) for op in clinical.OPERATING_POINTS if op.param in result.params}


def log_clinical(result: ClinicalResult, y_true: np.ndarray, scores: np.ndarray, title: str) -> None:
    """Log the params, tags, reliability diagram and (with subgroups) ``subgroups.csv`` and the forest plot
    to the active run (the metrics go with the run's other ``test_*`` metrics)."""
    tracking.log_params(result.params)
    tracking.set_tags(result.tags)
    tracking.log_figure(plots.reliability_figure(y_true, scores, title=title), RELIABILITY_FIGURE)
    table = result.subgroups
    if table is not None and len(table):
        tracking.log_text(table.to_csv(index=False), SUBGROUPS_CSV)
        rows = [
            {"label": f"{r['attribute']}: {r['group']}", "value": r["auc"], "ci_low": r["auc_ci_low"],
             "ci_high": r["auc_ci_high"], "status": r["status"], "n": r["n"], "n_pos": r["n_pos"]}
            for r in table.to_dict("records")
        ]  # fmt: skip
        tracking.log_figure(
            plots.subgroup_forest_figure(rows, overall=roc_auc(y_true, scores), title=f"AUC per subgroup — {title}"),
            SUBGROUP_FOREST_FIGURE,
        )


# =============================================================================================
# compare: paired differences of ECE and of the operating-point sensitivities
# =============================================================================================
#: Bootstrap resamples of the paired differences and their seed (those of compare's ΔAUC).
PAIRED_N_BOOT, PAIRED_SEED = 1000, 0
#: The paired metrics of :func:`paired_clinical_rows`.
PAIRED_METRICS = ("ece", "sens_at_spec90", "sens_at_spec95")
PAIRED_CLINICAL_COLUMNS = (
    "metric", "variant", "backbone", "perc_train", "n_images", "n_seeds_variant", "n_seeds_backbone",
    "delta", "ci_low", "ci_high", "p_value",
)  # fmt: skip


def _ece(y: np.ndarray, s: np.ndarray) -> float:
    return clinical.expected_calibration_error(y, s)


def _sensitivity_of_decisions(y: np.ndarray, s: np.ndarray) -> float:
    """Sensitivity of hard decisions encoded as one-hot rows (see :func:`_decisions`)."""
    pos = y == 1
    return float(s[pos, 1].mean()) if pos.any() else math.nan


def _decisions(probs: np.ndarray, threshold: float) -> np.ndarray:
    """One-hot ``(N, 2)`` rows of ``P(class 1) >= threshold``: each seed's decisions at its own threshold,
    so one metric (:func:`_sensitivity_of_decisions`) serves seeds whose thresholds differ."""
    hit = (probs[:, 1] >= threshold).astype(np.float64)
    return np.stack([1.0 - hit, hit], 1)


def _threshold(frame: pd.DataFrame, param: str) -> float:
    try:
        return float(frame.attrs.get("params", {}).get(param, "nan"))
    except ValueError:
        return math.nan


Probabilities = Callable[["pd.DataFrame"], np.ndarray]


def paired_clinical_rows(
    variant: str,
    backbone: str,
    perc: float,
    runs_v: Mapping[str, pd.DataFrame],
    runs_b: Mapping[str, pd.DataFrame],
    probabilities: Probabilities,
) -> list[dict[str, Any]]:
    """ΔECE and Δsensitivity at 90 % / 95 % specificity (variant − backbone) on the images both predicted.

    Each seed's sensitivity uses the threshold its own test run logged (chosen on the validation
    split); a side whose runs lack the thresholds (runs older than the operating points) gives NaN.
    ``runs_*`` are ``{seed: predictions frame}`` whose ``attrs["params"]`` hold the test run's params;
    ``probabilities(frame) -> (N, C)`` reads a predictions frame (compare's reader).
    """
    frames = [
        f.assign(id=f["id"].astype(str)).drop_duplicates("id").set_index("id")
        for f in (*runs_v.values(), *runs_b.values())
    ]
    originals = [*runs_v.values(), *runs_b.values()]
    ids = sorted(set.intersection(*(set(f.index) for f in frames)))
    y = frames[0].loc[ids, "label"].to_numpy(dtype=np.int64) if ids else np.zeros(0, dtype=np.int64)
    probs = [probabilities(f.loc[ids]) for f in frames]
    n_v = len(runs_v)
    resamples = np.random.default_rng(PAIRED_SEED).integers(0, max(len(ids), 1), size=(PAIRED_N_BOOT, len(ids)))
    rows = []
    for metric in PAIRED_METRICS:
        side = probs
        fn = _ece
        if metric != "ece":
            param = next(op.param for op in clinical.OPERATING_POINTS if op.metric == metric)
            thresholds = [_threshold(f, param) for f in originals]
            side = [_decisions(p, t) for p, t in zip(probs, thresholds, strict=True)]
            fn = _sensitivity_of_decisions
            usable = all(np.isfinite(t) or t == math.inf for t in thresholds)
        else:
            usable = True
        binary = all(p.shape[1] == 2 for p in probs)
        if ids and usable and (binary or metric == "ece"):
            r = paired_bootstrap(y, side[:n_v], side[n_v:], fn, resamples=resamples)
            delta, low, high, p = r.delta, r.ci_low, r.ci_high, r.p_value
        else:
            delta = low = high = p = math.nan
        rows.append(
            {"metric": metric, "variant": variant, "backbone": backbone, "perc_train": perc, "n_images": len(ids),
             "n_seeds_variant": n_v, "n_seeds_backbone": len(runs_b), "delta": delta, "ci_low": low,
             "ci_high": high, "p_value": p}
        )  # fmt: skip
    return rows


def paired_clinical_metrics(table: pd.DataFrame) -> dict[str, float]:
    """``delta_<metric>_<variant>_vs_<backbone>`` (``_p<fraction>`` below 100 %) with ``_ci_low``, ``_ci_high``, ``_p``."""
    out: dict[str, float] = {}
    for row in table.to_dict("records"):
        suffix = "" if float(row["perc_train"]) >= 1.0 else f"_p{float(row['perc_train']):g}"
        name = f"delta_{row['metric']}_{row['variant']}_vs_{row['backbone']}{suffix}"
        out.update({name: row["delta"], f"{name}_ci_low": row["ci_low"], f"{name}_ci_high": row["ci_high"]})
        out[f"{name}_p"] = row["p_value"]
    return out


def log_paired_clinical(
    cells: Mapping[tuple[str, float], Mapping[str, pd.DataFrame]],
    backbone_of: Callable[[str], str | None],
    probabilities: Probabilities,
) -> list[str]:
    """Log ``paired_clinical.csv`` and its metrics to the active compare run; the artifacts logged.

    Args:
        cells: ``{(model, perc_train): {seed: predictions frame}}`` as compare gathers them.
        backbone_of: the plain backbone of a model (``None``: not an attention variant).
        probabilities: reads ``(N, C)`` probabilities from a predictions frame.
    """
    rows = []
    for (model, perc), runs in sorted(cells.items()):
        backbone = backbone_of(model)
        if backbone is not None and (backbone, perc) in cells:
            rows += paired_clinical_rows(model, backbone, perc, runs, cells[(backbone, perc)], probabilities)
    if not rows:
        return []
    table = pd.DataFrame(rows, columns=list(PAIRED_CLINICAL_COLUMNS))
    tracking.log_metrics(tracking.finite(paired_clinical_metrics(table)))
    tracking.log_text(table.to_csv(index=False), PAIRED_CLINICAL_CSV)
    return [PAIRED_CLINICAL_CSV]


SUBGROUPS_BY_MODEL_CSV = "subgroups_by_model.csv"


def log_subgroups_by_model(runs: Mapping[str, Any], workdir: Path) -> list[str]:
    """Log ``subgroups_by_model.csv``: the ``subgroups.csv`` of each model's test run side by side.

    Args:
        runs: ``{model: test run}`` (compare's newest run of the largest training fraction per model);
            runs tested without ``--subgroups`` are left out.
        workdir: where the tables are downloaded (the caller removes it).

    Returns:
        The artifacts logged: ``[subgroups_by_model.csv]``, or none when no run has subgroups.
    """
    frames = []
    for model, run in runs.items():
        try:
            table = pd.read_csv(tracking.download(run.info.run_id, SUBGROUPS_CSV, workdir / run.info.run_id))
        except MedattnError:
            continue  # tested without --subgroups
        frames.append(table.assign(model=model, run_id=run.info.run_id))
    if not frames:
        return []
    table = pd.concat(frames, ignore_index=True)
    table = table[["model", *[c for c in table.columns if c != "model"]]]
    tracking.log_text(table.to_csv(index=False), SUBGROUPS_BY_MODEL_CSV)
    return [SUBGROUPS_BY_MODEL_CSV]


__all__ = [
    "RELIABILITY_FIGURE",
    "SUBGROUPS_CSV",
    "SUBGROUP_FOREST_FIGURE",
    "ClinicalResult",
    "evaluate_clinical",
    "log_clinical",
    "log_paired_clinical",
    "log_subgroups_by_model",
    "paired_clinical_rows",
    "subgroup_values",
    "thresholds_of",
]
