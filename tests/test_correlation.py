"""The shared rank statistics (`interpscore.correlation`), against values worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from interpscore.correlation import (MIN_GROUP, group_spearman, percentile_interval, ranks,
                                     within_group_spearman)


def test_ranks_average_ties_and_propagate_nan():
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert ranks(np.array([5.0, 5.0, 5.0])).tolist() == [2.0, 2.0, 2.0]
    assert np.isnan(ranks(np.array([1.0, np.nan, 2.0]))).all()


def test_group_spearman_and_its_rule_for_constants():
    # d = (0, 1, 1, 0): 1 - 6 * 2 / (4 * 15) = 0.8
    assert group_spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert group_spearman([4, 3, 2, 1], [1, 2, 3, 4]) == pytest.approx(-1.0)
    assert group_spearman([1, 1, 1, 1], [1, 3, 2, 4]) == 0.0  # a constant earns nothing
    assert np.isnan(group_spearman([1, 3, 2, 4], [2, 2, 2, 2]))  # nothing to rank


def test_within_group_spearman_leaves_out_small_and_constant_groups():
    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * (MIN_GROUP - 1) + ["d"] * 3
    predicted = [1, 2, 3] + [1, 2, 3] + [1, 2] + [1, 2, 3]
    measured = [1, 2, 3] + [1, 3, 2] + [2, 1] + [7, 7, 7]
    # a: 1; b: 1 - 6 * 2 / (3 * 8) = 0.5; c too small, d constant: (1 + 0.5) / 2
    assert within_group_spearman(predicted, measured, groups) == pytest.approx(0.75)
    assert np.isnan(within_group_spearman([1, 2], [2, 1], ["a", "a"]))


def test_percentile_interval_of_finite_draws():
    draws = np.r_[np.arange(101.0), np.nan, np.inf]
    assert percentile_interval(draws) == [2.5, 97.5]
    assert np.isnan(percentile_interval([np.nan])).all()


def test_bootstrap_draws_follow_the_group_rule():
    """A prediction constant inside every group scores 0 in every draw, as in the point value."""
    from interpscore.evaluation.agreement import grouped_report

    units = pd.DataFrame({"model": ["m"] * 4 + ["n"] * 4, "difficulty": "easy",
                          "unit_id": [f"u{i}" for i in range(8)], "n_trials": 10,
                          "n_correct": [1, 4, 6, 9, 2, 3, 7, 8]})
    units["his"] = units["n_correct"] / 10
    report, _ = grouped_report({"model_only": np.r_[np.zeros(4), np.ones(4)]}, units, n_boot=50,
                               reference=None)
    row = report["predictors"]["model_only"]
    assert row["within"] == 0.0
    assert row["within_ci"] == [0.0, 0.0]
