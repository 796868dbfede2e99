"""Heads that read every reference and are fitted in closed form, each shrunk toward an anchor:
MIS (by default), or the head of a checkpoint it updates (`--model.init_from`).

- `pooled`: per-stage weighted similarity of a query to each reference, pooled with a learned
  sharpness between the mean (MIS) and the maximum (nearest exemplar);
- `pooled_dims`: `pooled` with a weight per embedding dimension instead of per stage.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..fitting import (anchored_choice, fit_full_batch, left_out_score, one_se_choice,
                       prior_folds, scorable)
from .common import pooled_similarity, unit_prediction, with_lapse
from .mis import MISHead


HOLD = math.inf  # a prior strength that holds its parts at the anchor: they are not fitted


def holds(strength) -> bool:
    return math.isinf(float(strength))


class TowardMIS(nn.Module):
    """The common frame of the per-reference heads: evidence from every query-reference
    similarity (stage by stage), the MIS contrast, a temperature, a bias and a lapse, and a prior
    that pulls every learned part back to an anchor. Subclasses say how references become a set
    similarity (`set_similarity`) and which of their parts the prior pulls
    (`prior_coordinates`).

    The anchor is MIS (equal stage weights, the head's own parts at MIS, no bias), or after
    `set_anchor()` the head's present state: a checkpoint's head that new answers update, so a
    handful of new units moves it little and many move it much.

    Shrinkage: `shrink` sets the prior's strength; unless given, `fit` chooses it on the training
    units (never the test units; see `fitting.prior_folds`), taking the strongest prior that
    scores within one standard error of the best, so with little data to learn from the head
    stays at its anchor with a fitted temperature."""

    level = "trial"
    options = ("stage_dims", "shrink")
    fitted = True
    SHRINK_GRID = (1e-3, 1e-2, 1e-1)
    # Toward a checkpoint, the grid ends in holding the head at it: where the folds cannot tell
    # the strengths apart (few units), the updated head is the checkpoint, exactly.
    ANCHORED_SHRINK_GRID = (1e-3, 1e-2, 1e-1, 1.0, HOLD)
    LEARNED_PARTS: tuple = ()  # parameters a prior of their own governs (not `shrink`)
    FIT_STEPS = 50  # L-BFGS iterations per fit

    def __init__(self, dim: int, stage_dims=(), shrink: float | None = None, alpha: float = 10.0):
        super().__init__()
        self.stage_dims = tuple(stage_dims) or (dim,)
        n = len(self.stage_dims)
        self.log_weight = nn.Parameter(torch.zeros(n))  # which features count, per stage
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)))
        self.bias = nn.Parameter(torch.zeros(()))
        self.lapse_logit = nn.Parameter(torch.tensor(-4.0))
        # Strengths the user gave are kept by `fit`; the others (None) it chooses.
        self.given_strengths = {"shrink": shrink}
        self.register_buffer("shrink", torch.tensor(float(shrink if shrink is not None else 1e-2)))
        self.anchor = None  # None: MIS; else the prior coordinates (and state) to shrink to

    def set_similarity(self, sims, mask, batch=None):
        """sims (..., R) of a query to each reference of a set (stages already weighted),
        mask (..., R) -> (...); `batch` for rules that look at more than the similarities."""
        raise NotImplementedError

    def prior_coordinates(self) -> dict:
        """The parts the prior pulls, in the coordinates it pulls them in; each is 0 at MIS."""
        return {"log_weight": self.log_weight, "bias": self.bias}

    def set_anchor(self) -> None:
        """Shrink toward the head as it is now (a checkpoint's head), and start fits from it."""
        with torch.no_grad():
            self.anchor = {"coordinates": {k: v.detach().clone()
                                           for k, v in self.prior_coordinates().items()},
                           "state": {k: v.clone() for k, v in self.state_dict().items()}}

    def distance_from_anchor(self) -> torch.Tensor:
        """Sum over the prior's parts of the mean squared distance from the anchor."""
        anchor = self.anchor["coordinates"] if self.anchor else {}
        return sum(((value - anchor[name]) if name in anchor else value).pow(2).mean()
                   for name, value in self.prior_coordinates().items())

    def stage_similarities(self, batch):
        """(B, T, 2 queries, 2 sets, R) similarities, each stage weighted, and their mask."""
        sims = (batch["ref_sims"] * self.log_weight.exp()).sum(-1)
        return sims, batch["ref_mask"].unsqueeze(-3).expand_as(sims)

    def evidence(self, batch):
        s = self.set_similarity(*self.stage_similarities(batch), batch=batch)  # (B, T, 2, 2)
        return (s[..., 0, 0] - s[..., 0, 1]) - (s[..., 1, 0] - s[..., 1, 1])

    def forward(self, batch):
        return with_lapse(self.log_alpha.exp() * self.evidence(batch) + self.bias, self.lapse_logit)

    def regularization(self):
        if holds(self.shrink):  # the parts sit at the anchor, frozen (`fit_to`)
            return torch.zeros(())
        return self.shrink * self.distance_from_anchor()

    def held_parameters(self) -> list:
        """The parameters a fit leaves where they are: all but the learned parts' under a
        holding `shrink`."""
        if not holds(self.shrink):
            return []
        return [p for name, p in self.named_parameters() if name not in self.LEARNED_PARTS]

    def describe(self) -> dict:
        weights = self.log_weight.detach().exp()
        return {"stage_weights": (weights / weights.sum()).tolist(),
                "alpha": float(self.log_alpha.detach().exp()), "bias": float(self.bias.detach()),
                "lapse": float(torch.sigmoid(self.lapse_logit.detach())),
                "shrink": float(self.shrink), "anchor": "checkpoint" if self.anchor else "MIS"}

    def shrink_grid(self):
        return self.ANCHORED_SHRINK_GRID if self.anchor else self.SHRINK_GRID

    def fit(self, tensors, train_ids) -> dict:
        """Choose the shrinkage on the training units (see `choose`), then fit on all of them."""
        start = self.fit_start(tensors, train_ids)
        scores = self.choose("shrink", self.shrink_grid(), start, tensors, train_ids)
        return {"shrink_scores": scores, **self.fit_all(start, tensors, train_ids)}

    def fit_start(self, tensors, train_ids) -> dict:
        """The state every fit starts from: the anchor's, or the head as built at MIS's fitted
        temperature."""
        if self.anchor:
            return {k: v.clone() for k, v in self.anchor["state"].items()}
        start = {k: v.clone() for k, v in self.state_dict().items()}
        alpha = MISHead(tensors.dim).fit(tensors, train_ids)["alpha"]
        start["log_alpha"] = torch.tensor(math.log(max(alpha, 1e-3)))
        return start

    def choose(self, name: str, grid, start: dict, tensors, train_ids) -> dict:
        """Set the prior strength `name` (a buffer) in `start`: the strength the user gave, or
        else the one-standard-error choice over the grid (`fitting.one_se_choice`) from the
        held-out folds' scores: values the folds cannot tell apart are decided toward the
        simpler head (the anchor, or for a learned space `pooled`), not by noise; toward a
        checkpoint a strength that moves away from it must beat holding it
        (`fitting.anchored_choice`). Returns the grid's mean scores."""
        given = self.given_strengths.get(name)
        grid = (given,) if given is not None else grid
        if len(grid) == 1:
            start[name] = torch.tensor(float(grid[0]))
            return {grid[0]: None}
        values = {value: self.left_out_scores({**start, name: torch.tensor(float(value))},
                                              tensors, train_ids)
                  for value in grid}
        rule = anchored_choice if self.anchor else one_se_choice
        start[name] = torch.tensor(float(rule(grid, values)))
        return {value: float(v.mean()) if len(v) else 0.0 for value, v in values.items()}

    def left_out_scores(self, state: dict, tensors, train_ids) -> np.ndarray:
        """Fit from `state` without each fold and score the fold (`fitting.prior_folds`: a
        model left out at a time, or folds of units when there is one model)."""
        from ..tasks import gather

        values = []
        for fit_ids, held in prior_folds(tensors.conditions, train_ids):
            if not scorable(tensors.conditions.iloc[held]):  # no score to earn: skip the fit
                continue
            self.load_state_dict(state)
            self.fit_to(gather(tensors, fit_ids))
            with torch.no_grad():
                batch = gather(tensors, held)
                predicted = unit_prediction(self(batch), batch).numpy()
            score = left_out_score(predicted, tensors.conditions.iloc[held])
            if np.isfinite(score):
                values.append(score)
        return np.asarray(values, dtype=float)

    def fit_to(self, batch) -> None:
        """One fit of the head on a batch of conditions, from its present state: the same
        procedure for every left-out fold and the final fit; held parameters stay put."""
        if self.anchor and holds(self.shrink):  # held means at the checkpoint, exactly
            with torch.no_grad():
                for name, parameter in self.named_parameters():
                    if name not in self.LEARNED_PARTS:
                        parameter.copy_(self.anchor["state"][name])
        frozen = [p for p in self.held_parameters() if p.requires_grad]
        if len(frozen) == sum(p.requires_grad for p in self.parameters()):
            return  # everything is held: nothing to fit
        for parameter in frozen:
            parameter.requires_grad_(False)
        try:
            fit_full_batch(self, batch, self.FIT_STEPS)
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)

    def fit_all(self, start: dict, tensors, train_ids) -> dict:
        """Fit from `start` on every training unit; what the head learned."""
        from ..tasks import gather

        self.load_state_dict(start)
        batch = gather(tensors, list(train_ids))
        self.fit_to(batch)
        self.observe(batch)
        return self.describe()

    @torch.no_grad()
    def observe(self, batch) -> None:
        """After fitting: record what `describe` reports about the training tasks."""


class PooledHead(TowardMIS):
    """Models the decision as similarity to each reference, pooled: a participant compares the
    query with every reference (a learned weight per backbone stage says which features count),
    then pools with a learned sharpness beta: 0 is the mean (MIS), large beta the closest
    reference (nearest exemplar), in between a soft attention to the most similar ones (the
    generalized context model). Its prior pulls beta to 0 (the mean)."""

    BETA_SCALE = 30.0  # beta is learned as BETA_SCALE * exp(log_beta)

    def __init__(self, dim: int, stage_dims=(), shrink: float | None = None, alpha: float = 10.0):
        super().__init__(dim, stage_dims, shrink, alpha)
        self.log_beta = nn.Parameter(torch.tensor(math.log(0.01)))  # ~the mean

    @property
    def beta(self):
        return self.BETA_SCALE * self.log_beta.exp()

    def set_similarity(self, sims, mask, batch=None):
        return pooled_similarity(sims, mask, self.beta)

    def prior_coordinates(self) -> dict:
        return {"log_weight": self.log_weight, "beta": self.beta / self.BETA_SCALE,
                "bias": self.bias}

    def fit_start(self, tensors, train_ids) -> dict:
        start = super().fit_start(tensors, train_ids)
        if self.anchor:  # a checkpoint pooling at the mean (beta ~ 0) has no gradient left in
            # beta (d beta / d log_beta = beta): start where a fresh head does (the prior still
            # pulls toward the checkpoint's beta)
            start["log_beta"] = start["log_beta"].clamp(min=math.log(0.01))
        return start

    def describe(self) -> dict:
        """What the head learned, for a person to read: the rule and the features it uses."""
        beta = float(self.beta.detach())
        return {**super().describe(), "beta": beta,
                "rule": "mean (MIS)" if beta < 1 else
                        "nearest exemplar" if beta > 100 else "soft attention to the closest"}


class DimensionPooledHead(PooledHead):
    """`pooled` with a weight per embedding dimension instead of per stage (LPIPS's learned
    per-channel weights, on every reference): which features a person compares by is learned
    from the answers, not only which stages. It reads the rows it needs of the embedding
    table (`gather` passes it by reference); its full-batch fit holds every training
    reference's embedding once per task (tasks x 18 x dimensions: about 0.5 GB on the
    default), read again at every L-BFGS step.
    At the start, and under a strong prior, it is `pooled` with equal stage weights (MIS)."""

    SHRINK_GRID = (1e-2, 1e-1, 1.0)

    def __init__(self, dim: int, stage_dims=(), shrink: float | None = None, alpha: float = 10.0):
        super().__init__(dim, stage_dims, shrink, alpha)
        self.log_weight = nn.Parameter(torch.zeros(dim))

    def stage_similarities(self, batch):
        table = batch["embeddings"]
        if "ref_embeddings" not in batch:  # kept in the batch: a full-batch fit reads it often
            batch["ref_embeddings"] = table[batch["ref_index"].clamp(min=0)]  # (B, T, 2, R, D)
        queries = table[batch["query_index"]] * self.log_weight.exp()  # (B, T, 2, D)
        sims = torch.einsum("btqd,btsrd->btqsr", queries, batch["ref_embeddings"])
        return sims, batch["ref_mask"].unsqueeze(-3).expand_as(sims)

    def describe(self) -> dict:
        out = super().describe()
        weights = self.log_weight.detach().exp()
        stages = torch.stack([w.mean() for w in weights.split(list(self.stage_dims))])
        out["stage_weights"] = (stages / stages.sum()).tolist()  # mean weight of each stage
        out["dimension_weight_range"] = [float(weights.min()), float(weights.max())]
        return out


