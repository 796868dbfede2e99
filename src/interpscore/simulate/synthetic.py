"""IMI's synthetic condition in the simulated release: for some units of a model, references that
are feature visualisations (`stimuli.visualize`, IMI's recipe), queries that are the unit's
natural easy queries, as in IMI. The visualisations join the pool as extra images, so every
observer family sees them through its own features, as it sees natural exemplars; their
accuracy is whatever the observers make of them (nothing forces it to IMI's levels)."""

from __future__ import annotations

import numpy as np

from ..data.layouts import image_name, optimized_dir
from ..stimuli.pools import ArrayPool


def chosen_units(exemplars, n: int, seed: int) -> list:
    """`n` of a model's units, a seeded draw (the same ones in both pools)."""
    order = np.random.default_rng(seed).permutation(len(exemplars))
    return [exemplars[i].unit for i in sorted(order[:n])]


def visualise(model, pool, units, config, progress: bool) -> dict:
    """unit -> {"max": images, "min": images} (uint8, the pool's size), strongest first."""
    from ..stimuli.visualize import VisualizationOptions, natural_rankings, visualize_units

    options = VisualizationOptions(**{"size": config.image_size, "seed": config.seed,
                                      "n_images": config.n_refs, **config.visualization})
    natural = natural_rankings(model, pool, units, keep=1, seed=config.seed, progress=progress)
    made = visualize_units(model, units, options, natural)
    return {v.unit: {side: s.images[::-1] for side, s in v.sides.items()} for v in made}


def add_optimized_conditions(model, spec, pool, exemplars, config, images, rows, tasks, paths,
                             made: dict, progress: bool):
    """Append an `optimized` condition for the chosen units of `model` to `rows`, `tasks` and
    `paths` (one task per natural easy batch: its queries, the visualisations as references),
    write the visualisations into the stimulus store under IMAGES, and return the pool with the
    visualisations appended (their indices follow the pool's images)."""
    from PIL import Image

    label = model.label
    if label not in made:  # pool A: choose and visualise; pool B: the same units again
        units = chosen_units(exemplars, config.synthetic[label], config.seed)
        made[label] = visualise(model, pool, units, config, progress)
    shown = [ex for ex in exemplars if ex.unit in made[label]]
    extra, names, where = [], [], {}
    for ex in shown:
        folder = optimized_dir(label, ex.unit.layer, ex.unit.channel)
        (images / folder).mkdir(parents=True, exist_ok=True)
        for side, pictures in made[label][ex.unit].items():
            for i, picture in enumerate(pictures):
                Image.fromarray(picture).save(images / folder / image_name(side, i))
                where[(ex.unit, side, i)] = (len(pool) + len(extra), f"{folder}/{image_name(side, i)}")
                extra.append(picture)
                names.append(f"visualisation:{folder}/{image_name(side, i)}")
    natural_row = {(r["unit"], r["difficulty"]): c for c, r in enumerate(rows)
                   if r["model"] == label and r["mode"] == "natural"}
    for ex in shown:
        c = len(rows)
        easy = natural_row[(ex.unit, "easy")]
        rows.append({**rows[easy], "mode": "optimized"})
        refs = {side: [where[(ex.unit, side, i)] for i in range(len(made[label][ex.unit][side]))]
                for side in ("max", "min")}
        for b, task in enumerate(ex.tasks("easy")):  # the natural queries, visualised references
            tasks[(c, b)] = task._replace(refs_max=[i for i, _ in refs["max"]],
                                          refs_min=[i for i, _ in refs["min"]])
            natural_paths = paths[(easy, b)]
            paths[(c, b)] = {"query_max": natural_paths["query_max"],
                             "query_min": natural_paths["query_min"],
                             "refs_max": [p for _, p in refs["max"]],
                             "refs_min": [p for _, p in refs["min"]]}
    if not extra:
        return pool
    sources = np.concatenate([pool.sources, len(pool.source_names) + np.arange(len(extra))])
    return ArrayPool(pool.name, np.concatenate([pool.images, np.stack(extra)]), sources,
                     list(pool.source_names) + names)
