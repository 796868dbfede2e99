"""Predictors of 2-AFC accuracy from frozen embeddings: every head maps a batch of conditions
(see `tasks.gather`) to P(correct) per task; a condition's prediction is the mean over its tasks.

- `mis`: training-free MIS (Zimmermann, Klindt & Brendel 2024): mean cosine similarities,
  delta = [s(q+,E+) - s(q+,E-)] - [s(q-,E+) - s(q-,E-)], P = sigmoid(alpha * delta), with alpha
  fitted on training tasks.
- `twoafc`: a learned 2-AFC observer: per-dimension weights (or a low-rank projection) of the
  embeddings, the same similarity comparison, a learned decision with temperature, bias and lapse;
  trained on the human trial choices (binomial = summed binary cross-entropy).
- `setreg`: a set model (DeepSets over the references and queries of each task) trained on the
  per-unit counts with a binomial likelihood, so units weigh by their number of responses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError


def _masked_mean(x, mask, dim):
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def set_similarity(q, refs, mask):
    """Mean cosine similarity of each query (B, T, D) to its reference set (B, T, R, D)."""
    q = F.normalize(q, dim=-1)
    refs = F.normalize(refs, dim=-1)
    return _masked_mean((refs * q.unsqueeze(-2)).sum(-1), mask, -1)


def mis_delta(batch, transform=lambda x: x):
    q_max, q_min = transform(batch["q_max"]), transform(batch["q_min"])
    e_max, e_min = transform(batch["refs_max"]), transform(batch["refs_min"])
    s = lambda q, e, m: set_similarity(q, e, m)  # noqa: E731
    return ((s(q_max, e_max, batch["mask_max"]) - s(q_max, e_min, batch["mask_min"]))
            - (s(q_min, e_max, batch["mask_max"]) - s(q_min, e_min, batch["mask_min"])))


class MISHead(nn.Module):
    level = "trial"

    def __init__(self, dim: int, alpha: float = 10.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def forward(self, batch):
        return torch.sigmoid(self.alpha * mis_delta(batch))

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


class TwoAFCHead(nn.Module):
    level = "trial"

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
        if self.rank is None:
            return x * self.log_weight.exp()
        return x @ self.projection

    def forward(self, batch):
        delta = mis_delta(batch, self.transform)
        lapse = torch.sigmoid(self.lapse_logit)
        return lapse / 2 + (1 - lapse) * torch.sigmoid(self.log_alpha.exp() * delta + self.bias)

    def regularization(self):
        if self.rank is None:
            return self.reg * self.log_weight.pow(2).mean()
        return self.reg * self.projection.pow(2).sum(0).sub(1).pow(2).mean()


class SetRegHead(nn.Module):
    level = "unit"

    def __init__(self, dim: int, hidden: int = 64, dropout: float = 0.1, reg: float = 1e-3):
        super().__init__()
        self.reg = reg
        self.phi = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden))
        self.rho = nn.Sequential(nn.Linear(3 * hidden + 5, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, batch):
        e_max = _masked_mean(self.phi(batch["refs_max"]), batch["mask_max"][..., None], -2)
        e_min = _masked_mean(self.phi(batch["refs_min"]), batch["mask_min"][..., None], -2)
        q_max, q_min = self.phi(batch["q_max"]), self.phi(batch["q_min"])
        spread_max = set_similarity(batch["refs_max"].mean(-2), batch["refs_max"], batch["mask_max"])
        spread_min = set_similarity(batch["refs_min"].mean(-2), batch["refs_min"], batch["mask_min"])
        contrast = F.cosine_similarity(batch["refs_max"].mean(-2), batch["refs_min"].mean(-2), dim=-1)
        stats = torch.stack([mis_delta(batch), spread_max, spread_min, contrast,
                             mis_delta(batch, self.phi)], -1)
        z = torch.cat([e_max - e_min, q_max - q_min, (e_max - e_min) * (q_max - q_min), stats], -1)
        return torch.sigmoid(self.rho(z).squeeze(-1))

    def regularization(self):
        return self.reg * sum(p.pow(2).sum() for n, p in self.named_parameters() if "weight" in n)


HEADS = {"mis": MISHead, "twoafc": TwoAFCHead, "setreg": SetRegHead}


def create_head(name: str, dim: int, **kwargs) -> nn.Module:
    if name not in HEADS:
        raise InputError(f"unknown head {name!r}; valid: {', '.join(HEADS)}")
    return HEADS[name](dim, **kwargs)


def unit_prediction(p_task, batch):
    """A condition's predicted accuracy: the mean over its tasks (tasks are sampled uniformly)."""
    return _masked_mean(p_task, batch["task_mask"], -1)


def nll(p_task, batch, level: str):
    """Binomial negative log-likelihood per trial: of the task counts ('trial') or of the unit
    counts with the unit's mean prediction ('unit')."""
    p = p_task.clamp(1e-6, 1 - 1e-6)
    if level == "trial":
        k, n = batch["k"], batch["n"]
        return -(k * p.log() + (n - k) * (1 - p).log()).sum() / n.sum().clamp(min=1)
    p_unit = unit_prediction(p, batch).clamp(1e-6, 1 - 1e-6)
    k, n = batch["k"].sum(-1), batch["n"].sum(-1)
    return -(k * p_unit.log() + (n - k) * (1 - p_unit).log()).sum() / n.sum().clamp(min=1)
