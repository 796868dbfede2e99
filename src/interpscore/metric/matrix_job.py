"""A scoring request whose activations are given (`--activations`): no model, no forward pass.
The matrix is ranked by the same streaming code as a hooked pass (`stimuli.activations.
rank_matrix`), so a readout and the matrix it produces give the same exemplars and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..stimuli.options import ScoringOptions


class MatrixJob:
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
