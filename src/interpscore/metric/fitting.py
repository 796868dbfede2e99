"""How fitted heads are fitted: maximum a posteriori by full-batch L-BFGS, leave-one-model-out
on the training units, the one-standard-error choice of a prior's strength, and toward a
checkpoint the test a move away from it must pass. Shared by every head with `fitted = True`;
`train.lomo` uses the same folds and score."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..correlation import group_labels, within_group_spearman


def fit_full_batch(head: nn.Module, batch, steps: int) -> nn.Module:
    """Maximum a posteriori of a fitted head on one batch of training conditions (full batch,
    L-BFGS): the trial likelihood plus the head's prior. Deterministic: with several threads
    the backward pass of a gather with repeated rows (a learned space projects each picture
    once, then reads it for every task) sums in a varying order, and L-BFGS turns those 1e-11
    differences into different fits, so it runs under PyTorch's deterministic algorithms
    whoever calls it (Lightning's `deterministic: true` covers `python train.py` only), and
    gives the caller's setting back.

    A line search that reaches a non-finite loss leaves L-BFGS with NaN parameters, or with a
    step too large for float32 (a RuntimeError, seen in a leave-one-model-out fold of a
    learned space); then the head ends at the best finite point the fit evaluated. Fits that
    end well are left as L-BFGS leaves them."""
    from .heads.common import nll

    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    best = {"loss": math.inf, "state": None}

    def closure():
        optimizer.zero_grad()
        loss = nll(head(batch), batch, "trial") + head.regularization()
        if torch.isfinite(loss) and loss.item() < best["loss"]:
            best["loss"] = loss.item()
            best["state"] = [p.detach().clone() for p in head.parameters()]
        loss.backward()
        return loss

    head.train()
    callers = (torch.are_deterministic_algorithms_enabled(),
               torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True)
    failed = False
    try:
        optimizer.step(closure)
    except RuntimeError as error:
        if "overflow" not in str(error):
            raise
        failed = True
    finally:
        torch.use_deterministic_algorithms(callers[0], warn_only=callers[1])
    failed = failed or not all(torch.isfinite(p).all() for p in head.parameters())
    if failed and best["state"] is not None:
        with torch.no_grad():
            for parameter, value in zip(head.parameters(), best["state"]):
                parameter.copy_(value)
    return head.eval()


UNIT_FOLDS = 5  # with one model, the prior is chosen by this many folds of its units


def model_folds(conditions, ids) -> list[tuple[str, list[int], list[int]]]:
    """Leave-one-model-out folds of the conditions `ids`: (left-out model, the ids to fit on,
    the ids of that model); none with fewer than two models."""
    ids = list(ids)
    models = conditions["model"].iloc[ids].to_numpy()
    names = sorted(set(models))
    if len(names) < 2:
        return []
    return [(name, [i for i, m in zip(ids, models) if m != name],
             [i for i, m in zip(ids, models) if m == name]) for name in names]


def prior_folds(conditions, ids, k: int = UNIT_FOLDS, seed: int = 0
                ) -> list[tuple[list[int], list[int]]]:
    """The held-out folds a prior's strength is chosen on: (ids to fit on, ids to score). A
    model left out at a time where there are several models (a metric must rank the units of
    models it never saw); with one model, `k` folds of its units, a unit's conditions (its
    difficulties share references) always in one fold."""
    folds = model_folds(conditions, ids)
    if folds:
        return [(fit, held) for _, fit, held in folds]
    ids = list(ids)
    units = conditions["unit_id"].iloc[ids].to_numpy()
    names = sorted(set(units))
    if len(names) < 2 * k:  # too few units to score a fold: nothing to choose by
        return []
    fold_of = dict(zip(names, np.random.default_rng(seed).permutation(len(names)) % k))
    return [([i for i, u in zip(ids, units) if fold_of[u] != f],
             [i for i, u in zip(ids, units) if fold_of[u] == f]) for f in range(k)]


def left_out_score(predicted, units) -> float:
    """A left-out fold's score: the within-group Spearman of its conditions (difficulty x mode
    groups; its difficulties share their units' references, so a model is one independent
    value)."""
    return within_group_spearman(predicted, units["his"].to_numpy(float),
                                 group_labels(units, by=("difficulty", "mode")))


def scorable(units) -> bool:
    """Whether a fold's units can earn a `left_out_score` whatever is predicted (some group of
    at least three with measured values that differ)."""
    return bool(np.isfinite(left_out_score(np.arange(len(units), dtype=float), units)))


def one_se_choice(grid, values: dict) -> float:
    """The one-standard-error rule: the largest grid value (the strongest prior) whose paired
    difference to the best value, over the left-out models, is within one standard error of
    zero. `values[v]` holds one score per left-out model (all of the same models). Values the
    left-out models cannot tell apart are decided toward the simpler head, not by noise; with
    one left-out model the best wins; with none, the strongest prior."""
    scores = {v: float(np.mean(values[v])) if len(values[v]) else 0.0 for v in grid}
    best = max(scores, key=lambda v: (scores[v], v))

    def close_to_best(value) -> bool:
        difference = np.asarray(values[best]) - np.asarray(values[value])
        if len(difference) < 2:
            return value == best
        return difference.mean() <= difference.std(ddof=1) / math.sqrt(len(difference))

    return max(v for v in grid if close_to_best(v))


MOVE_LEVEL = 0.95  # toward a checkpoint: the confidence that a weaker prior beats holding


def anchored_choice(grid, values: dict, level: float = MOVE_LEVEL) -> float:
    """A prior's strength toward a checkpoint (the grid ends in holding it, its largest value):
    the one-standard-error choice, kept only where it beats holding on the left-out folds by a
    one-sided paired t-test at `level`; else hold. Few units give few, noisy folds, and the
    best of five strengths on them beats holding by chance (measured: a learned space switched
    on by ten units cost a family up to 0.07 on new pictures), so a move must be earned."""
    from scipy import stats

    hold = max(grid)
    choice = one_se_choice(grid, values)
    if choice == hold:
        return hold
    gain = np.asarray(values[choice]) - np.asarray(values[hold])
    if len(gain) < 2:
        return hold
    error = gain.std(ddof=1) / math.sqrt(len(gain))
    if error == 0:
        return choice if gain.mean() > 0 else hold
    return choice if gain.mean() / error > stats.t.ppf(level, len(gain) - 1) else hold
