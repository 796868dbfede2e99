"""The benchmark: predictors fitted on one dataset, measured on others they never saw.

On the simulated release these are the audiences of held-out observer families (other features,
other decision rules) answering the test units' stimuli from a held-out image pool. The headline
is the mean over those audiences of the Spearman correlation *within* model x difficulty groups
(between-model differences are cheap: model identity gets them), with a CI that resamples units,
as a fraction of the same groups' ceiling. Everything here is about the simulator's observers:
a number on simulated data says how a metric does on those hypotheses about people, not on people.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..correlation import MIN_GROUP
from ..data.dataset import CONDITION_KEYS
from .agreement import average_reports, grouped_report
from .predict import predict_conditions

SIMULATED_NOTE = ("Simulated data: these numbers measure agreement with the simulator's observer "
                  "families (hypotheses about people), not with people. Held-out families and the "
                  "held-out pool show whether a metric learned more than the families it was fit "
                  "on; only human data (IMI) shows whether it agrees with humans.")


def measure_dataset(predictors: dict, tensors, ids, n_boot: int, seed: int,
                    reference: str = "mis") -> tuple[dict, dict]:
    """Every predictor's grouped report on the conditions `ids` of one dataset."""
    units = tensors.conditions.iloc[list(ids)].reset_index(drop=True)
    predictions = {name: predict_conditions(p, tensors, ids) for name, p in predictors.items()}
    return grouped_report(predictions, units, n_boot, seed, reference)


def heldout_benchmark(predictors: dict, datasets: dict[str, Path], headline: list[str],
                      load_tensors, split: str = "test", n_boot: int = 1000, seed: int = 0,
                      reference: str = "mis") -> dict:
    """Measure fitted predictors on each dataset's `split` conditions; the headline averages
    the `headline` datasets (which share their units, so their bootstrap draws pair up).
    `load_tensors(path)` gives a dataset's task tensors in the predictors' embeddings."""
    loaded = {name: load_tensors(path) for name, path in datasets.items()}
    ids = {name: np.flatnonzero(t.conditions["split"] == split).tolist() for name, t in loaded.items()}
    # The headline's bootstrap pairs draws across datasets by unit: measure the headline
    # datasets on the conditions they all have (exclusions may cost one of them a unit).
    chosen = [name for name in headline if name in loaded and len(ids[name]) >= MIN_GROUP]
    if chosen:
        keys = [set(map(tuple, loaded[n].conditions.iloc[ids[n]][CONDITION_KEYS].to_numpy()))
                for n in chosen]
        common = set.intersection(*keys)
        for name in chosen:
            rows = loaded[name].conditions[CONDITION_KEYS].to_numpy()
            ids[name] = [i for i in ids[name] if tuple(rows[i]) in common]
    reports, boots = {}, {}
    for name, tensors in loaded.items():
        if len(ids[name]) < MIN_GROUP:
            continue
        reports[name], boots[name] = measure_dataset(predictors, tensors, ids[name], n_boot,
                                                     seed, reference)
    chosen = [name for name in chosen if name in reports]
    out = {"note": SIMULATED_NOTE, "split": split, "datasets": reports}
    if chosen:
        out["headline"] = average_reports([reports[n] for n in chosen], [boots[n] for n in chosen],
                                          reference)
        out["headline"]["datasets"] = chosen
    return out


def format_benchmark(benchmark: dict, title: str = "held-out families on the held-out pool") -> str:
    """A table of the headline, for the terminal and the report."""
    head = benchmark.get("headline")
    if not head:
        return ""
    lines = [f"{title} ({', '.join(head['datasets'])}); test units; CIs resample units",
             f"{'predictor':16s} {'within-group':>22s} {'of ceiling':>10s} {'overall':>22s} "
             f"{'of ceiling':>10s} {'within - MIS':>24s}"]
    for name, r in head["predictors"].items():
        def cell(value, ci):
            return "-" if not np.isfinite(value) else f"{value:6.3f} [{ci[0]:5.2f}, {ci[1]:5.2f}]"
        diff = r.get("within_minus_mis")
        diff = (f"{diff:+6.3f} [{r['within_minus_mis_ci'][0]:+.2f}, "
                f"{r['within_minus_mis_ci'][1]:+.2f}]") if diff is not None and np.isfinite(diff) else "-"
        def fraction(value):
            return f"{value:10.2f}" if np.isfinite(value) else f"{'-':>10s}"
        lines.append(f"{name:16s} {cell(r['within'], r['within_ci']):>22s} "
                     f"{fraction(r['within_of_ceiling'])} "
                     f"{cell(r['overall'], r['overall_ci']):>22s} "
                     f"{fraction(r['overall_of_ceiling'])} {diff:>24s}")
    c = head["ceiling"]
    lines.append(f"ceiling (true vs measured): within-group {c['within']:.3f}, overall {c['overall']:.3f}")
    lines.append(benchmark["note"])
    return "\n".join(lines)
