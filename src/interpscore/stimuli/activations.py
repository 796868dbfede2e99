"""The activation pass: one forward pass over the image pool with hooks on all needed layers at
once. Each hook keeps only what exemplar selection needs (streaming top/bottom ranks and a
fixed-size uniform reservoir for the hard-query percentiles), so memory does not grow with the
pool. Ties are broken by a fixed pseudo-random key, identically in every pass, shard and merge.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .networks import LoadedModel, channel_maps, check_layers, spatial_contrast
from .readouts import Readout, channel_readout
from .units import Unit


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
    """Top-k and bottom-k (activation, pool index) per unit, updated batch by batch. Batches
    wait in a buffer until it holds about as many images as are kept, then one top-k over the
    kept and the buffered replaces the per-batch top-k: the same result (the top-k of a union),
    at a fraction of the cost when many units are hooked."""

    def __init__(self, n_units: int, keep: int, device="cpu"):
        import torch

        self.keep = keep
        empty = lambda dtype: torch.empty(n_units, 0, dtype=dtype, device=device)  # noqa: E731
        self._top = [empty(torch.float64), empty(torch.float32), empty(torch.int64)]
        self._bottom = [empty(torch.float64), empty(torch.float32), empty(torch.int64)]
        self._pending: list[tuple] = []
        self._pending_width = 0

    def update(self, keys, values, index) -> None:
        self._pending.append((keys, values, index.expand(keys.shape[0], -1)))
        self._pending_width += keys.shape[1]
        if self._pending_width >= max(self.keep, 256):
            self._flush()

    def _flush(self) -> None:
        import torch

        if not self._pending:
            return
        keys, values, index = (torch.cat(parts, 1) for parts in zip(*self._pending))
        self._pending, self._pending_width = [], 0
        for state, largest in ((self._top, True), (self._bottom, False)):
            key = torch.cat([state[0], keys], 1)
            value = torch.cat([state[1], values], 1)
            idx = torch.cat([state[2], index], 1)
            k = min(self.keep, key.shape[1])
            key, order = key.topk(k, dim=1, largest=largest, sorted=True)
            state[:] = [key, value.gather(1, order), idx.gather(1, order)]

    @property
    def top(self) -> list:
        self._flush()
        return self._top

    @property
    def bottom(self) -> list:
        self._flush()
        return self._bottom


class _Reservoir:
    """Algorithm R, shared by all units: which pool images enter a uniform sample of fixed size
    (the hard-query percentiles are read from it)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seen = size, 0
        self.rng = np.random.default_rng(seed)

    def slots(self, n: int) -> np.ndarray:
        """The reservoir slot of each of the next n images (-1: not kept)."""
        slots = []
        for _ in range(n):
            if self.seen < self.size:
                slots.append(self.seen)
            else:
                j = int(self.rng.integers(0, self.seen + 1))
                slots.append(j if j < self.size else -1)
            self.seen += 1
        slots = np.array(slots)
        # Two images of one batch may draw the same slot: the later one wins.
        _, last = np.unique(slots[::-1], return_index=True)
        repeated = np.ones(len(slots), bool)
        repeated[len(slots) - 1 - last] = False
        slots[repeated] = -1
        return slots


class _PoolItems:
    """Pool positions as a map-style dataset for DataLoader workers: (position, image or None,
    why it could not be read)."""

    def __init__(self, pool, positions):
        self.pool, self.positions = pool, positions

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, k):
        i = self.positions[k]
        image = self.pool[i]
        return i, image, getattr(self.pool, "skipped", {}).get(i)


class _Accumulator:
    """Streaming ranks, reservoir and spatial contrast of units grouped by layer, fed batch by
    batch with each layer's (B, U) activations: the one place both the hooked pass and a
    precomputed matrix are ranked, so the two give the same exemplars."""

    def __init__(self, units: list[Unit], keep: int, reservoir_size: int, seed: int, device):
        import torch

        self.seed, self.device = seed, device
        self.per_layer = {layer: [u for u in units if u.layer == layer]
                          for layer in sorted({u.layer for u in units})}
        self.channel_index = {layer: torch.tensor([u.channel for u in us], device=device)
                              for layer, us in self.per_layer.items()}
        self.ranks = {layer: _StreamingRanks(len(us), keep, device)
                      for layer, us in self.per_layer.items()}
        self.reservoir_index = np.empty(0, np.int64)
        self.reservoir_value = {layer: torch.empty(0, len(us), device=device)
                                for layer, us in self.per_layer.items()}
        self.contrast_sum = {layer: torch.zeros(len(us), dtype=torch.float64, device=device)
                             for layer, us in self.per_layer.items()}
        self.sampler = _Reservoir(reservoir_size, seed)

    def add(self, index, values: dict) -> None:
        """index (B,) pool positions; values[layer] (B, U) activations of its units."""
        import torch

        slots = self.sampler.slots(len(index))
        grow = slots >= len(self.reservoir_index)
        self.reservoir_index = np.concatenate([self.reservoir_index, np.full(grow.sum(), -1)])
        self.reservoir_index[slots[slots >= 0]] = index.cpu().numpy()[slots >= 0]
        kept = torch.from_numpy(slots >= 0).to(self.device)
        where = torch.from_numpy(slots[slots >= 0]).to(self.device)
        for layer, layer_values in values.items():
            keys = tie_keys(layer_values.T, index, self.channel_index[layer], layer, self.seed)
            self.ranks[layer].update(keys, layer_values.T, index.view(1, -1))
            res = self.reservoir_value[layer]
            if grow.any():
                res = torch.cat([res, res.new_zeros(int(grow.sum()), res.shape[1])])
            res[where] = layer_values[kept].to(res.dtype)
            self.reservoir_value[layer] = res

    def result(self, contrast: bool = True) -> dict[Unit, UnitRanking]:
        out, seen = {}, self.sampler.seen
        for layer, us in self.per_layer.items():
            top = [t.cpu() for t in self.ranks[layer].top]
            bottom = [t.cpu() for t in self.ranks[layer].bottom]
            res_values = self.reservoir_value[layer].cpu()
            sums = self.contrast_sum[layer].cpu()
            for k, unit in enumerate(us):
                res_value = res_values[:, k].numpy()
                order = np.argsort(res_value, kind="stable")
                out[unit] = UnitRanking(
                    top[2][k].numpy(), top[1][k].numpy(), bottom[2][k].numpy(),
                    bottom[1][k].numpy(), self.reservoir_index[order], res_value[order], seen,
                    float(sums[k]) / max(seen, 1) if contrast else float("nan"))
        return out


