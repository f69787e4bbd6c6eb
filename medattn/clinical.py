"""Clinical evaluation metrics as pure functions: calibration, operating points, subgroups, temperature.

What a medical-AI reviewer asks of a test set beyond the AUC (the CLAIM 2024 checklist and
TRIPOD+AI, BMJ 2024): whether the predicted probabilities can be trusted (expected calibration
error, Brier score), how the model behaves at a clinically chosen operating point (sensitivity at
a fixed specificity and vice versa, the threshold chosen on a *different* split than the one it is
applied to), and whether performance holds across patient subgroups. Temperature scaling is the
post-hoc recalibration of Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.

Conventions are those of :mod:`medattn.metrics`: ``y_true`` integer labels ``(N,)``, ``scores``
class probabilities ``(N, C)``; an undefined value is ``NaN``, never an exception. Operating
points exist for binary tasks only (the score is ``scores[:, 1]``, the probability of class 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medattn import lazy
from medattn.metrics import _check, bootstrap_ci, roc_auc, softmax

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help

__all__ = [
    "AGE_BINS",
    "ECE_BINS",
    "MIN_SUBGROUP_POSITIVES",
    "OPERATING_POINTS",
    "OperatingPoint",
    "age_group",
    "apply_temperature",
    "brier_score",
    "calibration_metrics",
    "choose_threshold",
    "equal_mass_bins",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "operating_point_metrics",
    "rates_at",
    "slug",
    "subgroup_metrics",
    "subgroup_table",
]

#: Bins of the expected calibration error and of the reliability diagram (equal mass).
ECE_BINS = 15
#: A subgroup with fewer positives (or fewer negatives) than this is reported as too small.
MIN_SUBGROUP_POSITIVES = 10
#: Age bins ``[low, high)`` in years and their names: 20-year bands, the last one open.
AGE_BINS: tuple[tuple[float, float, str], ...] = (
    (0.0, 40.0, "0_39"),
    (40.0, 60.0, "40_59"),
    (60.0, 80.0, "60_79"),
    (80.0, math.inf, "80_plus"),
)


# =============================================================================================
# calibration
# =============================================================================================
def _confidence(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What calibration compares: binary ``(P(class 1), y == 1)``; multiclass ``(max prob, correct)``."""
    if s.shape[1] == 2:
        return s[:, 1], (y == 1).astype(np.float64)
    return s.max(1), (s.argmax(1) == y).astype(np.float64)


