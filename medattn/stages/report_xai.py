"""The report's explanation sections: the scores of every method next to its sanity baselines with a
verdict, and a grid of saliency maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medattn import tracking
from medattn.errors import MedattnError
from medattn.explain.sanity import BASELINES, HIGHER_IS_BETTER
from medattn.stages import compare, compare_tables
from medattn.stages.report_model import GRID_DPI, Bullet, Figure, Num, RunRef, Section, Table, figure_uri
from medattn.stages.report_results import _CI
from medattn.stages.report_runs import Experiment, _model_order, _tag

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
            interp[dataset] = compare_tables.latest_per_model(runs)
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
