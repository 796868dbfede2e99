"""Exemplars the way the IMI study chose them: references in batches (one image from each
extremeness bin), queries just past the references (easy) or at the hard percentiles (placed
as deep below the references as in IMI's 1.28M images: see `effective_quantile`). Constant
units are dropped (max - min < 1e-8, as MIS does) and units whose references sit inside a tie are
flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.layouts import QUERY_INDEX, Task
from ..errors import InputError
from ..protocol import IMI
from .activations import UnitRanking, collect_rankings
from .networks import LoadedModel
from .units import Unit, unit_seed

DIFFICULTY_PERCENTILES = IMI.hard_percentiles
CONSTANT_RANGE = 1e-8
# IMI took each side's references and easy queries from the top 200 of its pool.
IMI_POOL = IMI.pool_size
IMI_TOP = 200


def effective_quantile(percentile: float, n_images: int, n_top: int) -> float:
    """The quantile of a pool of `n_images` that sits as far below the `n_top` images set aside
    (references and easy queries) as IMI's percentile sat below its top 200, measured in log rank
    as a fraction of the distance from the top to the median. In IMI, hard99 lies 64 times deeper
    than the top 200, hard85 960 times; a pool of thousands has no room for that, and a plain
    percentile would put hard99 right after the easy queries. In an ImageNet-sized pool this is
    the percentile itself."""
    depth = np.log((1 - percentile / 100) * IMI_POOL / IMI_TOP) / np.log(0.5 * IMI_POOL / IMI_TOP)
    rank = n_top * (0.5 * n_images / n_top) ** depth
    return float(1 - rank / n_images)


def check_request(n_refs: int, n_batches: int, difficulties, n_images: int | None = None,
                  difficulty_option: str = "--difficulty") -> None:
    """Before any activation pass: the exemplar request is possible (and for a pool of
    `n_images`, the pool is large enough for it). Messages name the command-line options."""
    if not 1 <= n_refs <= QUERY_INDEX:
        raise InputError(f"--n-refs {n_refs}: must be 1 to {QUERY_INDEX} (the query is image "
                         f"_{QUERY_INDEX})")
    if n_batches < 1:
        raise InputError(f"--n-batches {n_batches}: must be at least 1")
    unknown = [d for d in difficulties if d != "easy" and d not in DIFFICULTY_PERCENTILES]
    if unknown or not difficulties:
        raise InputError(f"{difficulty_option} {','.join(unknown) or '(none)'}: unknown; valid: "
                         f"easy, {', '.join(DIFFICULTY_PERCENTILES)}")
    need = 2 * (n_refs * n_batches + n_batches)
    if n_images is not None and n_images < need:
        raise InputError(f"--images/--pool-size: a pool of {n_images} images is too small for "
                         f"--n-refs {n_refs} x --n-batches {n_batches} (references and queries "
                         f"of both sides need {need}); use a larger pool or fewer references "
                         "or batches")


@dataclass
class UnitExemplars:
    unit: Unit
    refs_max: list[list[int]]  # per batch, n_refs pool indices, most extreme bin first
    refs_min: list[list[int]]
    queries: dict[str, list[tuple[int, int]]]  # difficulty -> per batch (max query, min query)
    flags: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # UnitRanking.activation_stats

    def tasks(self, difficulty: str) -> list[Task]:
        """The unit's tasks at one difficulty, in pool indices: per batch its two queries and
        that batch's references (the only place a task is made from exemplars)."""
        return [Task(q_max, q_min, self.refs_max[b], self.refs_min[b])
                for b, (q_max, q_min) in enumerate(self.queries[difficulty])]


def _pick_references(index: np.ndarray, sources: np.ndarray, n: int, cap: int | None
                     ) -> tuple[list[int], int]:
    """The first n images in rank order, at most `cap` from one source photo where possible.
    Returns the picks and the rank position after the last pick."""
    picked, counts, skipped = [], {}, []
    position = 0
    for position, image in enumerate(index):
        source = sources[image]
        if cap is None or counts.get(source, 0) < cap:
            picked.append(int(image))
            counts[source] = counts.get(source, 0) + 1
        else:
            skipped.append(int(image))
        if len(picked) == n:
            return picked, position + 1
    picked += skipped[: n - len(picked)]  # too few sources: relax the cap
    if len(picked) < n:
        raise InputError(f"the pool yields only {len(picked)} references per side, {n} needed: "
                         "use a larger pool or fewer references/batches")
    return picked, position + 1


