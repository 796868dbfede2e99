"""Heads trained by gradient steps (Lightning), not fitted in closed form:

- `twoafc`: a learned 2-AFC observer: per-dimension weights (or a low-rank projection) of the
  embeddings, the same similarity comparison as MIS, a learned decision with temperature, bias
  and lapse; trained on the trial choices (binomial = summed binary cross-entropy);
- `setreg`: a set model (a shared encoder of the reference-set means and queries, set
  statistics, and an MLP) trained on the per-unit counts with a binomial likelihood, so units
  weigh by their number of responses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import mis_delta, with_lapse


class TwoAFCHead(nn.Module):
    level = "trial"
    options = ("rank", "reg")
    reads_references = False

    def __init__(self, dim: int, rank: int | None = None, reg: float = 1e-3,
                 alpha: float = 10.0):
        super().__init__()
        self.rank, self.reg = rank, reg
        if rank is None:  # per-dimension weights, starting exactly at MIS
            self.log_weight = nn.Parameter(torch.zeros(dim))
        else:
            generator = torch.Generator().manual_seed(0)
            self.projection = nn.Parameter(torch.randn(dim, rank, generator=generator)
                                           / math.sqrt(dim))
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)))
        self.bias = nn.Parameter(torch.zeros(()))
        self.lapse_logit = nn.Parameter(torch.tensor(-4.0))

    def transform(self, x):
        if self.rank is None:  # sum_d w_d a_d b_d: LPIPS-style per-dimension weights
            return x * (self.log_weight / 2).exp()
        return x @ self.projection

    def forward(self, batch):
        delta = mis_delta(batch, self.transform)
        return with_lapse(self.log_alpha.exp() * delta + self.bias, self.lapse_logit)

    def regularization(self):
        if self.rank is None:
            return self.reg * self.log_weight.pow(2).mean()
        return self.reg * self.projection.pow(2).sum(0).sub(1).pow(2).mean()


class SetRegHead(nn.Module):
    level = "unit"
    options = ("hidden", "dropout", "reg")

    def __init__(self, dim: int, hidden: int = 64, dropout: float = 0.1, reg: float = 1e-3):
        super().__init__()
        self.reg = reg
        self.phi = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden))
        self.rho = nn.Sequential(nn.Linear(3 * hidden + 5, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, batch):
        e_max, e_min = self.phi(batch["mean_max"]), self.phi(batch["mean_min"])
        q_max, q_min = self.phi(batch["q_max"]), self.phi(batch["q_min"])
        contrast = F.cosine_similarity(batch["mean_max"], batch["mean_min"], dim=-1)
        stats = torch.stack([mis_delta(batch), batch["spread_max"], batch["spread_min"],
                             contrast, mis_delta(batch, self.phi)], -1)
        z = torch.cat([e_max - e_min, q_max - q_min, (e_max - e_min) * (q_max - q_min), stats], -1)
        return torch.sigmoid(self.rho(z).squeeze(-1))

    def regularization(self):
        return self.reg * sum(p.pow(2).sum() for n, p in self.named_parameters() if "weight" in n)
