"""2-AFC stimuli for units of any vision network, the way the IMI study built them.

One forward pass over the image pool with hooks on all needed layers at once; each hook keeps only
what exemplar selection needs (streaming top/bottom ranks and a fixed-size uniform reservoir for the
hard-query percentiles), so memory does not grow with the pool. Ties are broken randomly, constant
units are dropped (max - min < 1e-8, as MIS does), and units whose references sit inside a tie are
flagged.
"""

from __future__ import annotations

import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .models import LoadedModel, channel_maps, check_layers, module_depths, spatial_contrast

# Query percentiles of the hard conditions (the max query at P, the min query at 100 - P).
DIFFICULTY_PERCENTILES = {"hard85": 85.0, "hard95": 95.0, "hard99": 99.0}
QUERY_INDEX = 9  # file index of the query in the stimulus store (`_0.._8` are references)
CONSTANT_RANGE = 1e-8


@dataclass(frozen=True, order=True)
class Unit:
    layer: str
    channel: int


@dataclass
class UnitRanking:
    """What the activation pass keeps of one unit (pool indices and their activations)."""

    top_index: np.ndarray  # most activating first
    top_value: np.ndarray
    bottom_index: np.ndarray  # least activating first
    bottom_value: np.ndarray
    reservoir_index: np.ndarray  # a uniform sample of the pool, sorted by activation
    reservoir_value: np.ndarray
    n_images: int
    spatial_contrast: float = float("nan")  # mean over images (see models.spatial_contrast)

    def activation_stats(self) -> dict:
        """Statistics the IMI authors related to interpretability: sparsity (the fraction of
        images activating the unit less than a tenth of its range above its minimum, from the
        uniform reservoir) and local spatial contrast."""
        low, high = self.bottom_value[0], self.top_value[0]
        sparsity = float(np.mean(self.reservoir_value < low + 0.1 * (high - low)))
        return {"act_sparsity": sparsity, "act_spatial_contrast": float(self.spatial_contrast)}


@dataclass
class UnitExemplars:
    unit: Unit
    refs_max: list[list[int]]  # per batch, n_refs pool indices, most extreme bin first
    refs_min: list[list[int]]
    queries: dict[str, list[tuple[int, int]]]  # difficulty -> per batch (max query, min query)
    flags: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # UnitRanking.activation_stats