def select_exemplars(ranking: UnitRanking, sources: np.ndarray, n_refs: int = IMI.n_refs,
                     n_batches: int = IMI.n_batches, difficulties=("easy",), max_refs_per_source=None,
                     seed: int = 0) -> UnitExemplars | None:
    """References in n_batches batches (one image from each of n_refs extremeness bins of
    n_batches), the query at the next ranks (easy) or at the hard percentiles. None when the unit
    is constant over the pool."""
    check_request(n_refs, n_batches, difficulties, ranking.n_images)
    if ranking.top_value[0] - ranking.bottom_value[0] < CONSTANT_RANGE:
        return None
    n = n_refs * n_batches
    rng = np.random.default_rng(seed)
    sides = {}
    for side, index, value in (("max", ranking.top_index, ranking.top_value),
                               ("min", ranking.bottom_index, ranking.bottom_value)):
        refs, after = _pick_references(index, sources, n, max_refs_per_source)
        if after + n_batches > len(index):  # the cap reached too deep: rank order wins
            refs, after = _pick_references(index, sources, n, None)
        queries = [int(i) for i in index[after:after + n_batches]]
        bins = [rng.permutation(refs[b * n_batches:(b + 1) * n_batches]) for b in range(n_refs)]
        batches = [[int(bins[b][j]) for b in range(n_refs)] for j in range(n_batches)]
        ref_values = value[np.isin(index, refs)]
        query_value = value[after] if after < len(value) else value[-1]
        sides[side] = dict(batches=batches, easy=queries, used=set(refs) | set(queries),
                           tied=bool(np.sum(ref_values == query_value) > 0))
    queries = {}
    for difficulty in difficulties:
        if difficulty == "easy":
            queries["easy"] = list(zip(sides["max"]["easy"], sides["min"]["easy"]))
            continue
        used = sides["max"]["used"] | sides["min"]["used"]
        reservoir = ranking.reservoir_index  # a uniform sample of the pool, by activation
        picks = {}
        for side in ("max", "min"):
            q = effective_quantile(DIFFICULTY_PERCENTILES[difficulty], ranking.n_images,
                                   len(sides[side]["used"]))
            target = (q if side == "max" else 1 - q) * (len(reservoir) - 1)
            order = np.argsort(np.abs(np.arange(len(reservoir)) - target), kind="stable")
            chosen = [int(reservoir[i]) for i in order if int(reservoir[i]) not in used]
            picks[side] = list(rng.permutation(chosen[:n_batches]))
        queries[difficulty] = [(int(a), int(b)) for a, b in zip(picks["max"], picks["min"])]
    flags = dict(ties_cover_max_refs=sides["max"]["tied"], ties_cover_min_refs=sides["min"]["tied"])
    return UnitExemplars(Unit("", 0), sides["max"]["batches"], sides["min"]["batches"], queries,
                         flags)


def build_exemplars(model: LoadedModel, pool, units: list[Unit], n_refs: int = IMI.n_refs,
                    n_batches: int = IMI.n_batches, difficulties=("easy",), max_refs_per_source=None,
                    reservoir_size: int = 4096, batch_size: int = 64, seed: int = 0,
                    progress: bool = True) -> tuple[list[UnitExemplars], dict[Unit, str]]:
    """Exemplars of every unit that has them, plus the dropped units with their reasons."""
    check_request(n_refs, n_batches, difficulties, len(pool))
    rankings = collect_rankings(model, pool, units, keep_for(n_refs, n_batches), reservoir_size,
                                batch_size, seed, progress)
    return select_all(rankings, pool.sources, units, n_refs, n_batches, difficulties,
                      max_refs_per_source, seed)


def keep_for(n_refs: int, n_batches: int) -> int:
    return 3 * (n_refs + 1) * n_batches  # room for the source cap and the easy queries


def select_all(rankings, sources, units, n_refs, n_batches, difficulties, max_refs_per_source,
               seed) -> tuple[list[UnitExemplars], dict[Unit, str]]:
    """Exemplars of each unit that has them, and the others with the reason why not."""
    kept, dropped = [], {}
    for unit in units:
        ranking = rankings[unit]
        if not np.isfinite(np.concatenate([ranking.top_value, ranking.bottom_value])).all():
            dropped[unit] = "non-finite activations"
            continue
        exemplars = select_exemplars(ranking, sources, n_refs, n_batches,
                                     difficulties, max_refs_per_source, unit_seed(seed, unit))
        if exemplars is None:
            dropped[unit] = "constant over the pool"
        else:
            exemplars.unit = unit
            exemplars.stats = ranking.activation_stats()
            kept.append(exemplars)
    return kept, dropped
