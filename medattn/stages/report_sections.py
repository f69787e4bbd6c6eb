"""The sections of ``medattn report``'s page, built from the runs of one experiment.

Each ``section_*`` function reads MLflow runs (metrics, params, tags, a few small artifacts through
:mod:`medattn.tracking`) and returns a :class:`Section` of sentences, :class:`Table` rows and
inlined :class:`Figure` s; a number is a :class:`Num` that carries the ids of the runs it comes
from. Clinical sections (calibration, operating points, subgroups), the oracle's columns and the
explanation scores are read by metric-name pattern, so they appear as soon as runs log them.
:mod:`medattn.stages.report` renders the sections with the Jinja2 template and writes the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.resources
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import medattn
from medattn import lazy, plots, tracking
from medattn.errors import MedattnError
from medattn.explain.evaluation import BASELINES, HIGHER_IS_BETTER
from medattn.models import MODELS
from medattn.stages import compare

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help

#: Package folder of the report template and the original project's published numbers.
RESOURCES = "resources"
PAPER_RESULTS = "paper_results.csv"
#: Kinds whose runs make up the cells of an experiment; other runs (compare, report, demo, search
#: parents) appear in the run index only.
CELL_KINDS = ("train", "test", "interpret")
#: Training params that name a cell or one invocation, not a setting to compare between cells.
IDENTITY_PARAMS = frozenset(
    {"model", "perc_train", "low_data_regimen", "seed", "run_name", "experiment", "tracking_uri", "resume", "ckpt"}
)
#: Resolution of inlined figures (the figures are drawn at 100 dpi; the page shows them smaller).
FIGURE_DPI = 80
GRID_DPI = 50

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


# =============================================================================================
# what the template renders: numbers with their runs, tables, figures, sections
# =============================================================================================
def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", "\N{MINUS SIGN}")


@dataclass(frozen=True)
class Num:
    """A number on the page and the runs it comes from.

    ``value`` is a run's metric, or the mean over ``runs`` (one per seed) with its ``sd``;
    ``ci_low`` / ``ci_high`` its 95 % CI where one run logged them. A number without runs is the
    original project's (``--paper``).
    """

    value: float
    runs: tuple[str, ...]
    metric: str
    sd: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    digits: int = 3  # decimals; 0: an integer with thousands separators; -2: two significant digits (p-values)
    signed: bool = False
    seeds: int | None = None  # the number of seeds behind a mean ± sd (default: one per run)
    kind: str = "num"

    @property
    def finite(self) -> bool:
        """Whether there is a value to show."""
        return math.isfinite(self.value)

    def _fmt(self, v: float) -> str:
        if self.digits == 0:
            return f"{v:,.0f}"
        if self.digits < 0:
            return f"{v:.{-self.digits}g}"
        return _signed(v, self.digits) if self.signed else f"{v:.{self.digits}f}"

    @property
    def text(self) -> str:
        """``0.812 [0.771, 0.853]`` (one run with a CI), ``0.812 ± 0.010 (3 seeds)`` (several runs), ``0.812``."""
        if not self.finite:
            return "not logged"
        text = self._fmt(self.value)
        seeds = self.seeds if self.seeds is not None else len(self.runs)
        if seeds > 1 and math.isfinite(self.sd):
            return f"{text} ± {self.sd:.{max(self.digits, 1)}f} ({seeds} seeds)"
        if math.isfinite(self.ci_low) and math.isfinite(self.ci_high):
            return f"{text} [{self._fmt(self.ci_low)}, {self._fmt(self.ci_high)}]"
        return text


@dataclass(frozen=True)
class RunRef:
    """A link to one run (its short id on the page, the full id in the link and the CSV)."""

    run_id: str
    kind: str = "run"


@dataclass
class Table:
    """A table of the page: cells are text, :class:`Num` or :class:`RunRef`; ``name`` is its HTML id
    and the stem of its CSV artifact (``tables/<name>.csv``)."""

    name: str
    caption: str
    columns: list[str]
    rows: list[list[Any]]
    layout: str = "rows"  # "pairs": a two-column (name, value) table drawn as a compact grid of pairs

    def frame(self) -> pd.DataFrame:
        """The table as numbers: a :class:`Num` column becomes its value, and ``_sd``, ``_ci_low``,
        ``_ci_high`` where any row has them, and ``_runs`` (space-separated run ids)."""
        data: dict[str, list[Any]] = {}
        for j, column in enumerate(self.columns):
            key = _snake(column)
            cells = [row[j] if j < len(row) else "" for row in self.rows]
            nums = [c for c in cells if isinstance(c, Num)]
            if not nums:
                data[key] = [_plain(c) for c in cells]
                continue
            data[key] = [c.value if isinstance(c, Num) else (c or math.nan) for c in cells]
            for part in ("sd", "ci_low", "ci_high"):
                if any(math.isfinite(getattr(n, part)) for n in nums):
                    data[f"{key}_{part}"] = [getattr(c, part) if isinstance(c, Num) else math.nan for c in cells]
            if any(n.runs for n in nums):
                data[f"{key}_runs"] = [" ".join(c.runs) if isinstance(c, Num) else "" for c in cells]
        return pd.DataFrame(data)


@dataclass(frozen=True)
class Figure:
    """An inlined PNG (``data:image/png;base64,...``) with its title and caption."""

    title: str
    uri: str
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Bullet:
    """A sentence and the runs its numbers come from."""

    text: str
    runs: tuple[str, ...] = ()


@dataclass
class Section:
    """One section of the page, rendered in the order of its parts."""

    id: str
    title: str
    intro: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    bullets: list[Bullet] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _plain(cell: Any) -> Any:
    """A non-number cell as CSV holds it: a run id, run ids separated by spaces, or the text."""
    if isinstance(cell, RunRef):
        return cell.run_id
    if isinstance(cell, tuple):
        return " ".join(_plain(c) for c in cell)
    return cell


def _snake(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower().replace("%", "pct").replace("Δ", "delta_")).strip("_")


def figure_uri(fig, dpi: int = FIGURE_DPI, *, photo: bool = False) -> str:
    """A matplotlib figure as a ``data:`` URI: PNG for plots, JPEG (quality 85) for ``photo`` figures
    such as saliency grids, whose noisy heat maps PNG compresses to megabytes."""
    buf = io.BytesIO()
    if photo:
        fig.savefig(buf, format="jpeg", dpi=dpi, pil_kwargs={"quality": 85, "optimize": True})
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# =============================================================================================
# the runs of an experiment
# =============================================================================================
def _tag(run: Any, key: str, default: str = "") -> str:
    return run.data.tags.get(key, default)


def _frac(run: Any) -> float:
    return compare._fraction(_tag(run, tracking.TAG_PERC_TRAIN) or None)


def _pct(perc: float) -> str:
    return f"{100 * perc:g} %" if math.isfinite(perc) else "?"


def _params(run: Any) -> dict[str, str]:
    """A run's params with medattn's normalised ``resolved.<key>`` values in place of ``mlflow run``'s spelling."""
    params = dict(run.data.params)
    for key, value in list(params.items()):
        if key.startswith(tracking.RESOLVED_PREFIX):
            params[key.removeprefix(tracking.RESOLVED_PREFIX)] = value
            del params[key]
    return params


