"""Classification metrics as pure functions of numpy arrays.

Conventions shared by every function here:

* ``y_true`` is an integer array of shape ``(N,)`` with labels in ``[0, C)``.
* ``scores`` is a float array of shape ``(N, C)`` of class probabilities (rows of
  :func:`softmax` of the model's logits); predictions are ``argmax(scores, axis=1)``.
* A metric that is undefined for the data (ROC AUC when ``y_true`` holds one class only)
  is ``NaN``, never an exception, so a small or lopsided test split still produces a report.

Point estimates use scikit-learn where it has the metric. :func:`roc_auc` and
:func:`balanced_accuracy` are hand-written numpy versions of the same definitions, used inside
:func:`bootstrap_ci` (and for the balanced-accuracy point estimate) because
scikit-learn's input validation dominates its run time on small resamples (about 1.2 ms per
``roc_auc_score`` call, so 1.2 s for 1000 resamples of 200 items, versus about 0.05 s here);
the tests check that both versions agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PairedDifference",
    "balanced_accuracy",
    "bootstrap_ci",
    "classification_metrics",
    "oracle_metrics",
    "paired_bootstrap",
    "roc_auc",
    "softmax",
    "test_metrics",
]

Metric = Callable[[np.ndarray, np.ndarray], float]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Turns logits into probabilities along the last axis, without overflow.

    Args:
        logits: Array of shape ``(N, C)`` (any leading shape works; classes on the last axis).

    Returns:
        Float array of the same shape whose last axis sums to 1.
    """
    z = np.asarray(logits, dtype=np.float64)
    # Subtracting the row maximum leaves softmax unchanged and keeps exp() <= 1.
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates and converts the ``(y_true, scores)`` pair every metric takes.

    Args:
        y_true: Integer labels, shape ``(N,)``.
        scores: Class probabilities, shape ``(N, C)`` with ``C >= 2``.

    Returns:
        ``y_true`` as an int64 array and ``scores`` as a float64 array.

    Raises:
        ValueError: If the shapes disagree, the arrays are empty or a label is outside ``[0, C)``.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"scores must have shape (N, C) with C >= 2, got shape {s.shape}.")
    if y.ndim != 1 or y.shape[0] != s.shape[0]:
        raise ValueError(f"y_true must have shape ({s.shape[0]},) to match scores, got shape {y.shape}.")
    if y.shape[0] == 0:
        raise ValueError("metrics need at least one sample, got none.")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"y_true must hold integer class labels, got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= s.shape[1]:
        raise ValueError(
            f"y_true labels must lie in [0, {s.shape[1]}) for scores with {s.shape[1]} columns, "
            f"got labels from {y.min()} to {y.max()}."
        )
    return y, s


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of one score against a boolean target, by the Mann-Whitney rank sum.

    AUC is the probability that a random positive outranks a random negative, ties counting
    one half; with mid-ranks for ties that is ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``
    where ``R_pos`` is the sum of the positives' ranks.

    Args:
        positive: Boolean array of shape ``(N,)``.
        score: Float array of shape ``(N,)``; higher means more likely positive.

    Returns:
        The AUC, or ``NaN`` if ``positive`` is all true or all false.
    """
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # scipy / scikit-learn load on first use: the command line reads the metric names below without them (~1.5 s)
    from scipy.stats import rankdata

    ranks = rankdata(score)  # average ("mid") ranks, so ties count one half
    rank_sum = float(np.sum(ranks[positive]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, hand-written for speed inside the bootstrap (see the module docstring).

    Binary (``C == 2``): the AUC of ``scores[:, 1]`` for class 1, equal to scikit-learn's
    ``roc_auc_score(y_true, scores[:, 1])``. Multiclass: the unweighted mean of the one-vs-rest
    AUCs of the classes that have both positives and negatives in ``y_true``; when every class
    is present that equals ``roc_auc_score(..., multi_class="ovr", average="macro")``. A class
    absent from ``y_true`` has no defined one-vs-rest AUC and is left out of the mean rather
    than making the whole value undefined.

    Args:
        y_true: Integer labels, shape ``(N,)``.
        scores: Class probabilities, shape ``(N, C)``.

    Returns:
        The AUC in ``[0, 1]``, or ``NaN`` when ``y_true`` holds a single class.
    """
    y, s = _check(y_true, scores)
    n_classes = s.shape[1]
    if n_classes == 2:
        return _binary_auc(y == 1, s[:, 1])
    per_class = [_binary_auc(y == c, s[:, c]) for c in range(n_classes)]
    defined = [a for a in per_class if not np.isnan(a)]
    return float(np.mean(defined)) if defined else float("nan")


