"""Scoring requests: a model's units read by a readout (`Job`: the model, its units, the pool,
and its activation pass in parts saved as they finish by `resume.run_chunks`, so an interrupted
pass resumes: the shard files of a sharded pass under OUT, else chunks in the cache), or units
whose activations are given (`MatrixJob`, `--activations`: no model, no forward pass; the
matrix is ranked by the same streaming code as a hooked pass, so a readout and the matrix it
produces give the same exemplars and scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..stimuli.options import ScoringOptions


RESERVOIR_SIZE = 4096  # collect_rankings' default: a pass's uniform sample, chunked or not


def select_exemplars(job, rankings: dict):
    """Each unit's exemplars (and the units without any, with the reason): the one selection
    that scoring and a stimulus store both make from a job's rankings. A unit too sparse for
    its max side (`too_sparse`) is left out with the reason."""
    from ..stimuli.selection import select_all

    o = job.options
    return without_too_sparse(rankings, *select_all(
        rankings, job.pool.sources, job.units, o.n_refs, o.n_batches, [o.difficulty],
        o.max_refs_per_source, o.seed))


def without_too_sparse(rankings: dict, exemplars: list, dropped: dict) -> tuple[list, dict]:
    """`exemplars` less the units `too_sparse` refuses, added to `dropped` with the reason."""
    kept, dropped = [], dict(dropped)
    for ex in exemplars:
        reason = too_sparse(rankings[ex.unit], ex)
        if reason:
            dropped[ex.unit] = reason
        else:
            kept.append(ex)
    return kept, dropped


def too_sparse(ranking, exemplars) -> str | None:
    """Why a unit's max side shows nothing of it, or None: some of its maximally activating
    references or queries sit at the unit's minimum (a ReLU channel, SAE latent or sparse
    feature active on fewer pool images than the side needs), so they are arbitrary images and
    a score would be about the pool's size, not the unit. The min side may tie at the minimum:
    there the images are truly the least activating."""
    floor, top = float(ranking.bottom_value[0]), float(ranking.top_value[0])
    value = dict(zip(ranking.top_index.tolist(), ranking.top_value.tolist()))
    shown = [i for batch in exemplars.refs_max for i in batch]
    shown += [q for q, _ in exemplars.queries.get("easy", [])]
    at_floor = sum(value.get(i, floor) - floor <= 1e-6 * (top - floor) for i in shown)
    if not at_floor:
        return None
    active = int(np.sum(ranking.top_value - floor > 1e-6 * (top - floor)))
    return (f"too sparse: {at_floor} of its {len(shown)} max-side images do not activate it "
            f"(active on {active} of {ranking.n_images} pool images); a larger pool, or fewer "
            "references or batches, shows it")


def write_stimuli(job, exemplars: list, root: Path) -> None:
    """The stimulus store of a job's exemplars (`score --save-stimuli`): a feature's folder
    carries its readout (`readouts.unit_layer`)."""
    from ..stimuli.readouts import for_store
    from ..stimuli.store import write_store

    write_store(root, job.label, for_store(exemplars, job.identity), job.pool)


def shard_file(shards: Path, rank: int, world: int) -> Path:
    """Where pool slice `rank` of `world` of a sharded activation pass is saved (the one naming
    rule: a launcher plans its array jobs from it without building the model)."""
    return Path(shards) / f"activations-{rank}-of-{world}.pt"


class _EmbedsOnce:
    """The metric's embeddings of pool images, each image embedded once for the job's life (a
    monitor scores one job at every check: the exemplars change, the pool does not)."""

    # images per forward pass of the metric's backbone: --batch-size, unless set (the monitor
    # sets its probe's); the embeddings are the same
    embed_batch = None

    def embeddings(self, cache, indices: list[int]) -> torch.Tensor:
        known = self.__dict__.setdefault("_embedded", {})  # pool index -> embedding
        todo = [i for i in indices if i not in known]
        if todo:
            new = cache.embed_images([self.pool[i] for i in todo],
                                     batch_size=self.embed_batch or self.options.batch_size,
                                     progress=self.options.progress)
            known.update(zip(todo, new))
        return torch.from_numpy(np.stack([known[i] for i in indices]))


class Job(_EmbedsOnce):
    """One scoring request: the model, its units (read by a readout), the pool, and the shard
    files under OUT."""

    def __init__(self, model, layers, units, images, options: ScoringOptions, cache_dir: Path,
                 out: Path | None, readout=None):
        from ..stimuli.networks import LoadedModel
        from ..stimuli.pools import open_pool
        from ..stimuli.readouts import channel_readout, check_readout
        from ..stimuli.scoring_layers import named_layers
        from ..stimuli.selection import check_request, keep_for
        from ..stimuli.units import check_units_spec, choose_units, parse_units
        from ..stimuli.user_input import check_pool, load_model

        # Everything that can be wrong with the request is found before the activation pass.
        check_request(options.n_refs, options.n_batches, [options.difficulty])
        check_units_spec(units)
        self.readout = readout or channel_readout()
        self.images, self.options, self.cache_dir = images, options, cache_dir
        self._chunks = None  # the cache folder of the activation pass's chunks (`merged`)
        # A model already built (the monitor's: a user's module during training) is used as is.
        self.model = (model if isinstance(model, LoadedModel)
                      else load_model(model, image_size=options.image_size))
        self.spec = self.model.label if isinstance(model, LoadedModel) else model
        size = options.image_size or self.model.input_size
        named = named_layers(self.model.module, layers)
        check_readout(self.readout, self.model, self.spec, size, named)
        if self.readout.layer is None:
            self.units = choose_units(self.model, named, units, options.image_size,
                                      options.seed)
        else:  # a layer's features: its units are the readout's, not its channels
            self.units = parse_units(units, {self.readout.layer: self.readout.n_features},
                                     options.seed)
        self.pool = open_pool(images, size=options.image_size, n_images=options.pool_size,
                              seed=options.seed, cache_dir=cache_dir / "pools")
        check_pool(self.pool, options.n_refs, options.n_batches, [options.difficulty])
        self.keep = keep_for(options.n_refs, options.n_batches)
        self.shards = out / "shards" if out is not None else None
        self.signature = json.dumps(dict(
            model=self.spec, units=[(u.layer, u.channel) for u in self.units], pool=str(images),
            pool_size=len(self.pool), image_size=options.image_size, keep=self.keep,
            seed=options.seed, readout=self.readout.identity()), sort_keys=True)

    def unit_columns(self) -> dict:
        """Per unit: what a score row says of it besides its scores."""
        from ..stimuli.networks import module_depths

        depths = module_depths(self.model.module)
        if self.readout.layer is None:  # one dummy forward pass, once for the job's life
            from ..stimuli.units import layer_channels

            if "_widths" not in self.__dict__:
                self._widths = layer_channels(self.model, sorted({u.layer for u in self.units}),
                                              self.options.image_size)
            widths = self._widths
        else:
            widths = {self.readout.layer: self.readout.n_features}
        return {u: dict(model=self.model.label, layer=u.layer, channel=u.channel,
                        layer_depth=depths[u.layer], layer_width=widths[u.layer],
                        **self.readout.identity()) for u in self.units}

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def identity(self) -> dict:
        return self.readout.identity()

    def shard_file(self, rank: int, world: int) -> Path:
        return shard_file(self.shards, rank, world)

    def _part(self, start: int, stop: int, reservoir_size: int = RESERVOIR_SIZE,
              progress: bool = False) -> dict:
        """The activation pass over pool positions start..stop, and the unreadable images."""
        from ..stimuli.activations import collect_rankings

        part = collect_rankings(self.model, self.pool, self.units, self.keep,
                                reservoir_size=reservoir_size,
                                batch_size=self.options.batch_size, seed=self.options.seed,
                                progress=progress, workers=self.options.workers,
                                indices=range(start, stop), readout=self.readout)
        return {"rankings": part, "skipped": dict(getattr(self.pool, "skipped", {}))}

    def rankings(self, rank: int = 0, world: int = 1) -> dict:
        """The activation pass over this rank's slice of the pool, in one pass, saved nowhere
        (the monitor's, whose weights change between checks)."""
        n = len(self.pool)
        return self._part(rank * n // world, (rank + 1) * n // world,
                          progress=self.options.progress)

    def chunk_key(self, cached: bool = False) -> str:
        """Everything a part of the activation pass depends on: the request (`signature`), the
        weights and the images themselves; for chunks in the cache (`cached`) also how the pass
        runs (batch size, device, chunking), so that resumed and uninterrupted runs give the
        same bytes. Shards leave those out: array jobs on other machines merge."""
        from ..resume import CHUNKS

        key = dict(job=json.loads(self.signature), weights=weights_identity(self.model.module),
                   images=pool_identity(self.pool))
        if cached:
            key.update(batch_size=self.options.batch_size, chunks=CHUNKS,
                       device=torch.device(self.model.device).type, reservoir=RESERVOIR_SIZE)
        return json.dumps(key, sort_keys=True)

    def compute_shard(self, rank: int, world: int) -> Path:
        from ..resume import save_chunk

        path = self.shard_file(rank, world)
        if not path.exists():
            n = len(self.pool)
            save_chunk(path, self.chunk_key(), self._part(rank * n // world,
                                                          (rank + 1) * n // world))
        return path

    def merged(self, world: int | None = None) -> tuple[dict, dict]:
        """Rankings of the whole pool and the unreadable images, from parts each saved when done
        (an interrupted pass resumes from them): `world` pool shards under OUT/shards/ (the
        zoo's; by default as many as a sharded run left there), computing the missing ones;
        else `resume.CHUNKS` chunks under the cache, removed by `discard_chunks`."""
        from ..resume import chunk_bounds, keyed_folder, run_chunks
        from ..stimuli.activations import merge_rankings

        existing = sorted(self.shards.glob("activations-*-of-*.pt")) if self.shards else []
        if world is None and existing:
            world = max(int(p.stem.split("-of-")[1]) for p in existing)
        n = len(self.pool)
        if world:
            folder, key, what = self.shards, self.chunk_key(), "activation shards"
            bounds = [(r * n // world, (r + 1) * n // world) for r in range(world)]
            names = [shard_file(folder, r, world).name for r in range(world)]
            reservoir = RESERVOIR_SIZE
        else:
            key, what = self.chunk_key(cached=True), "activation chunks"
            folder = self._chunks = keyed_folder(self.cache_dir, "activations", key)
            bounds = chunk_bounds(n, self.options.batch_size)
            names = [f"images-{a}-{b}.pt" for a, b in bounds]
            # a uniform sample of each chunk, together as large as one pass's
            reservoir = -(-RESERVOIR_SIZE // len(bounds))
        parts = run_chunks(what, folder, key, names,
                           lambda i, _bar: self._part(*bounds[i], reservoir),
                           sizes=[b - a for a, b in bounds], progress=self.options.progress,
                           desc=f"activations {self.label}")
        rankings = merge_rankings([p["rankings"] for p in parts], self.keep, self.options.seed)
        return rankings, {k: v for p in parts for k, v in p["skipped"].items()}

    def discard_chunks(self) -> None:
        """The scores are written: the cached chunks of the activation pass go (OUT/shards/
        stays, as a sharded run's record)."""
        from ..resume import discard

        if self._chunks is not None:
            discard(self._chunks)


def weights_identity(module) -> str:
    """sha1 of every tensor of a network's state (parameters and buffers), with their names,
    shapes and dtypes: other weights, other identity."""
    import hashlib

    digest = hashlib.sha1()
    for name, value in module.state_dict().items():
        if not torch.is_tensor(value):  # a module's extra state
            digest.update(f"{name}:{value!r}".encode())
            continue
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def pool_identity(pool) -> str:
    """sha1 of a pool's images as listed (name, size, image names) and their pixels where the
    pool holds them, or each file's size and modification time (a folder), or the saved
    dataset's fingerprint: changed images, another identity."""
    import hashlib

    digest = hashlib.sha1(json.dumps([pool.name, pool.size, len(pool),
                                      [str(s) for s in pool.source_names]]).encode())
    pixels = getattr(pool, "images", None)  # an array pool (the default) holds its images
    if pixels is not None:
        digest.update(np.ascontiguousarray(pixels).view(np.uint8).reshape(-1))
    for path in getattr(pool, "paths", ()):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    fingerprint = getattr(getattr(pool, "data", None), "_fingerprint", None)  # a saved dataset
    digest.update(str(fingerprint).encode())
    return digest.hexdigest()


class MatrixJob(_EmbedsOnce):
    def __init__(self, activations, images, units, label: str, options: ScoringOptions,
                 cache_dir: Path):
        from ..stimuli.matrix import read_activations
        from ..stimuli.pools import open_pool
        from ..stimuli.selection import check_request, keep_for

        check_request(options.n_refs, options.n_batches, [options.difficulty])
        if "synthetic" in options.explanation_kinds:
            raise InputError("--explanations synthetic: feature visualisations need the model; "
                             "precomputed --activations have only natural exemplars")
        self.spec = self.label = label
        self.images, self.options, self.shards = images, options, None
        self.pool = open_pool(images, size=options.image_size, n_images=options.pool_size,
                              seed=options.seed, cache_dir=cache_dir / "pools")
        self.matrix = read_activations(activations, self.pool)
        check_request(options.n_refs, options.n_batches, [options.difficulty],
                      len(self.matrix.index))
        self.units = self._chosen(units)
        self.keep = keep_for(options.n_refs, options.n_batches)
        self.identity = self.matrix.identity

    def _chosen(self, spec) -> list:
        """all, N (a seeded sample of the columns, in column order), or unit names."""
        from ..stimuli.matrix import unit_of

        every = self.matrix.units
        if spec in (None, "all"):
            return list(every)
        if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and spec.isdigit()):
            n = int(spec)
            if not 1 <= n <= len(every):
                raise InputError(f"--units {spec}: the matrix holds {len(every)} units")
            picks = np.random.default_rng(self.options.seed).choice(len(every), n, replace=False)
            return [every[i] for i in sorted(picks)]
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        chosen = [name if not isinstance(name, str) else unit_of(name.strip(), -1)
                  for name in names]
        missing = [u for u in chosen if u not in set(every)]
        if missing:
            raise InputError(f"--units {missing[0].layer}:{missing[0].channel}: not a column of "
                             "the matrix")
        return chosen

    def merged(self, world: int | None = None) -> tuple[dict, dict]:
        from ..stimuli.activations import rank_matrix

        column = {u: j for j, u in enumerate(self.matrix.units)}
        values = self.matrix.values[:, [column[u] for u in self.units]]
        return rank_matrix(values, self.matrix.index, self.units, self.keep,
                           batch_size=self.options.batch_size, seed=self.options.seed), {}

    def discard_chunks(self) -> None:
        """Nothing to discard: a matrix is ranked in memory."""

    def write_store(self, root: Path) -> dict:
        """The stimulus store of the matrix's units, exactly as `score --activations
        --save-stimuli` writes it (no metric: nothing is embedded); returns the units left out
        and why (constant over the pool, too sparse)."""
        exemplars, dropped = select_exemplars(self, self.merged()[0])
        write_stimuli(self, exemplars, Path(root))
        return dropped

    def unit_columns(self) -> dict:
        widths = {}
        for u in self.matrix.units:
            widths[u.layer] = widths.get(u.layer, 0) + 1
        return {u: dict(model=self.label, layer=u.layer, channel=u.channel,
                        layer_depth=np.nan, layer_width=widths[u.layer], **self.identity)
                for u in self.units}