def _model_order(model: str) -> tuple[int, str]:
    names = MODELS.names()
    return (names.index(model) if model in names else len(names), model)


@dataclass
class Cell:
    """The test runs of one (data set, model, training fraction), one per trained model (seed)."""

    dataset: str
    model: str
    perc: float
    runs: list[Any]  # test runs, newest first
    seeds: list[str]

    @property
    def run_ids(self) -> tuple[str, ...]:
        """The test runs' ids."""
        return tuple(r.info.run_id for r in self.runs)

    def num(self, metric: str, digits: int = 3, ci: tuple[str, str] | None = None) -> Num:
        """``metric`` of the cell: one run's value with its CI (metrics ``ci``, default
        ``<metric>_ci_low`` / ``_ci_high``), or the mean ± sd over its runs."""
        low, high = ci or (f"{metric}_ci_low", f"{metric}_ci_high")
        have = [r for r in self.runs if metric in r.data.metrics]
        if not have:
            return Num(math.nan, (), metric, digits=digits)
        ids = tuple(r.info.run_id for r in have)
        values = np.array([r.data.metrics[metric] for r in have], dtype=np.float64)
        if len(have) == 1:
            m = have[0].data.metrics
            return Num(
                float(values[0]),
                ids,
                metric,
                ci_low=float(m.get(low, math.nan)),
                ci_high=float(m.get(high, math.nan)),
                digits=digits,
            )
        return Num(float(values.mean()), ids, metric, sd=float(values.std(ddof=1)), digits=digits)

    def param_num(self, key: str, digits: int = 3) -> Num:
        """A numeric param of the test runs (e.g. a threshold), as :meth:`num` does for metrics."""
        values, ids = [], []
        for run in self.runs:
            try:
                values.append(float(run.data.params[key]))
                ids.append(run.info.run_id)
            except (KeyError, ValueError):
                continue
        if not values:
            return Num(math.nan, (), key, digits=digits)
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        return Num(float(np.mean(values)), tuple(ids), key, sd=sd, digits=digits)


