"""Heads that read every reference learn the decision rule from the answers, and fall back to
MIS when the answers say nothing more."""

import numpy as np
import pandas as pd
import pytest
import torch

from interpscore.metric.heads import (AttentionHead, DimensionPooledHead, LowRankPooledHead,
                                      PooledHead, StageMISHead, mis_delta, pooled_similarity)
from interpscore.data.layouts import Task
from interpscore.metric.tasks import TaskTensors, gather, pad_rows, summarise_tasks


def test_pooling_moves_from_the_mean_to_the_maximum():
    sims = torch.tensor([[0.1, 0.2, 0.9]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert pooled_similarity(sims, mask, torch.tensor(1e-4)).item() == pytest.approx(0.4, abs=1e-3)
    assert pooled_similarity(sims, mask, torch.tensor(500.0)).item() == pytest.approx(0.9, abs=0.01)
    padded = torch.tensor([[0.1, 0.2, 5.0]])  # a padded reference never counts
    assert pooled_similarity(padded, torch.tensor([[True, True, False]]),
                             torch.tensor(1e-4)).item() == pytest.approx(0.15, abs=1e-3)


def test_task_summaries_do_not_depend_on_the_block_and_skip_only_what_mis_does_not_read():
    """A task's summaries are the same bits whether tasks are summarised one at a time or all in
    one block (so a unit's score does not depend on its neighbours), sets of unequal size
    included; without references the queries and means are those bits and the per-reference
    parts are left out. The means and similarities are checked by hand."""
    rng = np.random.default_rng(0)
    emb = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    draw = lambda: rng.choice(30, int(rng.integers(1, 5)), replace=False).tolist()  # noqa: E731
    tasks = [Task(int(a), int(b), draw(), draw()) for a, b in rng.integers(0, 30, (50, 2))]
    one = summarise_tasks(emb, tasks, (3, 5), block=1)
    whole = summarise_tasks(emb, tasks, (3, 5), block=len(tasks))
    assert all(torch.equal(one[k], whole[k]) for k in one)
    lean = summarise_tasks(emb, tasks, (3, 5), references=False, block=7)
    assert lean["ref_sims"] is None and lean["spread_max"] is None and lean["spread_min"] is None
    assert all(torch.equal(lean[k], one[k]) for k in lean if lean[k] is not None)
    unit = (emb / emb.norm(dim=1, keepdim=True)).numpy()
    for i in (0, 7, 49):
        t = tasks[i]
        r = len(t.refs_max)
        np.testing.assert_allclose(one["mean_min"][i], unit[t.refs_min].mean(0), atol=1e-6)
        # the stages' similarities add up to the cosine of the min query to each max reference
        np.testing.assert_allclose(one["ref_sims"][i, 1, 0, :r].sum(-1),
                                   unit[t.refs_max] @ unit[t.query_min], atol=1e-6)
        assert (one["ref_sims"][i, :, 0, r:] == 0).all() and not one["ref_mask"][i, 0, r:].any()


def _world(rule: str, n_tasks=600, n_refs=6, dim=8, seed=0, cue=None, gain=8.0, rotated=False):
    """Random unit embeddings; simulated answers of an observer that decides by `rule` on the
    cosine similarity ('mean': MIS's rule, 'nearest': the closest reference), of the dimensions
    `cue` alone where given. `rotated`: the heads read the embeddings in another basis (one
    fixed rotation), so the observer's cues mix all of their dimensions."""
    rng = np.random.default_rng(seed)
    emb = torch.nn.functional.normalize(
        torch.randn(400, dim, generator=torch.Generator().manual_seed(seed)), dim=1)
    q_max, q_min = rng.integers(0, 400, n_tasks), rng.integers(0, 400, n_tasks)
    refs_max = rng.integers(0, 400, (n_tasks, n_refs))
    refs_min = rng.integers(0, 400, (n_tasks, n_refs))
    seen = torch.ones(dim) if cue is None else torch.zeros(dim).index_fill_(0, torch.tensor(cue), 1)
    sims = lambda q, r: (emb[q][:, None, :] * emb[r] * seen).sum(-1)  # noqa: E731
    pool = (lambda s: s.mean(1)) if rule == "mean" else (lambda s: s.max(1).values)
    delta = (pool(sims(q_max, refs_max)) - pool(sims(q_max, refs_min))
             - pool(sims(q_min, refs_max)) + pool(sims(q_min, refs_min)))
    p = torch.sigmoid(gain * delta).numpy()
    n = np.full(n_tasks, 40)
    k = rng.binomial(n, p)
    if rotated:
        turn = torch.randn(dim, dim, generator=torch.Generator().manual_seed(99))
        emb = emb @ torch.linalg.qr(turn)[0]
    tasks = [Task(*t) for t in zip(q_max.tolist(), q_min.tolist(), refs_max.tolist(),
                                   refs_min.tolist())]
    summaries = summarise_tasks(emb, tasks, (dim // 2, dim // 2))
    per_condition = [list(range(i, i + 4)) for i in range(0, n_tasks, 4)]  # 4 tasks a unit
    his = [k[t].sum() / n[t].sum() for t in per_condition]
    conditions = pd.DataFrame({"unit_id": [f"u{i}" for i in range(len(his))], "his": his,
                               "model": [f"m{i % 3}" for i in range(len(his))],
                               "difficulty": "easy"})
    return TaskTensors(**summaries, n=torch.tensor(n, dtype=torch.float32),
                       k=torch.tensor(k, dtype=torch.float32),
                       condition_tasks=pad_rows(per_condition), conditions=conditions,
                       stage_dims=(dim // 2, dim // 2))


def _fresh_answers_agreement(head, rule: str) -> tuple[float, float]:
    """Correlation of a fitted head's and of MIS's predictions with the answers of a new world
    of the same observer (other images, other tasks)."""
    test = _world(rule, seed=1)
    batch = gather(test, range(len(test.conditions)))
    with torch.no_grad():
        p = head(batch)[batch["task_mask"]].numpy()
    observed = (test.k / test.n).numpy()
    mis = torch.sigmoid(8 * mis_delta(batch))[batch["task_mask"]].numpy()
    return np.corrcoef(p, observed)[0, 1], np.corrcoef(mis, observed)[0, 1]


def test_at_the_start_the_pooled_head_is_mis():
    tensors = _world("mean")
    batch = gather(tensors, range(10))
    head = PooledHead(tensors.dim, tensors.stage_dims)
    assert torch.allclose(head.evidence(batch), mis_delta(batch), atol=0.05)  # near the mean
    with torch.no_grad():
        head.log_beta.fill_(-20.0)  # beta -> 0: exactly MIS's mean similarity
    assert torch.allclose(head.evidence(batch), mis_delta(batch), atol=1e-4)


@pytest.mark.parametrize("rule,sharp", [("nearest", True), ("mean", False)])
def test_the_pooled_head_learns_the_rule_from_the_answers(rule, sharp):
    tensors = _world(rule)
    ids = list(range(len(tensors.conditions)))
    head = PooledHead(tensors.dim, tensors.stage_dims)
    info = head.fit(tensors, ids)
    assert (info["beta"] > 10) == sharp, info  # the nearest rule needs a sharp pooling
    ours, baseline = _fresh_answers_agreement(head, rule)
    assert ours > baseline + 0.1 if sharp else ours > baseline - 0.02


def test_stage_weighted_mis_finds_the_stage_that_matters():
    # An observer that compares images by the second stage's dimensions alone (4..7 of 8):
    # the fitted weight of that stage carries the evidence, the first stage's is near zero.
    tensors = _world("mean", cue=(4, 5, 6, 7), gain=20)
    head = StageMISHead(tensors.dim, tensors.stage_dims)
    head.fit(tensors, range(len(tensors.conditions)))
    first, second = head.weight.detach().tolist()
    assert second > 5 and second > 4 * abs(first), (first, second)
    # The same observer on the first stage's dimensions turns the weights around.
    tensors = _world("mean", cue=(0, 1, 2, 3), gain=20)
    head = StageMISHead(tensors.dim, tensors.stage_dims)
    head.fit(tensors, range(len(tensors.conditions)))
    first, second = head.weight.detach().tolist()
    assert first > 5 and first > 4 * abs(second), (first, second)


def test_at_the_start_the_attention_head_is_mis():
    tensors = _world("mean")
    batch = gather(tensors, range(10))
    head = AttentionHead(tensors.dim, tensors.stage_dims)
    assert torch.allclose(head.evidence(batch), mis_delta(batch), atol=1e-5)  # uniform attention


@pytest.mark.parametrize("rule,focused", [("nearest", True), ("mean", False)])
def test_the_attention_head_learns_where_people_look(rule, focused):
    tensors = _world(rule)
    head = AttentionHead(tensors.dim, tensors.stage_dims)
    info = head.fit(tensors, list(range(len(tensors.conditions))))
    # Uniform attention has entropy 1; the closest references draw it under the nearest rule.
    assert (info["attention_entropy"] < 0.9) == focused, info
    ours, baseline = _fresh_answers_agreement(head, rule)
    assert ours > baseline + 0.05 if focused else ours > baseline - 0.02


def _task_agreement(head, world) -> float:
    """Correlation of a fitted head's predictions with the answers of each task of `world`."""
    batch = gather(world, range(len(world.conditions)))
    observed = (world.k / world.n).numpy()  # tasks in order: 4 a condition, none padded
    with torch.no_grad():
        return np.corrcoef(head(batch)[batch["task_mask"]], observed)[0, 1]


def _cue_world(seed=0):
    """Answers of an observer that compares images by dimensions 0 and 4 alone (one in each
    stage), with the mean rule: no per-stage weighting can single them out."""
    return _world("mean", n_tasks=800, seed=seed, cue=(0, 4), gain=20)


def test_the_dimension_head_starts_at_the_stage_head_and_learns_which_features_count():
    tensors = _cue_world()
    batch = gather(tensors, range(10))
    dims, stages = (DimensionPooledHead(tensors.dim, tensors.stage_dims),
                    PooledHead(tensors.dim, tensors.stage_dims))
    assert torch.allclose(dims.evidence(batch), stages.evidence(batch), atol=1e-5)
    ids = list(range(len(tensors.conditions)))
    dims.fit(tensors, ids)
    stages.fit(tensors, ids)
    weights = dims.log_weight.detach().exp()
    assert weights[[0, 4]].min() > weights[[1, 2, 3, 5, 6, 7]].max()  # the cues, found
    test = _cue_world(seed=1)
    r_dims, r_stages = _task_agreement(dims, test), _task_agreement(stages, test)
    assert r_dims > r_stages + 0.2, (r_dims, r_stages)


def test_the_low_rank_head_learns_features_that_mix_dimensions():
    # The observer's two cues, seen by the heads in a rotated basis: no weight per dimension
    # (nor per stage) can single them out, a learned projection can.
    tensors = _world("mean", n_tasks=800, cue=(0, 4), gain=20, rotated=True)
    ids = list(range(len(tensors.conditions)))
    heads = {"lowrank": LowRankPooledHead(tensors.dim, tensors.stage_dims, rank=2),  # 2 of 8
             "dims": DimensionPooledHead(tensors.dim, tensors.stage_dims),
             "stages": PooledHead(tensors.dim, tensors.stage_dims)}
    info = {name: head.fit(tensors, ids) for name, head in heads.items()}
    assert info["lowrank"]["learned_share"] > 0.5, info["lowrank"]  # it reads the learned space
    test = _world("mean", n_tasks=800, seed=1, cue=(0, 4), gain=20, rotated=True)
    r = {name: _task_agreement(head, test) for name, head in heads.items()}
    assert r["lowrank"] > max(r["dims"], r["stages"]) + 0.15, r


def test_a_shrinkage_the_user_gives_is_kept():
    # The observer takes the closest reference; a prior the user sets this strong holds the
    # head at the mean, where the chosen one would let it learn the maximum.
    tensors = _world("nearest")
    ids = list(range(len(tensors.conditions)))
    info = PooledHead(tensors.dim, tensors.stage_dims, shrink=1e4).fit(tensors, ids)
    assert info["shrink"] == 1e4 and info["beta"] < 1, info
    assert PooledHead(tensors.dim, tensors.stage_dims).fit(tensors, ids)["beta"] > 1


def test_with_its_learned_space_held_off_the_low_rank_head_is_the_pooled_head():
    # The learned space has a prior of its own: at full strength the head is `pooled`, with
    # the same shrinkage chosen and the same rule learned (here the closest reference).
    tensors = _world("nearest")
    ids = list(range(len(tensors.conditions)))
    lowrank = LowRankPooledHead(tensors.dim, tensors.stage_dims, rank=4, shrink_learned=1e4)
    pooled = PooledHead(tensors.dim, tensors.stage_dims)
    info, pooled_info = lowrank.fit(tensors, ids), pooled.fit(tensors, ids)
    assert lowrank.projection.detach().abs().max() < 1e-3
    assert info["shrink"] == pooled_info["shrink"] and info["beta"] > 1, (info, pooled_info)
    batch = gather(tensors, range(20))
    assert torch.allclose(lowrank.evidence(batch), pooled.evidence(batch), atol=1e-3)


def test_the_embedding_table_holds_each_picture_once_and_batches_index_it():
    from interpscore.metric.tasks import build_task_tensors, distinct_rows

    matrix = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4]], dtype=np.float32)
    table, row = distinct_rows(matrix)
    assert len(table) == 3 and (table[row] == matrix).all()
    # Six paths, three pictures: the trial table names copies of one picture by other paths.
    pictures = {f"{name}": v for name, v in zip("abcdef", ([1, 0], [0, 1], [1, 0], [0.6, 0.8],
                                                          [0, 1], [0.6, 0.8]))}
    trials = pd.DataFrame({
        "unit_id": ["u0", "u0", "u1"], "mode": "natural", "difficulty": "easy",
        "query_max": ["a", "a", "d"], "query_min": ["b", "b", "e"],
        "refs_max": [["c", "d"], ["c", "d"], ["a", "f"]], "refs_min": [["e", "f"]] * 3,
        "correct": [True, False, True]})
    conditions = trials.groupby(["unit_id", "mode", "difficulty"]).size().reset_index()
    tensors = build_task_tensors(trials, conditions,
                                 lambda paths: np.array([pictures[p] for p in paths]))
    assert len(tensors.embeddings) == 3
    batch = gather(tensors, [1])  # unit u1: queries d, e; refs a, f | e, f
    rows = batch["embeddings"][batch["ref_index"][0, 0]]  # (2 sets, R, D)
    assert torch.allclose(rows[0], torch.tensor([[1.0, 0.0], [0.6, 0.8]]))
    assert torch.allclose(batch["embeddings"][batch["query_index"][0, 0, 0]],
                          torch.tensor([0.6, 0.8]))


class _ScoredPooledHead(PooledHead):
    """A pooled head whose leave-one-model-out scores per grid value are given, so the choice
    rule is tested on its own."""

    def __init__(self, dim, stage_dims, scores: dict):
        super().__init__(dim, stage_dims)
        self.scores = scores

    def left_out_scores(self, state, tensors, train_ids):
        return np.asarray(self.scores[round(float(state["shrink"]), 6)])


def test_the_prior_strength_is_the_strongest_within_one_standard_error_of_the_best():
    tensors = _world("mean")
    start = PooledHead(tensors.dim, tensors.stage_dims).state_dict()
    models = np.array([0.50, 0.60, 0.70, 0.55, 0.65])  # the strong prior's score per left-out model

    def chosen(weak: list, strong=models) -> float:
        """The strength chosen when the weak prior (1e-3) scores `weak` per left-out model, the
        middle one (1e-2) halfway, and the strong one (1e-1) `strong`."""
        weak, strong = np.asarray(weak, float), np.asarray(strong, float)
        head = _ScoredPooledHead(tensors.dim, tensors.stage_dims,
                                 {1e-3: weak, 1e-2: (weak + strong) / 2, 1e-1: strong})
        state = dict(start)
        head.choose("shrink", head.SHRINK_GRID, state, tensors, [])
        return float(state["shrink"])

    # The weak prior leads by 0.006 on average, less than the standard error of its paired
    # lead (0.009): toward MIS, where taking the best mean would keep the weak prior.
    assert chosen(models + [0.03, -0.01, 0.02, -0.02, 0.01]) == pytest.approx(1e-1)
    # A lead of 0.02 that every left-out model shows is kept, though the models differ by far
    # more than that (an unpaired standard error, 0.05, would call it noise).
    assert chosen(models + [0.021, 0.019, 0.020, 0.022, 0.018]) == pytest.approx(1e-3)
    # Exact ties go to the strongest prior; with one left-out model, the best score wins;
    # with none (one training model), the strongest prior.
    assert chosen(models) == pytest.approx(1e-1)
    assert chosen([0.7], strong=[0.6]) == pytest.approx(1e-3)
    assert chosen([], strong=[]) == pytest.approx(1e-1)


def test_toward_a_checkpoint_a_move_must_beat_holding_it():
    from interpscore.metric.fitting import anchored_choice
    from interpscore.metric.heads.pooled import HOLD

    hold = np.array([0.50, 0.60, 0.70, 0.55, 0.65])  # holding the checkpoint, per left-out model

    def chosen(gain) -> float:
        return anchored_choice((1e-2, HOLD), {1e-2: hold + np.asarray(gain, float), HOLD: hold})

    # A mean gain of 0.12 with a paired standard error of 0.060: t = 1.99, past one standard
    # error (where the one-SE rule moves) but under the one-sided 95 % point of t with 4
    # degrees of freedom (2.13): the checkpoint is held.
    assert chosen([0.10, 0.30, -0.05, 0.20, 0.05]) == HOLD
    # A gain every left-out model shows (mean 0.304, standard error 0.017): the update moves.
    assert chosen([0.30, 0.35, 0.25, 0.30, 0.32]) == pytest.approx(1e-2)
    # One scorable left-out model, however good, or none: nothing to test a move by.
    assert anchored_choice((1e-2, HOLD), {1e-2: np.array([0.9]), HOLD: np.array([0.5])}) == HOLD
    assert anchored_choice((1e-2, HOLD), {1e-2: np.array([]), HOLD: np.array([])}) == HOLD


def test_a_fit_is_deterministic_and_leaves_the_callers_setting_alone():
    # With several threads, the backward pass of a gather with repeated rows sums in a varying
    # order; the fit runs under deterministic algorithms and restores what the caller had.
    from interpscore.metric.fitting import fit_full_batch

    tensors = _world("mean")
    seen = []

    class Recording(PooledHead):
        def forward(self, batch):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super().forward(batch)

    head = Recording(tensors.dim, tensors.stage_dims, shrink=0.1)
    batch = gather(tensors, range(len(tensors.conditions)))
    before = torch.are_deterministic_algorithms_enabled()  # Lightning runs may have set it
    before = before, torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        for callers in ((False, False), (True, False), (True, True)):
            torch.use_deterministic_algorithms(callers[0], warn_only=callers[1])
            seen.clear()
            fit_full_batch(head, batch, 3)
            assert seen and all(seen)
            assert (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled()) == callers
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_a_fit_that_meets_a_non_finite_loss_ends_at_its_best_finite_point():
    # A line search that steps past a cliff (here: no loss beyond bias 3) used to leave every
    # parameter NaN; a learned space's leave-one-model-out fold once overflowed the same way.
    from interpscore.metric.fitting import fit_full_batch
    from interpscore.metric.heads import nll

    tensors = _world("mean")

    class Cliff(PooledHead):
        def regularization(self):
            return super().regularization() + torch.where(
                self.bias > 3, torch.tensor(float("inf")), -self.bias)

    head = Cliff(tensors.dim, tensors.stage_dims, shrink=0.1)
    batch = gather(tensors, range(len(tensors.conditions)))
    with torch.no_grad():
        start = float(nll(head(batch), batch, "trial") + head.regularization())
    fit_full_batch(head, batch, 100)
    assert all(torch.isfinite(p).all() for p in head.parameters())
    assert float(head.bias) <= 3
    with torch.no_grad():
        assert float(nll(head(batch), batch, "trial") + head.regularization()) < start


def test_an_update_from_a_few_units_is_the_checkpoint_and_from_many_moves_it():
    """`--model.init_from`: a head fitted on one population (mean rule) updated with another's
    answers (nearest rule). With too few units for the folds to score anything, the update holds
    the head at the checkpoint exactly; with many, it moves toward the new rule."""
    import copy

    mean, nearest = _world("mean"), _world("nearest", seed=2)
    start = LowRankPooledHead(mean.dim, mean.stage_dims, rank=2)
    start.fit(mean, list(range(len(mean.conditions))))
    batch = gather(nearest, range(len(nearest.conditions)))
    with torch.no_grad():
        before = start(batch)
    few = copy.deepcopy(start)
    few.set_anchor()
    info = few.fit(nearest, [0, 1, 2, 3, 4, 5])  # 2 units a model: no fold can be scored
    assert info["shrink"] == float("inf") and info["shrink_learned"] == float("inf")
    with torch.no_grad():
        assert torch.equal(few(batch), before)
    many = copy.deepcopy(start)
    many.set_anchor()
    many.fit(nearest, list(range(len(nearest.conditions))))
    assert float(many.beta) > float(start.beta) + 5  # toward the nearest exemplar
    assert _fresh_answers_agreement(many, "nearest")[0] > _fresh_answers_agreement(start, "nearest")[0]
