"""Predictors of 2-AFC accuracy from frozen embeddings: every head maps a batch of conditions
(see `tasks.gather`) to P(correct) per task; a condition's prediction is the mean over its tasks.

A new head is one class and one line in `HEADS`: a module with `level` ('trial' or 'unit'),
`options` (the hyperparameters `create_head` passes on), and either `fitted = True` with a
`fit(tensors, train_ids)` (closed form on the training units) or gradient steps through
`regularization()`. A head that reads only the queries and the reference-set means says so
with `reads_references = False`: the scorer then summarises its tasks without each reference's
similarities and the sets' spreads (`tasks.summarise_tasks`). The doors are `create_head` and
`list_heads`.
"""

from __future__ import annotations

from ...errors import InputError
from .attention import AttentionHead
from .common import mis_delta, nll, pooled_similarity, stage_deltas, unit_prediction, with_lapse
from .learned import SetRegHead, TwoAFCHead
from .lowrank import LowRankPooledHead
from .mis import MISHead, StageMISHead
from .pooled import DimensionPooledHead, PooledHead, TowardMIS

HEADS = {
    "mis": MISHead,  # training-free MIS, its temperature fitted
    "stagemis": StageMISHead,  # a weight per backbone stage, a bias, a lapse
    "pooled": PooledHead,  # every reference, a learned pooling rule
    "pooled_dims": DimensionPooledHead,  # pooled, a weight per embedding dimension
    "pooled_lowrank": LowRankPooledHead,  # pooled plus a learned feature space
    "attention": AttentionHead,  # query-conditioned attention over the references
    "twoafc": TwoAFCHead,  # per-dimension weights by gradient steps
    "setreg": SetRegHead,  # a set regressor on per-unit counts
}


def list_heads() -> list[str]:
    return list(HEADS)


def create_head(name: str, dim: int, **hparams):
    """The head `name` for `dim`-dimensional embeddings; of `hparams` (e.g. a checkpoint's
    hyperparameters) it takes only the options that head has."""
    if name not in HEADS:
        raise InputError(f"--model.head {name}: unknown head; valid: {', '.join(list_heads())}")
    head = HEADS[name]
    return head(dim, **{k: hparams[k] for k in head.options if k in hparams})


__all__ = ["HEADS", "AttentionHead", "DimensionPooledHead", "LowRankPooledHead", "MISHead",
           "PooledHead", "SetRegHead", "StageMISHead", "TowardMIS", "TwoAFCHead", "create_head",
           "list_heads", "mis_delta", "nll", "pooled_similarity", "stage_deltas",
           "unit_prediction", "with_lapse"]
