"""The report's setup section: the data (class balance, duplicates, majority rates), the models, the
training settings that differ between cells, and the software versions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from medattn import lazy, tracking
from medattn.models import MODELS
from medattn.stages.report_model import Num, RunRef, Section, Table
from medattn.stages.report_runs import CELL_KINDS, Experiment, _Artifacts, _frac, _model_order, _params, _pct, _tag

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help

#: Training params that name a cell or one invocation, not a setting to compare between cells.
IDENTITY_PARAMS = frozenset(
    {"model", "perc_train", "low_data_regimen", "seed", "run_name", "experiment", "tracking_uri", "resume", "ckpt"}
)


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


def architecture_label(spec: Any, params: Mapping[str, str]) -> str:
    """The architecture as trained: a ViT's patch side and depth from the run's params where they
    differ from the registry's (e.g. the demo's ``DeiT-Tiny/8, 4 blocks`` instead of ``DeiT-Tiny/16``)."""
    if spec is None:
        return "?"
    label = spec.architecture
    patch, depth = params.get("patch_size"), params.get("nr_layers")
    if spec.backbone == "deit_tiny" and patch and label.endswith("/16"):
        label = f"{label[: -len('16')]}{patch}"
        if depth and depth != "12":
            label += f", {depth} blocks"
    return label


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
                architecture_label(spec, p),
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
