"""Predictors of 2-AFC accuracy from frozen embeddings: every head maps a batch of conditions
(see `tasks.gather`) to P(correct) per task; a condition's prediction is the mean over its tasks.

- `mis`: training-free MIS (Zimmermann, Klindt & Brendel 2024): mean cosine similarities,
  delta = [s(q+,E+) - s(q+,E-)] - [s(q-,E+) - s(q-,E-)], P = sigmoid(alpha * delta), with alpha
  fitted on training tasks.
- `stagemis`: MIS with one weight per backbone stage, a bias and a lapse (a few-parameter peer).
- `pooled`: reads every reference: per-stage weighted similarity of a query to each reference,
  pooled with a learned sharpness between the mean (MIS) and the maximum (nearest exemplar);
  shrunk toward MIS with a strength chosen by leave-one-model-out on the training units.
- `pooled_dims`: `pooled` with a weight per embedding dimension instead of per stage.
- `pooled_lowrank`: `pooled` plus a similarity in a low-rank feature space learned from the
  answers (metric learning on every reference, as DreamSim and LPIPS).
- `attention`: reads every reference: query-conditioned attention over the references (its own
  stage weights say what draws a person's eye), the attended mean of the similarities; shrunk
  toward MIS like `pooled`.
- `twoafc`: a learned 2-AFC observer: per-dimension weights (or a low-rank projection) of the
  embeddings, the same similarity comparison, a learned decision with temperature, bias and lapse;
  trained on the human trial choices (binomial = summed binary cross-entropy).
- `setreg`: a set model (a shared encoder of the reference-set means and queries, set
  statistics, and an MLP) trained on the per-unit counts with a binomial likelihood, so units
  weigh by their number of responses.
"""

from __future__ import annotations

import math

import numpy as np
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

    fitted = True  # fitted in closed form on the training units, no gradient steps

    def fit(self, tensors, train_ids, batch_size: int = 256) -> dict:
        from .tasks import gather

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


def with_lapse(logits, lapse_logit):
    """P(correct) of a decision that lapses (guesses) at rate sigmoid(lapse_logit)."""
    lapse = torch.sigmoid(lapse_logit)
    return lapse / 2 + (1 - lapse) * torch.sigmoid(logits)


def fit_full_batch(head: nn.Module, batch, steps: int) -> nn.Module:
    """Maximum a posteriori of a fitted head on one batch of training conditions (full batch,
    L-BFGS): the trial likelihood plus the head's prior. Deterministic: with several threads
    the backward pass of a gather with repeated rows (a learned space projects each picture
    once, then reads it for every task) sums in a varying order, and L-BFGS turns those 1e-11
    differences into different fits, so it runs under PyTorch's deterministic algorithms
    whoever calls it (Lightning's `deterministic: true` covers `python train.py` only), and
    gives the caller's setting back. Deterministic on one machine with one thread count.

    A line search that reaches a non-finite loss leaves L-BFGS with NaN parameters, or with a
    step too large for float32 (a RuntimeError, seen in a leave-one-model-out fold of a
    learned space); then the head ends at the best finite point the fit evaluated. Fits that
    end well are left as L-BFGS leaves them."""
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


def stage_deltas(batch, stage_dims) -> torch.Tensor:
    """MIS evidence of each backbone stage separately: (..., S). Their sum is `mis_delta`."""
    a = batch["q_max"] - batch["q_min"]
    b = batch["mean_max"] - batch["mean_min"]
    return torch.stack([(x * y).sum(-1) for x, y in zip(a.split(list(stage_dims), -1),
                                                         b.split(list(stage_dims), -1))], -1)


class StageMISHead(nn.Module):
    """MIS with one weight per backbone stage, a bias and a lapse: the few-parameter peer of
    every learned head (what a metric gains beyond this, it gains from more than reweighting
    low- against high-level similarity)."""

    level = "trial"
    options = ("stage_dims",)

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
        from .tasks import gather

        fit_full_batch(self, gather(tensors, list(train_ids)), steps)
        return {"stage_weights": self.weight.detach().tolist(), "bias": float(self.bias.detach())}

    def regularization(self):
        return torch.zeros(())


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


