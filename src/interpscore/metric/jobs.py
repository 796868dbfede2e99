"""Scoring requests: a model's units read by a readout (`Job`: the model, its units, the pool,
and the shard files of a sharded activation pass under OUT), or units whose activations are
given (`MatrixJob`, `--activations`: no model, no forward pass; the matrix is ranked by the same
streaming code as a hooked pass, so a readout and the matrix it produces give the same
exemplars and scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_file
from ..errors import InputError
from ..stimuli.options import ScoringOptions


def shard_file(shards: Path, rank: int, world: int) -> Path:
    """Where pool slice `rank` of `world` of a sharded activation pass is saved (the one naming
    rule: a launcher plans its array jobs from it without building the model)."""
    return Path(shards) / f"activations-{rank}-of-{world}.pt"


class _EmbedsOnce:
    """The metric's embeddings of pool images, each image embedded once for the job's life (a
    monitor scores one job at every check: the exemplars change, the pool does not)."""

    embed_batch = 64  # images per forward pass of the metric's backbone (same embeddings)

    def embeddings(self, cache, indices: list[int]) -> torch.Tensor:
        known = self.__dict__.setdefault("_embedded", {})  # pool index -> embedding
        todo = [i for i in indices if i not in known]
        if todo:
            new = cache.embed_images([self.pool[i] for i in todo], batch_size=self.embed_batch,
                                     progress=self.options.progress)
            known.update(zip(todo, new))
        return torch.from_numpy(np.stack([known[i] for i in indices]))


class Job(_EmbedsOnce):
    """One scoring request: the model, its units (read by a readout), the pool, and the shard
    files under OUT."""

    def __init__(self, model, layers, units, images, options: ScoringOptions, cache_dir: Path,
                 out: Path | None, readout=None):
        from ..stimuli.networks import LoadedModel, load_model
        from ..stimuli.pools import open_pool
        from ..stimuli.readouts import channel_readout, check_readout
        from ..stimuli.scoring_layers import named_layers
        from ..stimuli.selection import check_request, keep_for
        from ..stimuli.units import check_units_spec, choose_units, parse_units

        # Everything that can be wrong with the request is found before the activation pass.
        check_request(options.n_refs, options.n_batches, [options.difficulty])
        check_units_spec(units)
        self.readout = readout or channel_readout()
        self.images, self.options = images, options
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
        check_request(options.n_refs, options.n_batches, [options.difficulty], len(self.pool))
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

    def rankings(self, rank: int = 0, world: int = 1) -> dict:
        """The activation pass over this rank's slice of the pool."""
        from ..stimuli.activations import collect_rankings

        n = len(self.pool)
        part = collect_rankings(self.model, self.pool, self.units, self.keep,
                                batch_size=self.options.batch_size, seed=self.options.seed,
                                progress=self.options.progress, workers=self.options.workers,
                                indices=range(rank * n // world, (rank + 1) * n // world),
                                readout=self.readout)
        return {"signature": self.signature, "rankings": part,
                "skipped": dict(getattr(self.pool, "skipped", {}))}

    def compute_shard(self, rank: int, world: int) -> Path:
        path = self.shard_file(rank, world)
        if not path.exists():
            with atomic_file(path) as tmp:
                torch.save(self.rankings(rank, world), tmp)
        return path

    def read_shard(self, rank: int, world: int) -> dict:
        path = self.shard_file(rank, world)
        data = torch.load(path, weights_only=False)
        if data["signature"] != self.signature:
            raise InputError(f"{path}: a shard of another scoring job; use another --out or "
                             "delete the shards folder")
        return data

    def merged(self) -> tuple[dict, dict]:
        """Rankings of the whole pool and the unreadable images: from the shard files where a
        sharded run left them (computing only the missing ones), else in one pass."""
        from ..stimuli.activations import merge_rankings

        existing = sorted(self.shards.glob("activations-*-of-*.pt")) if self.shards else []
        if not existing:
            data = self.rankings()
            return data["rankings"], data["skipped"]
        world = max(int(p.stem.split("-of-")[1]) for p in existing)
        parts = [self.read_shard(r, world) if self.shard_file(r, world).exists()
                 else torch.load(self.compute_shard(r, world), weights_only=False)
                 for r in range(world)]
        rankings = merge_rankings([p["rankings"] for p in parts], self.keep, self.options.seed)
        return rankings, {k: v for p in parts for k, v in p["skipped"].items()}


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

    def merged(self) -> tuple[dict, dict]:
        from ..stimuli.activations import rank_matrix

        column = {u: j for j, u in enumerate(self.matrix.units)}
        values = self.matrix.values[:, [column[u] for u in self.units]]
        return rank_matrix(values, self.matrix.index, self.units, self.keep,
                           batch_size=self.options.batch_size, seed=self.options.seed), {}

    def unit_columns(self) -> dict:
        widths = {}
        for u in self.matrix.units:
            widths[u.layer] = widths.get(u.layer, 0) + 1
        return {u: dict(model=self.label, layer=u.layer, channel=u.channel,
                        layer_depth=np.nan, layer_width=widths[u.layer], **self.identity)
                for u in self.units}
