"""Shared by the benchmark scripts: print the result as JSON and optionally save it; the test
conditions of simulated datasets, paired across datasets."""

import json
from pathlib import Path

import numpy as np


def emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def test_ids(tensors) -> list[int]:
    """The test conditions of one dataset's task tensors."""
    return np.flatnonzero(tensors.conditions["split"] == "test").tolist()


def shared_test_ids(datasets):
    """A function giving each dataset's test ids, restricted to the conditions every one of
    `datasets` holds: exclusions may cost one audience a unit, and paired bootstrap draws need
    the same units in each."""
    def keys(t):
        return t.conditions["unit_id"] + "/" + t.conditions["difficulty"]

    common = set.intersection(*(set(keys(t).iloc[test_ids(t)]) for t in datasets))
    return lambda t: [i for i in test_ids(t) if keys(t).iloc[i] in common]