def equal_mass_bins(p: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Bin index per probability, the bins' edges at the quantiles of ``p`` (equal mass).

    The same rule as scikit-learn's ``calibration_curve(strategy="quantile")`` (edges
    ``np.percentile(p, linspace(0, 100, n_bins + 1))``, bin ``b`` holding ``edge_b < p <= edge_b+1``), so
    the ECE's bins are the reliability diagram's. Tied probabilities share a bin, so with many
    ties some bins are empty and others hold more than ``N / n_bins`` values.

    Args:
        p: probabilities, shape ``(N,)``.
        n_bins: number of bins.

    Returns:
        Integer array ``(N,)`` of bin indices in ``[0, n_bins)``.
    """
    edges = np.percentile(p, np.linspace(0.0, 100.0, n_bins + 1))
    return np.searchsorted(edges[1:-1], p)


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``n_bins`` equal-mass bins.

    ``ECE = Σ_b (n_b / N) · |mean(target in b) − mean(p in b)|``. Binary tasks compare the
    probability of class 1 with the observed frequency of class 1 (what the reliability diagram
    draws); multiclass tasks compare the top-class probability with the accuracy (Guo et al. 2017).

    Hand-written because scikit-learn has no ECE: its ``calibration_curve`` returns the per-bin
    means but drops empty bins and not the bin counts, which the weighting needs; torchmetrics'
    ``calibration_error`` has equal-width bins only. Equal-mass bins keep every bin populated
    when the scores crowd near 0 (typical of a rare positive class), where equal-width bins leave
    most of the estimate to one or two bins.

    Args:
        y_true: Integer labels, shape ``(N,)``.
        scores: Class probabilities, shape ``(N, C)``.
        n_bins: Number of equal-mass bins.

    Returns:
        The ECE in ``[0, 1]``.
    """
    y, s = _check(y_true, scores)
    p, target = _confidence(y, s)
    bins = equal_mass_bins(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    used = counts > 0
    gap = np.abs(
        np.bincount(bins, weights=target, minlength=n_bins)[used] - np.bincount(bins, weights=p, minlength=n_bins)[used]
    )
    # Σ_b (n_b / N) |Σ target / n_b − Σ p / n_b| = Σ_b |Σ target − Σ p| / N
    return float(gap.sum() / y.shape[0])


def brier_score(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Brier score (scikit-learn's ``brier_score_loss``): binary on ``P(class 1)``, multiclass on all columns."""
    # scikit-learn loads when a score is computed, not with this module (see choose_threshold)
    from sklearn.metrics import brier_score_loss

    y, s = _check(y_true, scores)
    if s.shape[1] == 2:
        return float(brier_score_loss(y, s[:, 1], pos_label=1))
    return float(brier_score_loss(y, s, labels=np.arange(s.shape[1])))


def _brier_fast(y_true: np.ndarray, scores: np.ndarray) -> float:
    """:func:`brier_score` in numpy, for the bootstrap (scikit-learn's validation dominates small resamples)."""
    y, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if s.shape[1] == 2:
        return float(np.mean((s[:, 1] - (y == 1)) ** 2))
    onehot = np.eye(s.shape[1])[y]
    return float(np.mean(np.sum((s - onehot) ** 2, axis=1)))


def calibration_metrics(
    y_true: np.ndarray, scores: np.ndarray, *, n_boot: int = 1000, seed: int = 0, n_bins: int = ECE_BINS
) -> dict[str, float]:
    """``ece`` and ``brier`` with percentile bootstrap 95 % CIs (``*_ci_low``, ``*_ci_high``).

    With ``n_boot == 0`` the CI entries are left out.
    """
    out = {"ece": expected_calibration_error(y_true, scores, n_bins), "brier": brier_score(y_true, scores)}
    if n_boot > 0:
        for name, fn in (("ece", lambda y, s: expected_calibration_error(y, s, n_bins)), ("brier", _brier_fast)):
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_ci(y_true, scores, fn, n_boot=n_boot, seed=seed)
    return out


# =============================================================================================
# operating points
# =============================================================================================
@dataclass(frozen=True)
class OperatingPoint:
    """A clinically fixed point on the ROC curve.

    Attributes:
        metric: what is reported at it, e.g. ``sens_at_spec90``.
        param: the name of its threshold param, e.g. ``threshold_spec90``.
        fixed: the rate fixed on the choosing split, ``specificity`` or ``sensitivity``.
        target: the value that rate must reach, e.g. 0.90.
    """

    metric: str
    param: str
    fixed: str
    target: float

    @property
    def reported(self) -> str:
        """The rate reported at the threshold: the one not fixed."""
        return "sensitivity" if self.fixed == "specificity" else "specificity"


OPERATING_POINTS = (
    OperatingPoint("sens_at_spec90", "threshold_spec90", "specificity", 0.90),
    OperatingPoint("sens_at_spec95", "threshold_spec95", "specificity", 0.95),
    OperatingPoint("spec_at_sens90", "threshold_sens90", "sensitivity", 0.90),
    OperatingPoint("spec_at_sens95", "threshold_sens95", "sensitivity", 0.95),
)


def _positive_score(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = _check(y_true, scores)
    if s.shape[1] != 2:
        raise ValueError(f"operating points need a binary task (scores with 2 columns), got {s.shape[1]} columns.")
    return y, s[:, 1]


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, fixed: str, target: float) -> float:
    """The threshold (predict class 1 when ``P(class 1) >= t``) of an operating point, chosen on these data.

    ``fixed == "specificity"``: among the thresholds whose specificity is at least ``target``, the
    one of the highest sensitivity (the lowest such threshold). ``fixed == "sensitivity"``: among
    those whose sensitivity is at least ``target``, the one of the highest specificity (the highest
    such threshold). Candidates are scikit-learn's ``roc_curve`` thresholds (every distinct score,
    and ``inf``: nothing positive).

    Returns:
        The threshold; ``NaN`` when the data hold one class only.
    """
    y, p = _positive_score(y_true, scores)
    if np.all(y == y[0]):
        return math.nan
    # scikit-learn loads when a threshold is chosen, not with this module: the stage modules import it
    # and the command line imports them for their configs, so ``--help`` stays light
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    if fixed == "specificity":
        ok = (1.0 - fpr) >= target - 1e-12
        best = np.flatnonzero(ok & (tpr == tpr[ok].max()))
        return float(thresholds[best].max())  # of equal sensitivity, the most specific
    if fixed == "sensitivity":
        ok = tpr >= target - 1e-12
        best = np.flatnonzero(ok & (fpr == fpr[ok].min()))
        return float(thresholds[best].max())
    raise ValueError(f"fixed must be 'specificity' or 'sensitivity', got {fixed!r}.")


def rates_at(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(sensitivity, specificity)`` of predicting class 1 when ``P(class 1) >= threshold`` (NaN for an absent class)."""
    y, p = _positive_score(y_true, scores)
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else math.nan
    spec = float((~pred[neg]).mean()) if neg.any() else math.nan
    return sens, spec


def _rate_metric(threshold: float, which: str):
    index = 0 if which == "sensitivity" else 1

    def metric(y: np.ndarray, s: np.ndarray) -> float:
        p = s[:, 1]
        mask = (y == 1) if index == 0 else (y == 0)
        if not mask.any():
            return math.nan
        hit = p[mask] >= threshold
        return float(hit.mean() if index == 0 else 1.0 - hit.mean())

    return metric


def operating_point_metrics(
    choose_y: np.ndarray,
    choose_scores: np.ndarray,
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """Thresholds chosen on one split (``choose_*``, the validation split) and applied to another.

    Args:
        choose_y, choose_scores: labels and probabilities of the split the thresholds come from.
        y_true, scores: the split they are applied to (the test split).
        n_boot: bootstrap resamples of the applied split for the CIs (0: none); the threshold is
            held fixed, so the interval covers the sampling of the applied split only.
        seed: bootstrap seed.

    Returns:
        ``(thresholds, metrics)``: ``{threshold_spec90: t, ...}`` and ``{sens_at_spec90: v,
        sens_at_spec90_ci_low: ..., ...}`` for :data:`OPERATING_POINTS`.
    """
    thresholds: dict[str, float] = {}
    metrics: dict[str, float] = {}
    for op in OPERATING_POINTS:
        t = choose_threshold(choose_y, choose_scores, op.fixed, op.target)
        thresholds[op.param] = t
        metric = _rate_metric(t, op.reported)
        metrics[op.metric] = math.nan if math.isnan(t) else metric(*_check(y_true, scores))
        if n_boot > 0:
            low, high = (
                (math.nan, math.nan)
                if math.isnan(t)
                else bootstrap_ci(y_true, scores, metric, n_boot=n_boot, seed=seed)
            )
            metrics[f"{op.metric}_ci_low"], metrics[f"{op.metric}_ci_high"] = low, high
    return thresholds, metrics


# =============================================================================================
# subgroups
# =============================================================================================
def slug(value: object) -> str:
    """A subgroup value as a metric-name part: lower case, every run of other characters than
    ``[a-z0-9]`` one ``_`` (``"head/neck"`` → ``head_neck``); a missing value is ``missing``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    text = re.sub(r"[^a-z0-9]+", "_", str(value).strip().lower()).strip("_")
    return text or "missing"


def age_group(age: object) -> str:
    """The age band of :data:`AGE_BINS` (``0_39``, ``40_59``, ``60_79``, ``80_plus``); ``missing`` when unknown."""
    try:
        a = float(age)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "missing"
    if not np.isfinite(a) or a < 0:
        return "missing"
    return next(name for low, high, name in AGE_BINS if low <= a < high)


SUBGROUP_COLUMNS = (
    "attribute", "group", "n", "n_pos", "n_neg", "status", "auc", "auc_ci_low", "auc_ci_high",
    "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high", "specificity", "specificity_ci_low",
    "specificity_ci_high",
)  # fmt: skip


def _argmax_rate(which: str):
    def metric(y: np.ndarray, s: np.ndarray) -> float:
        mask = (y == 1) if which == "sensitivity" else (y == 0)
        if not mask.any():
            return math.nan
        return float((s[mask].argmax(1) == (1 if which == "sensitivity" else 0)).mean())

    return metric


def subgroup_table(
    y_true: np.ndarray,
    scores: np.ndarray,
    groups: Mapping[str, Sequence[str]],
    *,
    min_positives: int = MIN_SUBGROUP_POSITIVES,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """AUC, sensitivity and specificity (at argmax, as the run's ``test_sensitivity``) per subgroup, with CIs.

    Args:
        y_true: labels ``(N,)``.
        scores: probabilities ``(N, C)``.
        groups: ``{attribute: group name per image}`` (names already slugs, e.g. from :func:`slug`).
        min_positives: a subgroup with fewer positives or fewer negatives than this gets
            ``status == "too small"`` and no metric values (only its counts).
        n_boot: bootstrap resamples per CI (0: none).
        seed: bootstrap seed.

    Returns:
        One row per (attribute, group), groups sorted by name, columns :data:`SUBGROUP_COLUMNS`.
        For multiclass tasks ``n_pos`` counts images not of class 0 and only the AUC is filled.
    """
    y, s = _check(y_true, scores)
    binary = s.shape[1] == 2
    rows = []
    for attribute, values in groups.items():
        names = np.asarray([str(v) for v in values], dtype=object)
        if names.shape[0] != y.shape[0]:
            raise ValueError(f"subgroup {attribute!r} has {names.shape[0]} values for {y.shape[0]} images.")
        for group in sorted(set(names)):
            m = names == group
            yg, sg = y[m], s[m]
            n_pos = int(np.count_nonzero(yg != 0))
            row: dict[str, object] = {"attribute": attribute, "group": group, "n": int(m.sum()), "n_pos": n_pos}
            row["n_neg"] = row["n"] - n_pos
            small = n_pos < min_positives or row["n_neg"] < min_positives
            row["status"] = "too small" if small else "ok"
            for name in ("auc", "sensitivity", "specificity"):
                row[name] = row[f"{name}_ci_low"] = row[f"{name}_ci_high"] = math.nan
            if not small:
                metric_fns = {"auc": roc_auc}
                if binary:
                    metric_fns.update(sensitivity=_argmax_rate("sensitivity"), specificity=_argmax_rate("specificity"))
                for name, fn in metric_fns.items():
                    row[name] = fn(yg, sg)
                    if n_boot > 0:
                        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = bootstrap_ci(
                            yg, sg, fn, n_boot=n_boot, seed=seed
                        )
            rows.append(row)
    return pd.DataFrame(rows, columns=list(SUBGROUP_COLUMNS))


def subgroup_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The subgroup table as metric names MLflow accepts: ``n__sex_female``, ``n_pos__sex_female`` and,
    for subgroups large enough, ``auc__sex_female`` (+ ``_ci_low``/``_ci_high``), ``sensitivity__…``,
    ``specificity__…``; a too-small subgroup has its counts only (prefix ``test_`` added by the caller)."""
    out: dict[str, float] = {}
    for row in table.to_dict("records"):
        key = f"{row['attribute']}_{row['group']}"
        out[f"n__{key}"] = float(row["n"])
        out[f"n_pos__{key}"] = float(row["n_pos"])
        if row["status"] != "ok":
            continue
        for name in ("auc", "sensitivity", "specificity"):
            for suffix in ("", "_ci_low", "_ci_high"):
                value = row[f"{name}{suffix}"]
                if value is not None and np.isfinite(value):
                    out[f"{name}{suffix}__{key}"] = float(value)
    return out


# =============================================================================================
# temperature scaling
# =============================================================================================
#: Range searched for the temperature (log-uniform bounds).
TEMPERATURE_RANGE = (0.05, 20.0)


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of the logits divided by ``temperature``.

    The logits are recovered as ``log(scores)``: they differ from the model's by a constant per row,
    which softmax ignores, so ``softmax(log(p) / T) == softmax(z / T)``. Probabilities are clipped at
    1e-300 so a score of exactly 0 stays finite.
    """
    s = np.asarray(scores, dtype=np.float64)
    if temperature == 1.0:
        return s
    return softmax(np.log(np.clip(s, 1e-300, None)) / float(temperature))


def _nll(y: np.ndarray, s: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(s[np.arange(y.shape[0]), y], 1e-300, None))))


def fit_temperature(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``scores`` (Guo et al. 2017).

    One scalar ``T > 0`` divides the logits; it changes no prediction (the argmax and the AUC
    stay), only the confidence. Found by scipy's bounded scalar minimiser over ``log T`` in
    :data:`TEMPERATURE_RANGE`.

    Args:
        y_true: labels ``(N,)`` of the split it is fitted on (the validation split).
        scores: probabilities ``(N, C)`` of the uncalibrated model.

    Returns:
        The temperature.
    """
    y, s = _check(y_true, scores)
    low, high = np.log(TEMPERATURE_RANGE)
    # SciPy loads when a temperature is fitted, not with this module (see choose_threshold)
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda log_t: _nll(y, apply_temperature(s, float(np.exp(log_t)))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(res.x))


def nll(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean negative log-likelihood (cross-entropy) of the labels under ``scores``."""
    y, s = _check(y_true, scores)
    return _nll(y, s)