@dataclass
class Experiment:
    """Every run of one experiment, sorted by kind; the cells its test runs make up."""

    id: str
    name: str
    runs: list[Any]  # newest first
    seeds: dict[str, str] = field(default_factory=dict)  # train run id → seed
    cells: list[Cell] = field(default_factory=list)

    def finished(self, kind: str) -> list[Any]:
        """The FINISHED runs of one kind, newest first."""
        return [r for r in self.runs if _tag(r, tracking.TAG_KIND) == kind and r.info.status == "FINISHED"]

    def test_runs(self) -> list[Any]:
        """Finished test runs of the test split."""
        return [r for r in self.finished("test") if _tag(r, tracking.TAG_SPLIT, "test") == "test"]

    @property
    def datasets(self) -> list[str]:
        """The data sets of the cell runs, in first-seen order."""
        kinds = set(CELL_KINDS)
        return list(
            dict.fromkeys(_tag(r, tracking.TAG_DATASET, "?") for r in self.runs if _tag(r, tracking.TAG_KIND) in kinds)
        )


def build_cells(test_runs: Sequence[Any], seeds: Mapping[str, str]) -> list[Cell]:
    """Group test runs into cells: per trained model (its ``medattn.source_run``) the newest test run.

    Args:
        test_runs: finished test runs of the test split, newest first.
        seeds: ``{train run id: seed}``; a test run whose source is unknown counts as its own seed.
    """
    cells: dict[tuple[str, str, float], Cell] = {}
    for run in test_runs:
        key = (_tag(run, tracking.TAG_DATASET, "?"), _tag(run, tracking.TAG_MODEL, "?"), _frac(run))
        source = _tag(run, tracking.TAG_SOURCE_RUN) or run.info.run_id
        cell = cells.setdefault(key, Cell(*key, runs=[], seeds=[]))
        seed = seeds.get(source) or source
        if seed in cell.seeds:
            continue  # an older test of the same seed's model
        cell.seeds.append(seed)
        cell.runs.append(run)
    return sorted(cells.values(), key=lambda c: (c.dataset, _model_order(c.model), c.perc))