def balanced_accuracy(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Balanced accuracy (mean per-class recall), hand-written for speed inside the bootstrap.

    Recall is averaged over the classes present in ``y_true``, as scikit-learn's
    ``balanced_accuracy_score(y_true, argmax(scores, 1))`` does.

    Args:
        y_true: Integer labels, shape ``(N,)``.
        scores: Class probabilities, shape ``(N, C)``.

    Returns:
        The balanced accuracy in ``[0, 1]``.
    """
    y, s = _check(y_true, scores)
    n_classes = s.shape[1]
    correct = np.argmax(s, axis=1) == y
    support = np.bincount(y, minlength=n_classes)
    hits = np.bincount(y, weights=correct, minlength=n_classes)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The classification metrics logged for train, validation and test.

    Args:
        y_true: Integer labels, shape ``(N,)``, values in ``[0, C)``.
        scores: Class probabilities, shape ``(N, C)``; predictions are ``argmax(scores, 1)``.

    Returns:
        A dict of floats with keys ``accuracy``, ``balanced_accuracy``, ``precision``,
        ``recall``, ``f1`` (the last three macro-averaged over the labels occurring in
        ``y_true`` or the predictions, 0 where a ratio is 0/0) and ``auc`` (binary: AUC of
        ``scores[:, 1]``; multiclass: one-vs-rest macro, see :func:`roc_auc`; ``NaN`` when
        ``y_true`` holds one class). Binary problems (``C == 2``) add ``sensitivity`` (recall
        of class 1) and ``specificity`` (recall of class 0), each ``NaN`` when that class is
        absent from ``y_true``.

    Raises:
        ValueError: If the shapes disagree or a label is outside ``[0, C)``.
    """
    # scipy / scikit-learn load on first use: the command line reads the metric names below without them (~1.5 s)
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, recall_score, roc_auc_score

    y, s = _check(y_true, scores)
    n_classes = s.shape[1]
    pred = np.argmax(s, axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        # Same value as scikit-learn's balanced_accuracy_score, without its warning when a
        # prediction names a class absent from y_true (common on small splits).
        "balanced_accuracy": balanced_accuracy(y, s),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }
    present = np.unique(y)
    if present.size < 2:
        # scikit-learn would warn and return NaN; say so without the warning.
        out["auc"] = float("nan")
    elif n_classes == 2:
        out["auc"] = float(roc_auc_score(y, s[:, 1]))
    else:
        # One-vs-rest per class present, so a class missing from a small split does not make
        # the macro AUC undefined (scikit-learn's multi_class="ovr" would return NaN).
        per_class = [roc_auc_score(y == c, s[:, c]) for c in present]
        out["auc"] = float(np.mean(per_class))
    if n_classes == 2:
        spec, sens = recall_score(y, pred, labels=[0, 1], average=None, zero_division=np.nan)
        out["sensitivity"] = float(sens)
        out["specificity"] = float(spec)
    return out


def bootstrap_ci(
    y_true: np.ndarray,
    scores: np.ndarray,
    metric: Metric,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a metric.

    Draws ``n_boot`` resamples of the ``N`` samples with replacement (all indices at once from
    ``numpy.random.default_rng(seed)``, so the interval is the same for the same seed), evaluates
    ``metric`` on each and returns the ``alpha / 2`` and ``1 - alpha / 2`` quantiles.

    Resamples that hold a single class are skipped, as are resamples where ``metric`` returns
    ``NaN``: a metric such as AUC is undefined there, and counting them as 0 or 1 would bias the
    interval. The interval therefore describes the resamples on which the metric exists; with
    very small or very lopsided data few may remain.

    Args:
        y_true: Integer labels, shape ``(N,)``.
        scores: Class probabilities, shape ``(N, C)``.
        metric: ``metric(y_true, scores) -> float`` on arrays of the same kinds, e.g.
            :func:`roc_auc` or :func:`balanced_accuracy`.
        n_boot: Number of resamples drawn (including those later skipped).
        alpha: One minus the confidence level; 0.05 gives a 95 % interval.
        seed: Seed of the random generator drawing the resamples.

    Returns:
        ``(low, high)``; ``(NaN, NaN)`` when no resample gives a defined value.

    Raises:
        ValueError: If ``n_boot < 1``, ``alpha`` is not in ``(0, 1)`` or the arrays disagree.
    """
    y, s = _check(y_true, scores)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}.")
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(n_boot, n))
    # A resample holds one class iff all its labels equal its first label.
    resampled_labels = y[indices]
    several_classes = np.any(resampled_labels != resampled_labels[:, :1], axis=1)
    values = []
    for idx in indices[several_classes]:
        value = float(metric(y[idx], s[idx]))
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.quantile(np.asarray(values), [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def test_metrics(y_true: np.ndarray, scores: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """The metrics of a test run: :func:`classification_metrics` plus 95 % bootstrap CIs.

    Args:
        y_true: Integer labels, shape ``(N,)``.
        scores: Class probabilities, shape ``(N, C)``.
        n_boot: Number of bootstrap resamples for each interval.
        seed: Seed of the bootstrap; both intervals use the same resamples.

    Returns:
        The dict of :func:`classification_metrics` with ``auc_ci_low``, ``auc_ci_high``,
        ``balanced_accuracy_ci_low`` and ``balanced_accuracy_ci_high`` added (percentile
        intervals from :func:`bootstrap_ci`; ``NaN`` where undefined).
    """
    out = classification_metrics(y_true, scores)
    for name, metric in (("auc", roc_auc), ("balanced_accuracy", balanced_accuracy)):
        low, high = bootstrap_ci(y_true, scores, metric, n_boot=n_boot, seed=seed)
        out[f"{name}_ci_low"] = low
        out[f"{name}_ci_high"] = high
    return out


# The name starts with "test_"; keep pytest from collecting it in test modules that import it.
test_metrics.__test__ = False  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PairedDifference:
    """A paired comparison of two classifiers on the same images (:func:`paired_bootstrap`).

    Attributes:
        delta: ``metric(A) - metric(B)`` on all images (each side averaged over its seeds).
        ci_low: lower end of the percentile bootstrap interval of ``delta``.
        ci_high: upper end.
        p_value: two-sided p-value of "no difference": ``2 Φ(-|delta| / sd*)`` with ``sd*`` the
            standard deviation of the bootstrap differences (pROC's bootstrap test, Robin et al.
            2011); 1 when ``delta`` is 0, 0 when the differences do not vary but ``delta`` does.
        n_boot: resamples on which both metrics were defined.
    """

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_boot: int


def _mean_metric(y: np.ndarray, runs: Sequence[np.ndarray], metric: Metric, idx: np.ndarray | None = None) -> float:
    """Mean of ``metric`` over the runs (seeds) of one classifier, on the images ``idx`` (all: ``None``)."""
    if idx is None:
        return float(np.mean([metric(y, s) for s in runs]))
    return float(np.mean([metric(y[idx], s[idx]) for s in runs]))


def paired_bootstrap(
    y_true: np.ndarray,
    scores_a: Sequence[np.ndarray],
    scores_b: Sequence[np.ndarray],
    metric: Metric = roc_auc,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    resamples: np.ndarray | None = None,
) -> PairedDifference:
    """Paired bootstrap of the difference of a metric between two classifiers on the same images.

    Each resample draws ``N`` images with replacement and evaluates both classifiers on exactly
    those images, so the image-to-image variation both share cancels in the difference (DeLong
    et al. 1988 for the AUC; here by resampling, as pROC's ``roc.test(method="bootstrap")``).
    A classifier trained with several seeds is given as one score array per seed; its metric is
    the mean over the seeds on each resample, so the interval covers the sampling of test images
    for the seed-averaged difference (the spread across seeds is reported separately). Resamples
    holding one class, or where a metric is NaN, are skipped (as in :func:`bootstrap_ci`).

    Args:
        y_true: labels of the shared images, shape ``(N,)``.
        scores_a: class probabilities of classifier A on those images, one ``(N, C)`` array per seed.
        scores_b: the same for classifier B (the reference, e.g. the plain backbone).
        metric: ``metric(y_true, scores) -> float``, e.g. :func:`roc_auc`.
        n_boot: resamples drawn (ignored when ``resamples`` is given).
        alpha: one minus the confidence level.
        seed: seed of the resampling.
        resamples: explicit ``(n_boot, N)`` image indices instead of drawing them.

    Returns:
        A :class:`PairedDifference` (``delta`` A − B; NaN fields when no resample is usable).

    Raises:
        ValueError: a side has no score array, or the arrays disagree with ``y_true``.
    """
    if not scores_a or not scores_b:
        raise ValueError("paired_bootstrap needs at least one score array per classifier.")
    pairs = [_check(y_true, s) for s in (*scores_a, *scores_b)]
    y = pairs[0][0]
    a, b = [s for _, s in pairs[: len(scores_a)]], [s for _, s in pairs[len(scores_a) :]]
    if resamples is None:
        resamples = np.random.default_rng(seed).integers(0, y.shape[0], size=(n_boot, y.shape[0]))
    diffs = []
    for idx in np.asarray(resamples):
        if np.all(y[idx] == y[idx[0]]):
            continue
        d = _mean_metric(y, a, metric, idx) - _mean_metric(y, b, metric, idx)
        if not np.isnan(d):
            diffs.append(d)
    delta = _mean_metric(y, a, metric) - _mean_metric(y, b, metric)
    if not diffs or np.isnan(delta):
        return PairedDifference(delta, math.nan, math.nan, math.nan, len(diffs))
    low, high = np.quantile(np.asarray(diffs), [alpha / 2.0, 1.0 - alpha / 2.0])
    sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    if delta == 0.0:
        p = 1.0
    elif sd == 0.0:
        p = 0.0
    else:
        # scipy / scikit-learn load on first use: the command line reads the metric names below without them (~1.5 s)
        from scipy.stats import norm

        p = float(2.0 * norm.sf(abs(delta) / sd))
    return PairedDifference(float(delta), float(low), float(high), min(p, 1.0), len(diffs))


#: Keys of :func:`classification_metrics` (binary problems; multiclass ones lack the last two).
CLASSIFICATION_KEYS = (
    "loss",
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "auc",
    "sensitivity",
    "specificity",
)
#: Every metric ``medattn train`` logs per epoch under a split prefix (the one list of them).
EPOCH_METRIC_NAMES = tuple(f"{split}_{key}" for split in ("val", "train") for key in CLASSIFICATION_KEYS)


def metric_mode(metric: str) -> str:
    """``min`` for losses, ``max`` for every other metric."""
    return "min" if metric.endswith("loss") else "max"


def is_better(value: float | None, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` (``None``: nothing yet) in direction ``mode``; NaN never does."""
    if value is None or not np.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def oracle_metrics(
    y_true: np.ndarray, oracle_prob: np.ndarray, scores: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The ceiling of a data set whose generator knows ``P(label = 1 | latent)``, on the tested images.

    A classifier that saw the generator's latent exactly would score ``oracle_prob``; its AUC is
    the best AUC any model can expect on these images (a model can beat it only by sampling luck).

    Args:
        y_true: binary labels of the tested images, shape ``(N,)``.
        oracle_prob: the generator's ``P(label = 1)`` of the same images, shape ``(N,)``.
        scores: the model's class probabilities, shape ``(N, 2)``.
        n_boot: bootstrap resamples.
        seed: seed of the resampling (the gap's resamples pair the two classifiers image by image).

    Returns:
        ``oracle_auc`` with ``oracle_auc_ci_low`` / ``_ci_high`` (percentile bootstrap, as
        :func:`test_metrics`), and ``oracle_gap`` = oracle AUC − model AUC with its paired-bootstrap
        ``oracle_gap_ci_low`` / ``_ci_high`` (:func:`paired_bootstrap`).
    """
    p = np.asarray(oracle_prob, dtype=np.float64)
    oracle = np.stack([1.0 - p, p], axis=1)
    out = {"oracle_auc": roc_auc(y_true, oracle)}
    if n_boot < 1:
        return {**out, "oracle_gap": out["oracle_auc"] - roc_auc(y_true, scores)}
    out["oracle_auc_ci_low"], out["oracle_auc_ci_high"] = bootstrap_ci(
        y_true, oracle, roc_auc, n_boot=n_boot, seed=seed
    )
    gap = paired_bootstrap(y_true, [oracle], [np.asarray(scores)], roc_auc, n_boot=n_boot, seed=seed)
    out.update({"oracle_gap": gap.delta, "oracle_gap_ci_low": gap.ci_low, "oracle_gap_ci_high": gap.ci_high})
    return out
