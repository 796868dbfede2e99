"""Whether a dataset leaves enough test units to evaluate a metric on: `prepare`'s split
(`dataset.assign_splits`, by model) keeps round(test_fraction x units) of each model for
testing, and correlations need `correlation.MIN_GROUP` of them. `study build`, `prepare` and
`python train.py` warn through these, before the work that would be wasted."""

from __future__ import annotations

import pandas as pd

from ..correlation import MIN_GROUP
from .dataset import SplitOptions, assign_splits


def test_units(unit_ids, test_fraction: float = SplitOptions.test_fraction) -> int:
    """How many of these units (`model/layer/channel`, one condition each, as a study shows
    them) `prepare`'s split puts in the test split."""
    ids = list(unit_ids)
    if not ids:
        return 0
    frame = pd.DataFrame({"unit_id": ids, "model": [u.split("/")[0] for u in ids],
                          "mode": "natural", "difficulty": "easy"})
    split = assign_splits(frame, SplitOptions.seed, SplitOptions.val_fraction, test_fraction)
    return int((split == "test").sum())


def too_few_test_units(n_test: int) -> str | None:
    """The problem with a test split of `n_test` units (conditions), or None."""
    if n_test >= MIN_GROUP:
        return None
    return (f"leaves {n_test} test unit{'s' * (n_test != 1)}, too few to evaluate (correlations "
            f"need {MIN_GROUP})")