def collect_rankings(model: LoadedModel, pool, units: list[Unit], keep: int,
                     reservoir_size: int = 4096, batch_size: int = 64, seed: int = 0,
                     progress: bool = True, indices=None, workers: int = 0,
                     readout: Readout | None = None) -> dict[Unit, UnitRanking]:
    """One pass over the pool (or the pool positions `indices`, a shard of it) for all units,
    all their layers hooked at once. Images the pool cannot read (None) are skipped. Images are
    decoded in `workers` DataLoader processes; activations are reduced where the model runs
    (on a GPU, in float16 autocast), and only the kept ranks come back to the host. A unit's
    activation is `readout`'s (default: the spatial mean of its channel, as IMI): every
    feature of a layer comes from the same hooked output, so the cost grows with images and
    layers, not with units."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    readout = readout or channel_readout()
    device = torch.device(model.device)
    acc = _Accumulator(units, keep, reservoir_size, seed, device)
    layers = list(acc.per_layer)
    check_layers(model.module, layers)
    modules = dict(model.module.named_modules())
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for layer in layers:
        def hook(module, _inputs, output, layer=layer):
            features = readout.features(channel_maps(module, output), acc.channel_index[layer])
            captured[layer] = readout.reduce(features)
            acc.contrast_sum[layer] += spatial_contrast(features).double().sum(0)
        hooks.append(modules[layer].register_forward_hook(hook))

    positions = list(range(len(pool)) if indices is None else indices)
    loader = DataLoader(_PoolItems(pool, positions), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=list,
                        pin_memory=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")
    try:
        with torch.no_grad(), autocast, tqdm(total=len(positions), unit="img",
                                             desc=f"activations {model.label}",
                                             disable=not progress) as bar:
            for batch in loader:
                bar.update(len(batch))
                for i, _, reason in batch:
                    if reason is not None and hasattr(pool, "skipped"):
                        pool.skipped[i] = reason
                loaded = [(i, image) for i, image, _ in batch if image is not None]
                if not loaded:
                    continue
                index = torch.tensor([i for i, _ in loaded], device=device)
                model(torch.stack([image for _, image in loaded]).to(device, non_blocking=True))
                acc.add(index, {layer: captured.pop(layer).float() for layer in layers})
    finally:
        for handle in hooks:
            handle.remove()
    return acc.result()


def rank_matrix(values: np.ndarray, index: np.ndarray, units: list[Unit], keep: int,
                reservoir_size: int = 4096, batch_size: int = 64, seed: int = 0
                ) -> dict[Unit, UnitRanking]:
    """Rankings of a precomputed activation matrix `values` [n_images, n_units] whose rows are
    the pool positions `index` (columns in the order of `units`): fed in pool order, in
    batches of `batch_size`, as the hooked pass feeds them, so a readout and the matrix it
    produces give the same exemplars. Spatial contrast is unknown (NaN)."""
    import torch

    order = np.argsort(index, kind="stable")
    values = torch.from_numpy(np.ascontiguousarray(values[order], dtype=np.float32))
    index = torch.from_numpy(np.asarray(index)[order].astype(np.int64))
    acc = _Accumulator(units, keep, reservoir_size, seed, "cpu")
    column = {unit: j for j, unit in enumerate(units)}
    columns = {layer: [column[u] for u in us] for layer, us in acc.per_layer.items()}
    for start in range(0, len(index), batch_size):
        rows = slice(start, start + batch_size)
        acc.add(index[rows], {layer: values[rows][:, cols] for layer, cols in columns.items()})
    return acc.result(contrast=False)


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


