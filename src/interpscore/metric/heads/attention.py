"""`attention`: which references a person looks at, given the query."""

from __future__ import annotations

import torch
from torch import nn

from .pooled import TowardMIS


class AttentionHead(TowardMIS):
    """Models which references a person looks at, given the query: attention over the
    references, softmax of a similarity with its *own* stage weights (a participant may look
    for references that resemble the query in colour, then judge them on object identity), and
    the set similarity is the attended mean of the value similarities. With zero attention
    weights it attends to every reference equally: MIS; its prior pulls them to zero.
    `describe` reports the attention's entropy on the training tasks (1 = uniform, the mean
    rule; 0 = one reference, nearest exemplar)."""

    ATTENTION_SCALE = 10.0  # an attention weight of 1 is a softmax of 10 x the cosine

    def __init__(self, dim: int, stage_dims=(), shrink: float | None = None, alpha: float = 10.0):
        super().__init__(dim, stage_dims, shrink, alpha)
        self.attend = nn.Parameter(torch.zeros(len(self.stage_dims)))
        self.register_buffer("entropy", torch.tensor(1.0))

    def attention(self, batch, mask):
        # ref_sims hold per-stage cosines divided by the stage count: rescaled to cosines.
        stages = batch["ref_sims"].shape[-1]
        logits = (batch["ref_sims"] * self.attend).sum(-1) * stages * self.ATTENTION_SCALE
        return logits.masked_fill(~mask, float("-inf")).softmax(-1)

    def set_similarity(self, sims, mask, batch=None):
        return (self.attention(batch, mask) * sims).sum(-1)

    def prior_coordinates(self) -> dict:
        return {"log_weight": self.log_weight, "attend": self.attend, "bias": self.bias}

    @torch.no_grad()
    def observe(self, batch) -> None:
        sims, mask = self.stage_similarities(batch)
        a = self.attention(batch, mask)
        entropy = -(a * a.clamp(min=1e-12).log()).sum(-1) / mask.sum(-1).clamp(min=2).log()
        tasks = batch["task_mask"][..., None, None].expand_as(entropy)
        self.entropy.fill_(float(entropy[tasks].mean()))

    def describe(self) -> dict:
        entropy = float(self.entropy)
        return {**super().describe(), "attention_weights": self.attend.detach().tolist(),
                "attention_entropy": entropy,
                "rule": "mean (MIS)" if entropy > 0.97 else
                        "nearest exemplar" if entropy < 0.2 else "attention to a few references"}