def layer_channels(model: LoadedModel, layers: list[str], image_size: int) -> dict[str, int]:
    """Number of channels (units) of each layer, from one forward pass of a dummy image."""
    import torch

    check_layers(model.module, layers)
    modules = dict(model.module.named_modules())
    sizes, hooks = {}, []
    for layer in layers:
        def hook(module, _inputs, output, layer=layer):
            sizes[layer] = int(channel_maps(module, output).shape[1])
        hooks.append(modules[layer].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.module(torch.zeros(1, 3, image_size, image_size, device=model.device))
    finally:
        for handle in hooks:
            handle.remove()
    return {layer: sizes[layer] for layer in layers}


def sample_units(channels: dict[str, int], n_units: int | None, seed: int) -> list[Unit]:
    """IMI sampling: a layer uniformly, then a channel uniformly in it; no duplicates.
    `n_units=None` takes every channel of every layer."""
    if n_units is None:
        return [Unit(layer, c) for layer, n in channels.items() for c in range(n)]
    total = sum(channels.values())
    if n_units > total:
        raise InputError(f"asked for {n_units} units, the layers hold only {total}")
    rng = np.random.default_rng(seed)
    layers = list(channels)
    chosen: dict[Unit, None] = {}
    while len(chosen) < n_units:
        layer = layers[rng.integers(len(layers))]
        chosen.setdefault(Unit(layer, int(rng.integers(channels[layer]))))
    return list(chosen)


def unit_seed(seed: int, unit: Unit) -> int:
    """A per-unit seed: a unit's exemplars do not depend on which other units are scored."""
    return zlib.crc32(f"{seed}:{unit.layer}:{unit.channel}".encode())


def tie_keys(values, image_index, channels, layer: str, seed: int):
    """Activations as float64 sort keys with a pseudo-random jitter far below float32 resolution,
    a fixed function of (image, unit, seed): ties break randomly, yet identically in every pass,
    shard and merge. values (U, B), image_index (B,), channels (U,)."""
    import torch

    salt = zlib.crc32(f"{seed}:{layer}".encode()) % 10007
    phase = (image_index.double()[None, :] * 12.9898 + channels.double()[:, None] * 78.233
             + salt * 0.618)
    jitter = torch.frac(torch.sin(phase) * 43758.5453).abs()
    values = torch.as_tensor(values).double()
    return values + jitter * 1e-12 * values.abs().clamp(min=1.0)


class _StreamingRanks:
    """Top-k and bottom-k (activation, pool index) per unit, updated batch by batch."""

    def __init__(self, n_units: int, keep: int):
        import torch

        self.keep = keep
        empty = lambda dtype: torch.empty(n_units, 0, dtype=dtype)  # noqa: E731
        self.top = [empty(torch.float64), empty(torch.float32), empty(torch.int64)]
        self.bottom = [empty(torch.float64), empty(torch.float32), empty(torch.int64)]

    def update(self, keys, values, index) -> None:
        import torch

        for state, largest in ((self.top, True), (self.bottom, False)):
            key = torch.cat([state[0], keys], 1)
            value = torch.cat([state[1], values], 1)
            idx = torch.cat([state[2], index.expand(keys.shape[0], -1)], 1)
            k = min(self.keep, key.shape[1])
            key, order = key.topk(k, dim=1, largest=largest, sorted=True)
            state[:] = [key, value.gather(1, order), idx.gather(1, order)]


def collect_rankings(model: LoadedModel, pool, units: list[Unit], keep: int,
                     reservoir_size: int = 4096, batch_size: int = 64, seed: int = 0,
                     progress: bool = True, indices=None) -> dict[Unit, UnitRanking]:
    """One pass over the pool (or the pool positions `indices`, a shard of it) for all units,
    all their layers hooked at once. Images the pool cannot read (None) are skipped."""
    import torch
    from tqdm.auto import tqdm

    layers = sorted({u.layer for u in units})
    check_layers(model.module, layers)
    modules = dict(model.module.named_modules())
    per_layer = {layer: [u for u in units if u.layer == layer] for layer in layers}
    channel_index = {layer: torch.tensor([u.channel for u in us]) for layer, us in per_layer.items()}
    ranks = {layer: _StreamingRanks(len(us), keep) for layer, us in per_layer.items()}
    reservoir_index = np.empty(0, np.int64)
    reservoir_value = {layer: torch.empty(0, len(us)) for layer, us in per_layer.items()}
    captured: dict[str, torch.Tensor] = {}
    contrast_sum = {layer: torch.zeros(len(us), dtype=torch.float64) for layer, us in per_layer.items()}
    hooks = []
    for layer in layers:
        def hook(module, _inputs, output, layer=layer):
            maps = channel_maps(module, output)
            maps = maps[:, channel_index[layer].to(maps.device)].float()
            captured[layer] = maps.mean(2).cpu()
            contrast_sum[layer] += spatial_contrast(maps).double().sum(0).cpu()
        hooks.append(modules[layer].register_forward_hook(hook))

    rng = np.random.default_rng(seed)
    mean = torch.tensor(model.mean, device=model.device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, device=model.device).view(1, 3, 1, 1)
    positions = list(range(len(pool)) if indices is None else indices)
    seen = 0
    try:
        with torch.no_grad(), tqdm(total=len(positions), desc=f"activations {model.label}",
                                   unit="img", disable=not progress) as bar:
            for start in range(0, len(positions), batch_size):
                chunk = positions[start:start + batch_size]
                bar.update(len(chunk))
                loaded = [(i, pool[i]) for i in chunk]
                loaded = [(i, image) for i, image in loaded if image is not None]
                if not loaded:
                    continue
                index = torch.tensor([i for i, _ in loaded])
                images = torch.stack([image for _, image in loaded]).to(model.device)
                model.module((images.float() / 255.0 - mean) / std)
                # Algorithm R, shared by all units: which pool images enter the reservoir.
                slots = []
                for i in index.tolist():
                    if seen < reservoir_size:
                        slots.append(seen)
                    else:
                        j = int(rng.integers(0, seen + 1))
                        slots.append(j if j < reservoir_size else -1)
                    seen += 1
                slots = np.array(slots)
                # Two images of one batch may draw the same slot: the later one wins.
                _, last = np.unique(slots[::-1], return_index=True)
                repeated = np.ones(len(slots), bool)
                repeated[len(slots) - 1 - last] = False
                slots[repeated] = -1
                grow = slots >= len(reservoir_index)
                reservoir_index = np.concatenate([reservoir_index, np.full(grow.sum(), -1)])
                reservoir_index[slots[slots >= 0]] = index.numpy()[slots >= 0]
                for layer in layers:
                    values = captured.pop(layer)  # (B, U)
                    keys = tie_keys(values.T, index, channel_index[layer], layer, seed)
                    ranks[layer].update(keys, values.T, index.view(1, -1))
                    res = reservoir_value[layer]
                    if grow.any():
                        res = torch.cat([res, torch.zeros(int(grow.sum()), res.shape[1])])
                    res[torch.from_numpy(slots[slots >= 0])] = values[torch.from_numpy(slots >= 0)]
                    reservoir_value[layer] = res
    finally:
        for handle in hooks:
            handle.remove()

    out = {}
    for layer, us in per_layer.items():
        top, bottom = ranks[layer].top, ranks[layer].bottom
        for k, unit in enumerate(us):
            res_value = reservoir_value[layer][:, k].numpy()
            order = np.argsort(res_value, kind="stable")
            out[unit] = UnitRanking(top[2][k].numpy(), top[1][k].numpy(), bottom[2][k].numpy(),
                                    bottom[1][k].numpy(), reservoir_index[order], res_value[order],
                                    seen, float(contrast_sum[layer][k]) / max(seen, 1))
    return out


def merge_rankings(parts: list[dict[Unit, UnitRanking]], keep: int, seed: int = 0
                   ) -> dict[Unit, UnitRanking]:
    """Combine the rankings of disjoint pool shards: the top/bottom of the union, and the union
    of the reservoirs (each a uniform sample of an equal-sized shard)."""
    import torch

    merged = {}
    for unit in parts[0]:
        rankings = [part[unit] for part in parts]
        fields = {}
        for side, descending in (("top", True), ("bottom", False)):
            index = np.concatenate([getattr(r, f"{side}_index") for r in rankings])
            value = np.concatenate([getattr(r, f"{side}_value") for r in rankings])
            key = tie_keys(torch.from_numpy(value)[None], torch.from_numpy(index),
                           torch.tensor([unit.channel]), unit.layer, seed)[0].numpy()
            order = np.argsort(-key if descending else key, kind="stable")[:keep]
            fields[f"{side}_index"], fields[f"{side}_value"] = index[order], value[order]
        index = np.concatenate([r.reservoir_index for r in rankings])
        value = np.concatenate([r.reservoir_value for r in rankings])
        order = np.argsort(value, kind="stable")
        n_images = sum(r.n_images for r in rankings)
        contrast = sum(r.spatial_contrast * r.n_images for r in rankings) / max(n_images, 1)
        merged[unit] = UnitRanking(**fields, reservoir_index=index[order],
                                   reservoir_value=value[order], n_images=n_images,
                                   spatial_contrast=contrast)
    return merged


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


def select_exemplars(ranking: UnitRanking, sources: np.ndarray, n_refs: int = 9,
                     n_batches: int = 20, difficulties=("easy",), max_refs_per_source=None,
                     seed: int = 0) -> UnitExemplars | None:
    """References in n_batches batches (one image from each of n_refs extremeness bins of
    n_batches), the query at the next ranks (easy) or at the hard percentiles. None when the unit
    is constant over the pool."""
    if n_refs > QUERY_INDEX:
        raise InputError(f"at most {QUERY_INDEX} references per side (the query is _9)")
    if ranking.top_value[0] - ranking.bottom_value[0] < CONSTANT_RANGE:
        return None
    n = n_refs * n_batches
    if 2 * (n + n_batches) > ranking.n_images:
        raise InputError(f"a pool of {ranking.n_images} images is too small for {n_refs} "
                         f"references x {n_batches} batches per side plus queries")
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
        if difficulty not in DIFFICULTY_PERCENTILES:
            raise InputError(f"unknown difficulty {difficulty!r}; valid: easy, "
                             f"{', '.join(DIFFICULTY_PERCENTILES)}")
        p = DIFFICULTY_PERCENTILES[difficulty] / 100.0
        picks = {}
        for side, quantile in (("max", p), ("min", 1.0 - p)):
            target = quantile * (len(ranking.reservoir_index) - 1)
            order = np.argsort(np.abs(np.arange(len(ranking.reservoir_index)) - target),
                               kind="stable")
            used = sides["max"]["used"] | sides["min"]["used"]
            chosen = [int(ranking.reservoir_index[i]) for i in order
                      if int(ranking.reservoir_index[i]) not in used][:n_batches]
            picks[side] = list(rng.permutation(chosen))
        queries[difficulty] = [(int(a), int(b)) for a, b in zip(picks["max"], picks["min"])]
    flags = dict(ties_cover_max_refs=sides["max"]["tied"], ties_cover_min_refs=sides["min"]["tied"])
    return UnitExemplars(Unit("", 0), sides["max"]["batches"], sides["min"]["batches"], queries,
                         flags)


def build_exemplars(model: LoadedModel, pool, units: list[Unit], n_refs: int = 9,
                    n_batches: int = 20, difficulties=("easy",), max_refs_per_source=None,
                    reservoir_size: int = 4096, batch_size: int = 64, seed: int = 0,
                    progress: bool = True) -> tuple[list[UnitExemplars], list[Unit]]:
    """Exemplars of every non-constant unit, plus the list of dropped constant units."""
    rankings = collect_rankings(model, pool, units, keep_for(n_refs, n_batches), reservoir_size,
                                batch_size, seed, progress)
    return select_all(rankings, pool.sources, units, n_refs, n_batches, difficulties,
                      max_refs_per_source, seed)


def keep_for(n_refs: int, n_batches: int) -> int:
    return 3 * (n_refs + 1) * n_batches  # room for the source cap and the easy queries


def select_all(rankings, sources, units, n_refs, n_batches, difficulties, max_refs_per_source,
               seed) -> tuple[list[UnitExemplars], list[Unit]]:
    kept, constant = [], []
    for unit in units:
        exemplars = select_exemplars(rankings[unit], sources, n_refs, n_batches,
                                     difficulties, max_refs_per_source, unit_seed(seed, unit))
        if exemplars is None:
            constant.append(unit)
        else:
            exemplars.unit = unit
            exemplars.stats = rankings[unit].activation_stats()
            kept.append(exemplars)
    return kept, constant


# --- the stimulus store ------------------------------------------------------------------------

def condition_label(model_label: str, difficulty: str) -> str:
    return model_label if difficulty == "easy" else f"{model_label}_{difficulty}"


def batch_dir(model_label: str, unit: Unit, batch: int, difficulty: str = "easy") -> str:
    return (f"{condition_label(model_label, difficulty)}/{unit.layer}/channel_{unit.channel}/"
            f"natural_images/batch_{batch}")


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # the same pool image in many trials costs no extra disk
    except OSError:
        shutil.copyfile(source, target)


def write_store(root: str | Path, model_label: str, exemplars: list[UnitExemplars], pool,
                progress: bool = False) -> dict:
    """Write exemplars in the stimulus store layout
    `<model>[_<difficulty>]/<layer>/channel_<c>/natural_images/batch_<b>/{min,max}_<i>.png`.
    Each pool image is encoded once (under `_pool/`) and hard-linked into place.
    Returns {(unit, difficulty, batch): {query_max, query_min, refs_max, refs_min}} (relative)."""
    from tqdm.auto import tqdm

    root = Path(root)
    encoded = root / "_pool"
    encoded.mkdir(parents=True, exist_ok=True)

    def pool_file(index: int) -> Path:
        path = encoded / f"{index}.png"
        if not path.exists():
            pool.pil(index).save(path)
        return path

    trials = {}
    for ex in tqdm(exemplars, desc=f"stimuli {model_label}", disable=not progress):
        for difficulty, queries in ex.queries.items():
            for b, (q_max, q_min) in enumerate(queries):
                folder = batch_dir(model_label, ex.unit, b, difficulty)
                paths = {"refs_max": [], "refs_min": []}
                for side, refs in (("max", ex.refs_max[b]), ("min", ex.refs_min[b])):
                    for i, image in enumerate(refs):
                        rel = f"{folder}/{side}_{i}.png"
                        link_or_copy(pool_file(image), root / rel)
                        paths[f"refs_{side}"].append(rel)
                for side, image in (("max", q_max), ("min", q_min)):
                    rel = f"{folder}/{side}_{QUERY_INDEX}.png"
                    link_or_copy(pool_file(image), root / rel)
                    paths[f"query_{side}"] = rel
                trials[(ex.unit, difficulty, b)] = paths
    return trials


def unit_depths(model: LoadedModel, units: list[Unit]) -> dict[Unit, float]:
    depths = module_depths(model.module)
    return {u: depths[u.layer] for u in units}
