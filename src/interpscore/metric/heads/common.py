"""What every head shares: the MIS evidence, the lapse, the pooling of similarities, and the
binomial likelihood a condition's predictions are scored with."""

from __future__ import annotations

import torch


def masked_mean(x, mask, dim):
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


def with_lapse(logits, lapse_logit):
    """P(correct) of a decision that lapses (guesses) at rate sigmoid(lapse_logit)."""
    lapse = torch.sigmoid(lapse_logit)
    return lapse / 2 + (1 - lapse) * torch.sigmoid(logits)


def stage_deltas(batch, stage_dims) -> torch.Tensor:
    """MIS evidence of each backbone stage separately: (..., S). Their sum is `mis_delta`."""
    a = batch["q_max"] - batch["q_min"]
    b = batch["mean_max"] - batch["mean_min"]
    return torch.stack([(x * y).sum(-1) for x, y in zip(a.split(list(stage_dims), -1),
                                                         b.split(list(stage_dims), -1))], -1)


def pooled_similarity(sims, mask, beta):
    """(1/beta) log mean_r exp(beta * sims_r) over the references that exist: the mean of the
    similarities at beta -> 0 (MIS's rule), their maximum as beta grows (nearest exemplar)."""
    # Written around the mean and the largest deviation with expm1/log1p, so that it is exact
    # in float32 both near beta = 0 (the mean) and for a large beta (no overflow).
    beta = beta.clamp(min=1e-6)
    maskf = mask.to(sims.dtype)
    count = maskf.sum(-1).clamp(min=1)
    mean = (sims * maskf).sum(-1) / count
    deviation = (sims - mean.unsqueeze(-1)) * maskf
    top = deviation.masked_fill(~mask, float("-inf")).amax(-1).clamp(min=0)
    inner = (torch.expm1(beta * (deviation - top.unsqueeze(-1))) * maskf).sum(-1) / count
    return mean + top + torch.log1p(inner) / beta


def unit_prediction(p_task, batch):
    """A condition's predicted accuracy: the mean over its tasks (tasks are sampled uniformly)."""
    return masked_mean(p_task, batch["task_mask"], -1)


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