def load_experiment(name: str, uri: str) -> Experiment:
    """Every run of experiment ``name``.

    Raises:
        MedattnError: the experiment does not exist, or holds no finished train, test or interpret run.
    """
    exp_id = tracking.active_experiment_id(name)
    if exp_id is None:
        raise MedattnError(
            f"experiment {name!r} does not exist in {tracking.redact_url(uri)!r}; check --experiment "
            "(the MLflow UI lists the experiments)."
        )
    runs = tracking.search_runs([exp_id], "")
    exp = Experiment(exp_id, name, runs)
    if not any(exp.finished(k) for k in CELL_KINDS):
        raise MedattnError(
            f"experiment {name!r} has no finished train, test or interpret run to report on; "
            "run medattn train and medattn test (or medattn demo) first."
        )
    exp.seeds = {r.info.run_id: _params(r).get("seed", "") for r in exp.finished("train")}
    exp.cells = build_cells(exp.test_runs(), exp.seeds)
    return exp


# =============================================================================================
# sections
# =============================================================================================
class _Artifacts:
    """Downloads of small artifacts into one folder the report owns (removed when it is done)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.n = 0

    def folder(self) -> Path:
        self.n += 1
        path = self.workdir / f"d{self.n}"
        path.mkdir()
        return path

    def csv(self, run_id: str, artifact: str) -> pd.DataFrame | None:
        """A CSV artifact, or ``None`` when the run has none."""
        try:
            return pd.read_csv(tracking.download(run_id, artifact, self.folder()), dtype={"id": str})
        except MedattnError:
            return None

    def text(self, run_id: str, artifact: str) -> str | None:
        """A text artifact, or ``None`` when the run has none."""
        try:
            return tracking.download(run_id, artifact, self.folder()).read_text(errors="replace")
        except MedattnError:
            return None


def _balance(labels: pd.Series) -> str:
    counts = labels.value_counts().sort_index()
    if set(counts.index) <= {0, 1}:
        return f"{len(labels):,} ({100 * counts.get(1, 0) / max(len(labels), 1):.0f} % positive)"
    return f"{len(labels):,} (" + ", ".join(f"class {k}: {v:,}" for k, v in counts.items()) + ")"


def _duplicates(run: Any) -> str:
    policy = _params(run).get("duplicates")
    if policy is None:
        return "not recorded (run made before near-duplicate detection)"
    m = run.data.metrics
    groups, images = int(m.get("duplicate_groups", 0)), int(m.get("duplicate_images", 0))
    text = f"{policy}: {groups:,} group{'s' if groups != 1 else ''} of near-duplicates ({images:,} images)"
    if policy == "drop":
        text += f", {int(m.get('duplicate_images_dropped', 0)):,} dropped"
    elif policy == "ignore" and m.get("duplicate_groups_crossing"):
        text += f", {int(m['duplicate_groups_crossing']):,} groups cross splits"
    return text


def _majority_rates(data_rows: Mapping[str, float]) -> list[str]:
    return [
        f"On the {ds} test split, always answering the majority class scores an accuracy of {rate:.3f}; a model "
        "that knows nothing scores AUC 0.5 and balanced accuracy 0.5."
        for ds, rate in data_rows.items()
    ]


def section_setup(exp: Experiment, files: _Artifacts) -> tuple[Section, dict[str, float]]:
    """What was run; also the majority-class accuracy of each data set's test split (the floor)."""
    sec = Section("setup", "What was run")
    train = exp.finished("train")
    sec.intro.append(
        f"Experiment {exp.name!r}: {len(train)} finished training run{'s' if len(train) != 1 else ''}, "
        f"{len(exp.test_runs())} test run{'s' if len(exp.test_runs()) != 1 else ''} on the test split, "
        f"{len(exp.finished('interpret'))} interpret run{'s' if len(exp.finished('interpret')) != 1 else ''}, "
        f"{len(exp.cells)} tested cell{'s' if len(exp.cells) != 1 else ''} (data set × model × training fraction)."
    )
    majority: dict[str, float] = {}
    rows = []
    seen: set[tuple[str, float]] = set()
    for run in train:
        key = (_tag(run, tracking.TAG_DATASET, "?"), _frac(run))
        if key in seen:
            continue
        seen.add(key)
        splits = {s: files.csv(run.info.run_id, f"{tracking.SPLITS_DIR}/{s}.csv") for s in ("train", "val", "test")}
        cells = [_balance(f["label"]) if f is not None and "label" in f else "not logged" for f in splits.values()]
        test = splits["test"]
        if test is not None and "label" in test and len(test) and key[0] not in majority:
            majority[key[0]] = float(test["label"].value_counts(normalize=True).max())
        rows.append([key[0], _pct(key[1]), *cells, _duplicates(run), RunRef(run.info.run_id)])
    if rows:
        sec.tables.append(
            Table(
                "datasets",
                "Data sets: images per split and class balance (from the split manifests the training runs logged)",
                ["Data set", "% train", "Train", "Validation", "Test", "Near-duplicate handling", "Run"],
                rows,
            )
        )
    else:
        sec.notes.append("No finished training run in this experiment logged its split manifests.")
    if train:
        sec.tables.append(_models_table(train, files))
    sec.tables.extend(_settings_tables(exp, train))
    seeds = sorted({s for s in exp.seeds.values() if s}, key=lambda s: (len(s), s))
    per_cell = [len(c.seeds) for c in exp.cells]
    if seeds:
        sec.intro.append(
            f"Seeds: {', '.join(seeds)}"
            + (
                f"; {min(per_cell)}–{max(per_cell)} per tested cell."
                if per_cell and min(per_cell) != max(per_cell)
                else f"; {per_cell[0]} per tested cell."
                if per_cell
                else "."
            )
        )
    sec.tables.append(_versions_table(exp))
    return sec, majority


