"""Predictors of 2-AFC accuracy from frozen embeddings: every head maps a batch of conditions
(see `tasks.gather`) to P(correct) per task; a condition's prediction is the mean over its tasks.

- `mis`: training-free MIS (Zimmermann, Klindt & Brendel 2024): mean cosine similarities,
  delta = [s(q+,E+) - s(q+,E-)] - [s(q-,E+) - s(q-,E-)], P = sigmoid(alpha * delta), with alpha
  fitted on training tasks.
- `twoafc`: a learned 2-AFC observer: per-dimension weights (or a low-rank projection) of the
  embeddings, the same similarity comparison, a learned decision with temperature, bias and lapse;
  trained on the human trial choices (binomial = summed binary cross-entropy).
- `setreg`: a set model (a shared encoder of the reference-set means and queries, set
  statistics, and an MLP) trained on the per-unit counts with a binomial likelihood, so units
  weigh by their number of responses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


def _masked_mean(x, mask, dim):
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def mis_delta(batch, transform=None):
    """MIS evidence from task summaries. With unit-norm embeddings s(q, E) = q . mean(E), so
    [s(q+,E+) - s(q+,E-)] - [s(q-,E+) - s(q-,E-)] = (q+ - q-) . (mean E+ - mean E-).
    `transform` (a learned map) turns the dot product into a learned similarity."""
    a = batch["q_max"] - batch["q_min"]
    b = batch["mean_max"] - batch["mean_min"]
    if transform is not None:
        a, b = transform(a), transform(b)
    return (a * b).sum(-1)


class MISHead(nn.Module):
    level = "trial"
    options = ()  # hyperparameters create_head passes on

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
    options = ("rank", "reg")

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
        lapse = torch.sigmoid(self.lapse_logit)
        return lapse / 2 + (1 - lapse) * torch.sigmoid(self.log_alpha.exp() * delta + self.bias)

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


HEADS = {"mis": MISHead, "twoafc": TwoAFCHead, "setreg": SetRegHead}


def create_head(name: str, dim: int, **hparams) -> nn.Module:
    """The head `name` for `dim`-dimensional embeddings; of `hparams` (e.g. a checkpoint's
    hyperparameters) it takes only the options that head has."""
    if name not in HEADS:
        raise InputError(f"unknown head {name!r}; valid: {', '.join(HEADS)}")
    head = HEADS[name]
    return head(dim, **{k: hparams[k] for k in head.options if k in hparams})


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
