"""Which units to ask people about: a study's budget spent where an answer teaches the metric
most. Every rule reads a table of candidate units (one row per unit: `unit_id`, `model`, and,
for the rules that need them, the metric's `score` and its interval `score_low`, `score_high`)
and returns `n` unit ids. `study build --select`, `--data.train_units` and the budget benchmark
all choose through `choose`.

- `random`: a seeded draw;
- `spread`: the models in turn, and inside each model the units whose predicted
  scores sit at evenly spaced quantiles of its candidates, so the answers cover every model and
  the whole range of scores a within-model ranking must order;
- `uncertain` (recommended): the widest predicted intervals (the spread of a unit's score over
  its tasks); it measured best of the four in `benchmarks/study_budget.py` (simulated);
- `extreme`: half the lowest and half the highest predicted scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError

SELECTION_RULES = ("spread", "random", "uncertain", "extreme")
# Not a default (`--select` names a rule): the one that measured best in study_budget.json.
RECOMMENDED_RULE = "uncertain"
NEEDS_SCORES = {"spread": ("score",), "uncertain": ("score_low", "score_high"),
                "extreme": ("score",)}


def choose(candidates: pd.DataFrame, rule: str, n: int, seed: int = 0) -> list[str]:
    """`n` unit ids of `candidates` by `rule` (all of them when there are no more than `n`)."""
    if rule not in SELECTION_RULES:
        raise InputError(f"--select {rule}: unknown rule; valid: {', '.join(SELECTION_RULES)}")
    missing = [c for c in ("unit_id", *NEEDS_SCORES.get(rule, ())) if c not in candidates]
    if missing:
        raise InputError(f"--select {rule}: needs the columns {missing} (the scores.parquet "
                         "that `interpscore score` writes)")
    if n < 1:
        raise InputError(f"-n {n}: choose at least one unit")
    frame = candidates.drop_duplicates("unit_id").reset_index(drop=True)
    if rule != "random":
        frame = frame[frame[list(NEEDS_SCORES[rule])].notna().all(axis=1)].reset_index(drop=True)
    if len(frame) <= n:
        return frame["unit_id"].tolist()
    rng = np.random.default_rng(seed)
    if rule == "random":
        return frame["unit_id"].iloc[np.sort(rng.choice(len(frame), n, replace=False))].tolist()
    if rule == "uncertain":
        order = (frame["score_high"] - frame["score_low"]).sort_values(ascending=False,
                                                                        kind="stable").index
        return frame.loc[order[:n], "unit_id"].tolist()
    if rule == "extreme":
        ranked = frame.sort_values("score", kind="stable")["unit_id"].tolist()
        return ranked[: (n + 1) // 2] + ranked[::-1][: n // 2]
    return _spread(frame, n)


def _spread(frame: pd.DataFrame, n: int) -> list[str]:
    """Evenly spaced predicted-score quantiles inside each model, the budget shared across
    models in proportion to their candidates (largest remainders)."""
    models = frame["model"] if "model" in frame else pd.Series("all", index=frame.index)
    sizes = models.value_counts().sort_index()
    share = sizes / sizes.sum() * n
    quota = np.floor(share).astype(int)
    for model in (share - quota).sort_values(ascending=False, kind="stable").index[
            : n - quota.sum()]:
        quota[model] += 1
    chosen = []
    for model, k in quota.items():
        if k == 0:
            continue
        ranked = frame[models == model].sort_values("score", kind="stable")["unit_id"].to_numpy()
        # the centres of k equal slices of the ranking: the extremes and everything between
        positions = np.floor((np.arange(k) + 0.5) * len(ranked) / k).astype(int)
        chosen += ranked[positions].tolist()
    return chosen