class TowardMIS(nn.Module):
    """The common frame of the per-reference heads: evidence from every query-reference
    similarity (stage by stage), the MIS contrast, a temperature, a bias and a lapse, and a prior
    that pulls every learned part back to MIS. Subclasses say how references become a set
    similarity (`set_similarity`) and what their prior pulls (`prior`).

    Shrinkage: `shrink` sets the prior's strength; unless given, `fit` chooses it by
    leave-one-model-out on the training units (never the test units), taking the strongest
    prior that scores within one standard error of the best, so with little data to learn
    from the head stays MIS with its fitted temperature."""

    level = "trial"
    options = ("stage_dims", "shrink")
    fitted = True
    SHRINK_GRID = (1e-3, 1e-2, 1e-1)
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

    def set_similarity(self, sims, mask, batch=None):
        """sims (..., R) of a query to each reference of a set (stages already weighted),
        mask (..., R) -> (...); `batch` for rules that look at more than the similarities."""
        raise NotImplementedError

    def prior(self):
        """Squared distance from MIS of the subclass's own parameters."""
        raise NotImplementedError

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
        """The prior toward MIS (equal stage weights, the head's own parts at MIS, no bias)."""
        return self.shrink * (self.log_weight.pow(2).mean() + self.prior() + self.bias.pow(2))

    def describe(self) -> dict:
        weights = self.log_weight.detach().exp()
        return {"stage_weights": (weights / weights.sum()).tolist(),
                "alpha": float(self.log_alpha.detach().exp()), "bias": float(self.bias.detach()),
                "lapse": float(torch.sigmoid(self.lapse_logit.detach())),
                "shrink": float(self.shrink)}

    def fit(self, tensors, train_ids) -> dict:
        """Choose the shrinkage by leave-one-model-out on the training units (see `choose`),
        then fit on all of them."""
        start = self.fit_start(tensors, train_ids)
        scores = self.choose("shrink", self.SHRINK_GRID, start, tensors, train_ids)
        return {"shrink_scores": scores, **self.fit_all(start, tensors, train_ids)}

    def fit_start(self, tensors, train_ids) -> dict:
        """The state every fit starts from: the head as built, at MIS's fitted temperature."""
        start = {k: v.clone() for k, v in self.state_dict().items()}
        alpha = MISHead(tensors.dim).fit(tensors, train_ids)["alpha"]
        start["log_alpha"] = torch.tensor(math.log(max(alpha, 1e-3)))
        return start

    def choose(self, name: str, grid, start: dict, tensors, train_ids) -> dict:
        """Set the prior strength `name` (a buffer) in `start`: the strength the user gave, or
        else, by leave-one-model-out on the training units, the strongest prior of the grid
        whose score is within one standard error of the best score (the one-standard-error
        rule): grid values that the left-out models cannot tell apart are decided toward the
        simpler head (MIS, or for a learned space `pooled`), not by noise. The standard error
        is that of the paired difference to the best value over the left-out models. Returns
        the grid's mean scores."""
        given = self.given_strengths.get(name)
        grid = (given,) if given is not None else grid
        if len(grid) == 1:
            start[name] = torch.tensor(float(grid[0]))
            return {grid[0]: None}
        values = {value: self.left_out_scores({**start, name: torch.tensor(float(value))},
                                              tensors, train_ids)
                  for value in grid}
        scores = {value: float(v.mean()) if len(v) else 0.0 for value, v in values.items()}
        best = max(scores, key=lambda k: (scores[k], k))

        def close_to_best(value) -> bool:
            difference = values[best] - values[value]
            if len(difference) < 2:
                return value == best
            return difference.mean() <= difference.std(ddof=1) / math.sqrt(len(difference))

        start[name] = torch.tensor(float(max(v for v in grid if close_to_best(v))))
        return scores

    def left_out_scores(self, state: dict, tensors, train_ids) -> np.ndarray:
        """Leave-one-model-out from `state` on the training units: per left-out model, the mean
        over its difficulties of the Spearman correlation of its units (difficulties share
        their units' references, so a model is one independent value; empty with fewer than
        2 models)."""
        from scipy.stats import spearmanr

        from .tasks import gather

        units = tensors.conditions.iloc[list(train_ids)]
        models = sorted(units["model"].unique())
        values = []
        for model in models if len(models) > 1 else []:
            fit_ids = [i for i, m in zip(train_ids, units["model"]) if m != model]
            held = [i for i, m in zip(train_ids, units["model"]) if m == model]
            self.load_state_dict(state)
            self.fit_to(gather(tensors, fit_ids))
            with torch.no_grad():
                batch = gather(tensors, held)
                predicted = unit_prediction(self(batch), batch).numpy()
            held_units = tensors.conditions.iloc[held]
            per_difficulty = [spearmanr(group["p"], group["his"])[0] for _, group in
                              held_units.assign(p=predicted).groupby("difficulty")
                              if len(group) >= 3]
            if per_difficulty:
                values.append(float(np.mean([r if r == r else 0.0 for r in per_difficulty])))
        return np.asarray(values, dtype=float)

    def fit_to(self, batch) -> None:
        """One fit of the head on a batch of conditions, from its present state: the same
        procedure for every left-out fold and the final fit."""
        fit_full_batch(self, batch, self.FIT_STEPS)

    def fit_all(self, start: dict, tensors, train_ids) -> dict:
        """Fit from `start` on every training unit; what the head learned."""
        from .tasks import gather

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

    def prior(self):
        return (self.beta / self.BETA_SCALE).pow(2)

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


