"""The rank statistics every stage shares, defined once: Spearman correlation and its mean
within model x difficulty groups. The heads' prior choice (leave-one-model-out), `evaluate
--folds lomo` and the evaluation harness all score with these. Plain numpy and scipy."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

MIN_GROUP = 3  # a group of fewer conditions has no ranking worth scoring


def rows_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows (NaN for a constant row)."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def spearman(a, b) -> np.ndarray:
    """Spearman correlation of matching rows of a and b (ties get average ranks)."""
    return rows_corr(rankdata(a, axis=-1), rankdata(b, axis=-1))


def group_spearman(predicted: np.ndarray, measured: np.ndarray) -> float:
    """One group's Spearman, by the one rule for undefined cases: NaN where the measured values
    are constant (nothing to rank: the group is left out), 0 where only the prediction is (a
    constant ranks nothing, so it earns nothing)."""
    if np.ptp(measured) == 0:
        return float("nan")
    if np.ptp(predicted) == 0:
        return 0.0
    return float(spearman(predicted, measured))


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
    values = []
    for group in np.unique(groups):
        inside = groups == group
        if inside.sum() >= min_size:
            r = group_spearman(predicted[inside].astype(float), measured[inside].astype(float))
            if np.isfinite(r):
                values.append(r)
    return float(np.mean(values)) if values else float("nan")
