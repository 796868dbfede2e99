"""`pooled_lowrank`: `pooled` plus a similarity in a feature space learned from the answers."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import InputError
from .common import masked_mean
from .pooled import HOLD, PooledHead, holds


class LowRankPooledHead(PooledHead):
    """`pooled` plus a learned similarity: besides the backbone's stages, a person compares the
    query with each reference in a `rank`-dimensional feature space learned from the answers,
    (P q) . (P r), as DreamSim and LPIPS learn a metric from 2-AFC judgments. Unlike
    `pooled_dims` it can find features that mix dimensions. Like `pooled_dims` it reads each
    reference's full embedding (each picture of a batch projected once): on the default its
    fit takes about 40 s; an IMI-sized epoch of gradient steps, 6 s
    (`benchmarks/train_epoch.py`). A prior of its own, `shrink_learned`, pulls P to its anchor
    (zero, where it is `pooled`, or a checkpoint's P): turning the learned space off leaves the
    pooled parts as free as `pooled` leaves them. `describe` reports the learned part's share
    of the similarity differences."""

    options = PooledHead.options + ("rank", "shrink_learned")
    RANK = 16
    # Up to priors that hold P at its anchor (plain `pooled`): the folds can switch it off;
    # toward a checkpoint the grid ends in holding P at the checkpoint's, exactly.
    LEARNED_SHRINK_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    LEARNED_PARTS = ("projection",)
    INIT_NORM = 0.3  # a column's norm at the start: small, but away from the saddle at P = 0

    def __init__(self, dim: int, stage_dims=(), shrink: float | None = None, alpha: float = 10.0,
                 rank: int | None = None, shrink_learned: float | None = None):
        super().__init__(dim, stage_dims, shrink, alpha)
        rank = self.RANK if rank is None else rank
        if rank < 1:
            raise InputError(f"--model.rank {rank}: the learned space needs at least 1 dimension")
        generator = torch.Generator().manual_seed(0)
        self.projection = nn.Parameter(torch.randn(dim, rank, generator=generator)
                                       * self.INIT_NORM / math.sqrt(dim))
        self.given_strengths["shrink_learned"] = shrink_learned
        self.register_buffer("shrink_learned", torch.tensor(
            float(shrink_learned if shrink_learned is not None else 1e-1)))
        self.register_buffer("learned_share", torch.tensor(0.0))

    def anchor_projection(self) -> torch.Tensor:
        """Where the learned space's prior pulls P: zero, or the checkpoint's P."""
        if self.anchor:
            return self.anchor["state"]["projection"]
        return torch.zeros_like(self.projection)

    def fit(self, tensors, train_ids) -> dict:
        """The two strengths one after the other, on the same folds: `shrink` with the learned
        space held at its anchor (for MIS, zero, where this head is `pooled`), then
        `shrink_learned` with `shrink` kept, the learned space starting a little away from its
        anchor (P = 0 is a saddle no gradient leaves)."""
        start = self.fit_start(tensors, train_ids)
        held = self.anchor_projection()
        off = {**start, "projection": held.clone()}
        scores = self.choose("shrink", self.shrink_grid(), off, tensors, train_ids)
        start["shrink"] = off["shrink"]
        if self.anchor:  # the checkpoint's P, nudged as the MIS start is
            start["projection"] = held + self.initial_projection()
        grid = self.LEARNED_SHRINK_GRID + ((HOLD,) if self.anchor else ())
        learned = self.choose("shrink_learned", grid, start, tensors, train_ids)
        return {"shrink_scores": scores, "shrink_learned_scores": learned,
                **self.fit_all(start, tensors, train_ids)}

    def initial_projection(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        dim, rank = self.projection.shape
        return torch.randn(dim, rank, generator=generator) * self.INIT_NORM / math.sqrt(dim)

    def fit_to(self, batch) -> None:
        """Two phases, in every fit alike (each left-out fold and the final one): the pooled
        parts with the learned space held at its anchor, then everything from there with the
        learned space back at its start. A strong prior on P makes a joint fit from the plain
        start stiff, and L-BFGS would stop short of `pooled`'s own rule, handicapping exactly
        the candidates that switch the learned space off."""
        learned = self.projection.detach().clone()
        held = self.anchor_projection()
        with torch.no_grad():
            self.projection.copy_(held)
        self.projection.requires_grad_(False)
        try:
            super().fit_to(batch)
        finally:
            self.projection.requires_grad_(True)
        if torch.equal(learned, held) or holds(self.shrink_learned):  # held at its anchor
            return
        with torch.no_grad():
            self.projection.copy_(learned)
        super().fit_to(batch)

    def learned_similarities(self, batch):
        """(B, T, 2 queries, 2 sets, R) similarities in the learned space."""
        # Each picture the batch shows is projected once, however many tasks show it.
        q_index, r_index = batch["query_index"], batch["ref_index"].clamp(min=0)
        rows, where = torch.cat([q_index.flatten(), r_index.flatten()]).unique(return_inverse=True)
        projected = (batch["embeddings"][rows] @ self.projection)[where]
        queries = projected[:q_index.numel()].view(*q_index.shape, -1)  # (B, T, 2, k)
        refs = projected[q_index.numel():].view(*r_index.shape, -1)  # (B, T, 2, R, k)
        return torch.einsum("btqk,btsrk->btqsr", queries, refs)

    def stage_similarities(self, batch):
        sims, mask = super().stage_similarities(batch)
        return sims + self.learned_similarities(batch), mask

    def regularization(self):
        # The Frobenius norm: the same prior at every rank.
        if holds(self.shrink_learned):  # P sits at its anchor, frozen (`fit_to`)
            return super().regularization()
        distance = self.projection - self.anchor_projection() if self.anchor else self.projection
        return super().regularization() + self.shrink_learned * distance.pow(2).sum()

    @torch.no_grad()
    def observe(self, batch) -> None:
        stages, mask = super().stage_similarities(batch)  # the stages alone
        learned = self.learned_similarities(batch)
        mask = mask & batch["task_mask"][..., None, None, None]  # real references of real tasks

        def spread(s):  # how much a similarity tells references apart
            mean = masked_mean(s, mask, -1).unsqueeze(-1)
            return (s - mean)[mask].abs().mean()

        self.learned_share.fill_(float(spread(learned) / (spread(learned) + spread(stages))))

    def describe(self) -> dict:
        return {**super().describe(), "rank": self.projection.shape[1],
                "shrink_learned": float(self.shrink_learned),
                "learned_share": float(self.learned_share)}
