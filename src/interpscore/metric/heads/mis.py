"""MIS (Zimmermann, Klindt & Brendel 2024), the training-free baseline, and its few-parameter
peer with one weight per backbone stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ..fitting import fit_full_batch
from .common import mis_delta, stage_deltas, with_lapse


class MISHead(nn.Module):
    level = "trial"
    options = ()  # hyperparameters create_head passes on
    reads_references = False  # the queries and the reference means only

    def __init__(self, dim: int, alpha: float = 10.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def forward(self, batch):
        return torch.sigmoid(self.alpha * mis_delta(batch))

    fitted = True  # fitted in closed form on the training units, no gradient steps

    def fit(self, tensors, train_ids, batch_size: int = 256) -> dict:
        from ..tasks import gather

        ids = list(train_ids)
        alpha = self.fit_alpha(gather(tensors, ids[s:s + batch_size])
                               for s in range(0, len(ids), batch_size))
        return {"alpha": alpha}

    @torch.no_grad()
    def fit_alpha(self, batches) -> float:
        """Maximum-likelihood alpha on training tasks (1-D, convex)."""
        from scipy.optimize import minimize_scalar

        deltas, ns, ks = [], [], []
        for batch in batches:
            m = batch["task_mask"]
            deltas.append(mis_delta(batch)[m])
            ns.append(batch["n"][m])
            ks.append(batch["k"][m])
        delta, n, k = torch.cat(deltas).double(), torch.cat(ns).double(), torch.cat(ks).double()

        def nll(alpha):
            logits = alpha * delta
            return float(-(k * F.logsigmoid(logits) + (n - k) * F.logsigmoid(-logits)).sum())

        alpha = minimize_scalar(nll, bounds=(0.0, 1e4), method="bounded").x
        self.alpha.fill_(alpha)
        return float(alpha)

    def regularization(self):
        return torch.zeros(())


class StageMISHead(nn.Module):
    """MIS with one weight per backbone stage, a bias and a lapse: the few-parameter peer of
    every learned head (what a metric gains beyond this, it gains from more than reweighting
    low- against high-level similarity)."""

    level = "trial"
    options = ("stage_dims",)
    reads_references = False

    def __init__(self, dim: int, stage_dims=(), alpha: float = 10.0):
        super().__init__()
        self.stage_dims = tuple(stage_dims) or (dim,)
        if sum(self.stage_dims) != dim:
            raise InputError(f"stage widths {self.stage_dims} do not add up to {dim}")
        n = len(self.stage_dims)
        self.weight = nn.Parameter(torch.full((n,), alpha))  # starts at MIS (equal weights)
        self.bias = nn.Parameter(torch.zeros(()))
        self.lapse_logit = nn.Parameter(torch.tensor(-4.0))

    def forward(self, batch):
        logits = (stage_deltas(batch, self.stage_dims) * self.weight).sum(-1) + self.bias
        return with_lapse(logits, self.lapse_logit)

    fitted = True

    def fit(self, tensors, train_ids, steps: int = 200) -> dict:
        """Maximum likelihood on the training tasks (full batch, L-BFGS)."""
        from ..tasks import gather

        fit_full_batch(self, gather(tensors, list(train_ids)), steps)
        return {"stage_weights": self.weight.detach().tolist(), "bias": float(self.bias.detach())}

    def regularization(self):
        return torch.zeros(())
