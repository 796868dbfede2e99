"""The rank statistics every stage shares, defined once: ranks, Spearman correlation, its rule
for undefined cases, its mean within model x difficulty groups, and the bootstrap percentile
interval. The heads' prior choice (leave-one-model-out), `evaluate --folds lomo`, the evaluation
harness and the scorer all use these. Plain numpy and scipy."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

MIN_GROUP = 3  # a group of fewer conditions has no ranking worth scoring
CI_PERCENTILES = (2.5, 97.5)  # a 95 % interval; written out so no rounding moves the bounds


def rows_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows (NaN for a constant row)."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def spearman(a, b) -> np.ndarray:
    """Spearman correlation of matching rows of a and b (ties get average ranks)."""
    return rows_corr(rankdata(a, axis=-1), rankdata(b, axis=-1))


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks of a 1-D array (ties share their mean rank; all NaN if a value is NaN), the
    values of scipy's rankdata without its per-call overhead: a bootstrap ranks tens of
    thousands of small groups."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    if len(xs) and xs[-1] != xs[-1]:  # NaN sorts last
        return np.full(len(x), np.nan)
    tie_group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    counts = np.bincount(tie_group)
    average = np.cumsum(counts) - (counts - 1) / 2
    out = np.empty(len(x))
    out[order] = average[tie_group]
    return out


def ranked_spearman(predicted_ranks: np.ndarray, measured_ranks: np.ndarray) -> float:
    """One group's Spearman from its ranks, by the one rule for undefined cases: NaN where the
    measured values are constant (nothing to rank: the group is left out), 0 where only the
    prediction is (a constant ranks nothing, so it earns nothing)."""
    # rows_corr for one pair, centred once for the tests too and with dot products: bootstraps
    # call this hundreds of thousands of times
    b = measured_ranks - measured_ranks.mean()
    if not b.any():
        return float("nan")
    a = predicted_ranks - predicted_ranks.mean()
    if not a.any():
        return 0.0
    return float(a.dot(b) / np.sqrt(a.dot(a) * b.dot(b)))


def group_spearman(predicted: np.ndarray, measured: np.ndarray) -> float:
    """One group's Spearman, by `ranked_spearman`'s rule."""
    return ranked_spearman(ranks(np.asarray(predicted, float)), ranks(np.asarray(measured, float)))


def mean_of_groups(values) -> float:
    """The mean of the groups' correlations that are defined (NaN when none is)."""
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def group_labels(units, by=("model", "difficulty", "mode")) -> np.ndarray:
    """The group of each condition (a `units` table's rows): model x difficulty x mode (natural
    or synthetic references are different tasks), of the columns the table has."""
    columns = [c for c in by if c in units]
    return units[columns].astype(str).agg("/".join, axis=1).to_numpy()


def within_group_spearman(predicted, measured, groups, min_size: int = MIN_GROUP) -> float:
    """The mean over groups (model x difficulty) of the Spearman correlation inside each group:
    how well units are ranked within a model, which model identity cannot do. Groups smaller
    than `min_size`, or whose measured values are constant, are left out (NaN when none is
    left); a prediction constant inside a group scores 0 there."""
    predicted, measured, groups = (np.asarray(x) for x in (predicted, measured, groups))
    return mean_of_groups(group_spearman(predicted[inside], measured[inside])
                          for inside in (groups == g for g in np.unique(groups))
                          if inside.sum() >= min_size)


def percentile_interval(draws) -> list[float]:
    """The bootstrap percentile 95 % interval of the finite draws ([NaN, NaN] when none is)."""
    values = np.asarray(draws, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan")] * 2
    return [float(x) for x in np.percentile(values, CI_PERCENTILES)]