def _attention_label(spec: Any) -> str:
    if spec is None:
        return "?"
    if not spec.attention:
        return "none"
    return spec.attention if spec.attention == "self-attention" else spec.attention.upper()


def _models_table(train: Sequence[Any], files: _Artifacts) -> Table:
    rows, seen = [], set()
    for run in sorted(train, key=lambda r: _model_order(_tag(r, tracking.TAG_MODEL, "?"))):
        model = _tag(run, tracking.TAG_MODEL, "?")
        if model in seen:
            continue
        seen.add(model)
        summary = files.text(run.info.run_id, tracking.MODEL_SUMMARY) or ""
        found = re.search(r"^parameters:\s*([\d,]+)", summary, flags=re.MULTILINE)
        count = (
            Num(float(found.group(1).replace(",", "")), (run.info.run_id,), "parameters", digits=0)
            if found
            else "not logged"
        )
        spec = MODELS.get(model) if model in MODELS.names() else None
        p = _params(run)
        rows.append(
            [
                model,
                spec.architecture if spec else "?",
                _attention_label(spec),
                count,
                p.get("head", "?"),
                p.get("pretrained", "?"),
                p.get("init", "?"),
                RunRef(run.info.run_id),
            ]
        )
    return Table(
        "models",
        "Models (parameter counts as trained, from each model's summary)",
        ["Model", "Architecture", "Attention", "Parameters", "Head", "Pretrained", "Init", "Run"],
        rows,
    )


def _settings_tables(exp: Experiment, train: Sequence[Any]) -> list[Table]:
    """The settings that differ between the training runs (one row per run) and those they share."""
    if not train:
        return []
    params = {r.info.run_id: _params(r) for r in train}
    keys = sorted({k for p in params.values() for k in p} - IDENTITY_PARAMS)
    differ = [k for k in keys if len({p.get(k, "(not set)") for p in params.values()}) > 1]
    same = [k for k in keys if k not in differ]
    tables = []
    if differ:
        rows = [
            [
                _tag(r, tracking.TAG_DATASET, "?"),
                _tag(r, tracking.TAG_MODEL, "?"),
                _pct(_frac(r)),
                params[r.info.run_id].get("seed", "?"),
                *(params[r.info.run_id].get(k, "(not set)") for k in differ),
                RunRef(r.info.run_id),
            ]
            for r in sorted(train, key=lambda r: (_model_order(_tag(r, tracking.TAG_MODEL, "?")), _frac(r)))
        ]
        tables.append(
            Table(
                "settings_differ",
                "Settings that differ between the training runs",
                ["Data set", "Model", "% train", "Seed", *differ, "Run"],
                rows,
            )
        )
    first = params[train[0].info.run_id]
    tables.append(
        Table(
            "settings_shared",
            "Settings every training run shares" + ("" if differ else " (no setting differs between the cells)"),
            ["Setting", "Value"],
            [[k, first.get(k, "")] for k in same],
            layout="pairs",
        )
    )
    return tables