class LowRankPooledHead(PooledHead):
    """`pooled` plus a learned similarity: besides the backbone's stages, a person compares the
    query with each reference in a `rank`-dimensional feature space learned from the answers,
    (P q) . (P r), as DreamSim and LPIPS learn a metric from 2-AFC judgments. Unlike
    `pooled_dims` it can find features that mix dimensions. Like `pooled_dims` it reads each
    reference's full embedding (each picture of a batch projected once): on the default its
    fit takes about 40 s; an IMI-sized epoch of gradient steps, 6 s
    (`benchmarks/train_epoch.py`). A prior of its own, `shrink_learned`, pulls P to zero, where
    it is `pooled`: turning the learned space off leaves the pooled parts as free as `pooled`
    leaves them. `describe` reports the learned part's share of the similarity differences."""

    options = PooledHead.options + ("rank", "shrink_learned")
    RANK = 16
    # Up to priors that hold P at 0 (plain `pooled`): leave-one-model-out can switch it off.
    LEARNED_SHRINK_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
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

    def fit(self, tensors, train_ids) -> dict:
        """The two strengths one after the other, by leave-one-model-out: `shrink` with the
        learned space held at zero (where this head is `pooled`: no gradient leaves P = 0),
        then `shrink_learned` with `shrink` kept."""
        start = self.fit_start(tensors, train_ids)
        off = {**start, "projection": torch.zeros_like(start["projection"])}
        scores = self.choose("shrink", self.SHRINK_GRID, off, tensors, train_ids)
        start["shrink"] = off["shrink"]
        learned = self.choose("shrink_learned", self.LEARNED_SHRINK_GRID, start, tensors,
                              train_ids)
        return {"shrink_scores": scores, "shrink_learned_scores": learned,
                **self.fit_all(start, tensors, train_ids)}

    def fit_to(self, batch) -> None:
        """Two phases, in every fit alike (each left-out fold and the final one): the pooled
        parts with the learned space at zero (where no gradient moves it), then everything
        from there with the learned space back at its start. A strong prior on P makes a
        joint fit from the plain start stiff, and L-BFGS would stop short of `pooled`'s own
        rule, handicapping exactly the candidates that switch the learned space off."""
        learned = self.projection.detach().clone()
        with torch.no_grad():
            self.projection.zero_()
        super().fit_to(batch)
        if not learned.any():  # held at zero (choosing `shrink`): the first phase is all
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
        return super().regularization() + self.shrink_learned * self.projection.pow(2).sum()

    @torch.no_grad()
    def observe(self, batch) -> None:
        stages, mask = super().stage_similarities(batch)  # the stages alone
        learned = self.learned_similarities(batch)
        mask = mask & batch["task_mask"][..., None, None, None]  # real references of real tasks

        def spread(s):  # how much a similarity tells references apart
            mean = _masked_mean(s, mask, -1).unsqueeze(-1)
            return (s - mean)[mask].abs().mean()

        self.learned_share.fill_(float(spread(learned) / (spread(learned) + spread(stages))))

    def describe(self) -> dict:
        return {**super().describe(), "rank": self.projection.shape[1],
                "shrink_learned": float(self.shrink_learned),
                "learned_share": float(self.learned_share)}


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

    def prior(self):
        return self.attend.pow(2).mean()

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


HEADS = {"mis": MISHead, "stagemis": StageMISHead, "pooled": PooledHead,
         "pooled_dims": DimensionPooledHead, "pooled_lowrank": LowRankPooledHead,
         "attention": AttentionHead, "twoafc": TwoAFCHead,
         "setreg": SetRegHead}


def create_head(name: str, dim: int, **hparams) -> nn.Module:
    """The head `name` for `dim`-dimensional embeddings; of `hparams` (e.g. a checkpoint's
    hyperparameters) it takes only the options that head has."""
    if name not in HEADS:
        raise InputError(f"--model.head {name}: unknown head; valid: {', '.join(HEADS)}")
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