#: The version and commit tags of a run, with their labels on the page.
VERSION_TAGS = (
    ("medattn", tracking.TAG_MEDATTN_VERSION),
    ("torch", tracking.TAG_TORCH_VERSION),
    ("mlflow", tracking.TAG_MLFLOW_VERSION),
    ("medattn git commit", tracking.TAG_GIT_COMMIT),
    ("entry point git commit (MLflow)", tracking.TAG_MLFLOW_GIT_COMMIT),
)


def _versions_table(exp: Experiment) -> Table:
    cell_runs = [r for r in exp.runs if _tag(r, tracking.TAG_KIND) in CELL_KINDS]
    here = tracking.environment_tags()
    rows = []
    for label, tag in VERSION_TAGS:
        seen: dict[str, int] = {}
        for run in cell_runs:
            value = _tag(run, tag)
            if value:
                seen[value] = seen.get(value, 0) + 1
        missing = len(cell_runs) - sum(seen.values())
        text = "; ".join(f"{v} ({n} run{'s' if n != 1 else ''})" for v, n in seen.items()) or "not recorded"
        if seen and missing:
            text += f"; not recorded in {missing} run{'s' if missing != 1 else ''}"
        rows.append([label, text, here.get(tag, "not known")])
    return Table(
        "versions",
        "Versions and commits the runs were made with (and this report)",
        ["Software", "Runs made with", "Report built with"],
        rows,
    )


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
    """:func:`medattn.stages.compare.paired_table` of one data set's cells (their ``predictions.csv``)."""
    pairs = {k for k in cells if (compare.plain_backbone(k[0]), k[1]) in cells}
    needed = pairs | {(compare.plain_backbone(m), p) for m, p in pairs}
    frames = {
        k: {
            s: files.csv(r.info.run_id, tracking.PREDICTIONS)
            for s, r in zip(cells[k].seeds, cells[k].runs, strict=True)
        }
        for k in needed
    }
    frames = {k: {s: f for s, f in v.items() if f is not None} for k, v in frames.items()}
    return compare.paired_table({k: v for k, v in frames.items() if v})


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
        f"95 % CI ({compare.PAIRED_N_BOOT} resamples) and two-sided p-value; with several seeds the probabilities "
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
            sec.bullets.append(Bullet(compare.verdict(row), ids))
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


# ---- explanations ---------------------------------------------------------------------------
#: Score columns in reading order; others (added by later versions) follow alphabetically.
SCORE_ORDER = (
    "pointing_game",
    "mask_mass",
    "deletion_auc",
    "insertion_auc",
    "morf_auc",
    "lerf_auc",
    "randomized_spearman",
)
#: Scores where a lower value is better.
LOWER_IS_BETTER = frozenset({*(s for s, higher in HIGHER_IS_BETTER.items() if not higher), "morf_auc"})


def parse_xai_metrics(metrics: Mapping[str, float], methods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """An interpret run's ``xai_*`` metrics by source (a method, ``oracle``, ``baseline_<b>``).

    Sources are recognised from the run's methods (``-`` written ``_``), the ground-truth ``oracle``
    and ``baseline_<b>`` (the known baselines, ``randomized_<method>``, else the first word), so
    scores added later (ROAD's ``morf_auc`` / ``lerf_auc``, ...) are read without knowing them.

    Returns:
        ``{source: {"scores": {score: (value, ci_low, ci_high)}, "passes": {score: 0/1},
        "passes_sanity": 0/1 or None}}``.
    """
    methods = [m.replace("-", "_") for m in methods]
    baselines = sorted({*BASELINES, *(f"randomized_{m}" for m in methods)}, key=len, reverse=True)
    known = sorted({*methods, "oracle", "random"}, key=len, reverse=True)
    out: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if not key.startswith("xai_") or key.endswith(_CI):
            continue
        rest = key[4:]
        source = None
        if rest.startswith("baseline_"):
            tail = rest.removeprefix("baseline_")
            name = next((b for b in baselines if tail.startswith(f"{b}_")), tail.split("_")[0])
            source = f"baseline_{name}"
        else:
            source = next((s for s in known if rest.startswith(f"{s}_")), None)
        if source is None or not rest.startswith(f"{source}_"):
            continue  # xai_n_images and other counts
        score = rest.removeprefix(f"{source}_")
        entry = out.setdefault(source, {"scores": {}, "passes": {}, "passes_sanity": None})
        if score == "passes_sanity":
            entry["passes_sanity"] = float(value)
        elif score.endswith("_passes"):
            entry["passes"][score.removesuffix("_passes")] = float(value)
        else:
            entry["scores"][score] = (
                float(value),
                float(metrics.get(f"{key}_ci_low", math.nan)),
                float(metrics.get(f"{key}_ci_high", math.nan)),
            )
    return out


def _source_kind(source: str) -> str:
    if source.startswith("baseline_") or source == "random":
        return "sanity baseline"
    return "ground truth" if source == "oracle" else "method"


def _verdict_text(entry: Mapping[str, Any], source: str) -> str:
    sanity = entry.get("passes_sanity")
    if sanity is None:
        return "—" if _source_kind(source) == "sanity baseline" else "no verdict logged"
    if sanity == 1.0:
        return "passes"
    failed = [s.replace("_", " ") for s, ok in entry["passes"].items() if ok == 0.0]
    return f"fails ({', '.join(failed) or 'no score'})"


def _method_verdict(source: str, model: str, dataset: str, entry: Mapping[str, Any]) -> str:
    """``deeplift on resnet50 (demo) passes the sanity rule on every score (...)`` or ``... fails it on ...``."""
    scored = [s.replace("_", " ") for s in entry["passes"]] or [s.replace("_", " ") for s in entry["scores"]]
    if entry["passes_sanity"] == 1.0:
        return f"{source} on {model} ({dataset}) passes the sanity rule on every score ({', '.join(scored)})."
    failed = [s.replace("_", " ") for s, ok in entry["passes"].items() if ok == 0.0]
    return (
        f"{source} on {model} ({dataset}) fails the sanity rule on {', '.join(failed) or 'every score'}: "
        "its maps are not shown to beat a map that ignores the model there."
    )


def section_xai(exp: Experiment) -> tuple[Section, dict[str, dict[str, Any]]]:
    """Explanation scores per model × method next to the sanity baselines, with the verdicts."""
    sec = Section("explanations", "Explanation scores")
    sec.intro.append(
        "Scores of each method's maps next to sanity baselines computed on the same images: a uniform random map, "
        "the input's grey level, a centre prior, Sobel edges and the same method on a randomised model (any "
        "map that ignores the model scores like these). A method passes the sanity rule when, on every score, its "
        "95 % CI lies beyond every baseline's. Where the data set has lesion masks, the mask itself is scored as "
        "the oracle map: a score the oracle cannot pass is broken. "
        f"Lower is better for {', '.join(sorted(s.replace('_', ' ') for s in LOWER_IS_BETTER))}; higher for the rest."
    )
    interp: dict[str, dict[str, Any]] = {}
    for dataset in exp.datasets:
        runs = [r for r in exp.finished("interpret") if _tag(r, tracking.TAG_DATASET, "?") == dataset]
        if runs:
            interp[dataset] = compare.latest_per_model(runs)
    if not interp:
        sec.notes.append("No finished interpret run: the explanations are untested (medattn interpret scores them).")
        return sec, interp
    parsed = {
        (ds, model): parse_xai_metrics(run.data.metrics, run.data.params.get("methods", "").split(","))
        for ds, models in interp.items()
        for model, run in models.items()
    }
    scores = sorted(
        {s for p in parsed.values() for e in p.values() for s in e["scores"]},
        key=lambda s: (SCORE_ORDER.index(s) if s in SCORE_ORDER else len(SCORE_ORDER), s),
    )
    rows = []
    order = {"method": 0, "ground truth": 1, "sanity baseline": 2}
    for (ds, model), sources in sorted(parsed.items(), key=lambda kv: (kv[0][0], _model_order(kv[0][1]))):
        run_id = interp[ds][model].info.run_id
        for source in sorted(sources, key=lambda s: (order[_source_kind(s)], s)):
            entry = sources[source]
            nums = []
            for score in scores:
                v = entry["scores"].get(score)
                nums.append(Num(v[0], (run_id,), f"xai_{source}_{score}", ci_low=v[1], ci_high=v[2]) if v else "—")
            rows.append([ds, model, source, _source_kind(source), *nums, _verdict_text(entry, source), RunRef(run_id)])
            kind = _source_kind(source)
            if kind == "method" and entry["passes_sanity"] is not None:
                sec.bullets.append(Bullet(_method_verdict(source, model, ds, entry), (run_id,)))
            if kind == "ground truth" and entry["passes_sanity"] is not None:
                ok = entry["passes_sanity"] == 1.0
                sec.bullets.append(
                    Bullet(
                        f"The ground-truth mask scored as a map on {model} ({ds}) "
                        + (
                            "passes the sanity rule: the scores can tell a right map from a wrong one."
                            if ok
                            else "fails the sanity rule: a score the oracle cannot pass is broken; do not read it."
                        ),
                        (run_id,),
                    )
                )
    sec.tables.append(
        Table(
            "xai_scores",
            "Explanation scores per model and method, with the sanity baselines (mean over images [95 % CI])",
            [
                "Data set",
                "Model",
                "Source",
                "Kind",
                *(s.replace("_", " ") + (" ↓" if s in LOWER_IS_BETTER else "") for s in scores),
                "Verdict",
                "Run",
            ],
            rows,
        )
    )
    return sec, interp


def section_saliency(interp: Mapping[str, Mapping[str, Any]], workdir: Path, max_images: int) -> Section:
    """A grid of the same test images across models × methods (one per data set)."""
    sec = Section("saliency", "Saliency maps: the same images across models and methods")
    sec.intro.append(
        "Blended heat maps (bwr: red raises the explained class's score, blue lowers it) of the first test images "
        "every model explained, one column per model and method."
    )
    for dataset, models in interp.items():
        try:
            indexes = [tracking.SaliencyReader(r.info.run_id, workdir).index()["id"] for r in models.values()]
            first, explained = indexes[0], [set(ix) for ix in indexes]
            common = [i for i in dict.fromkeys(first) if all(i in ix for ix in explained)][:max_images]
            fig, drawn = compare._grid_across_models(models, common, workdir, 0.5, f"{dataset}: models × methods")
        except MedattnError:
            fig, drawn = None, []
        if fig is None:
            sec.notes.append(f"{dataset}: no test image was explained by every model, or the maps were not logged.")
            continue
        runs = ", ".join(r.info.run_id[:8] for r in models.values())
        sec.figures.append(
            Figure(
                f"{dataset}: {len(drawn)} images",
                figure_uri(fig, GRID_DPI, photo=True),
                f"Saliency maps of {len(drawn)} test images across models and methods",
                f"Images {', '.join(drawn)}; interpret runs {runs}.",
            )
        )
    if not interp:
        sec.notes.append("No finished interpret run: no saliency maps to show.")
    return sec


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
        backbone = compare.plain_backbone(model)
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
