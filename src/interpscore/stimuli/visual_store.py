"""Feature visualisations on disk: written into the stimulus store
(`<model>/<layer>/channel_<c>/optimized_images/{min,max}_<i>.png`, which `prepare` reads; naming
rules in `data.layouts`), a per-unit table of IMI's checks, and a figure of visualisations beside
natural exemplars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file, files_into
from ..data.layouts import image_name, optimized_dir, unit_id
from ..errors import InputError
from .visualize import UnitVisualizations

STATS_FILE = "visualizations.csv"  # beside the model's layer folders


def visualization_table(model_label: str, visualizations: list[UnitVisualizations]) -> pd.DataFrame:
    """One row per unit: the weakest and strongest visualisation's activation per side, the most
    extreme natural exemplar of the pool, whether the weakest beats it (IMI's check) or ties it
    (both at a bound the unit cannot pass, e.g. 0 after a ReLU), the diversity of the images
    kept and its weight alpha, and the optimisation steps taken."""
    return pd.DataFrame([{"unit_id": unit_id(model_label, v.unit.layer, v.unit.channel),
                          "model": model_label, **v.stats()} for v in visualizations])


def write_visualizations(root: str | Path, model_label: str,
                         visualizations: list[UnitVisualizations], overwrite: bool = False
                         ) -> Path:
    """Write each unit's images into the store under ROOT (each unit's `optimized_images`
    folder appears whole, replacing an older one only with `overwrite`), then the table of
    `visualization_table` as `<model>/visualizations.csv` (rows of other units kept). Returns
    the table's path. Everything is checked before anything is written."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"--out {root}: is a file, not a folder; name a folder")
    if not overwrite:
        held = [optimized_dir(model_label, v.unit.layer, v.unit.channel) for v in visualizations
                if (root / optimized_dir(model_label, v.unit.layer, v.unit.channel)).exists()]
        if held:
            raise InputError(f"--out {root}: already holds visualisations of {len(held)} unit(s), "
                             f"e.g. {held[0]}; pass --overwrite to replace them")
    from PIL import Image

    for vis in visualizations:
        where = Path(optimized_dir(model_label, vis.unit.layer, vis.unit.channel))
        with files_into(root / where.parent) as tmp:
            folder = tmp / where.name
            folder.mkdir()
            for side, images in vis.sides.items():
                for i, image in enumerate(images.images):
                    Image.fromarray(image).save(folder / image_name(side, i))
    table = visualization_table(model_label, visualizations)
    path = root / model_label / STATS_FILE
    if path.is_file():  # units visualised before, in another run, keep their rows
        older = pd.read_csv(path)
        table = pd.concat([older[~older["unit_id"].isin(table["unit_id"])], table],
                          ignore_index=True)
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def _mosaic(images: np.ndarray, columns: int = 3) -> np.ndarray:
    """(n, H, W, 3) uint8 -> one image of `columns` columns (white gaps and fill)."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    gap = max(h // 16, 1)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
    return out


def natural_images(pool, ranking, n: int = 9) -> dict[str, np.ndarray]:
    """A unit's n most and least activating pool images as (n, H, W, 3) uint8, most extreme
    first (`ranking` from `natural_rankings` with keep >= n)."""
    pick = {"max": ranking.top_index[:n], "min": ranking.bottom_index[:n]}
    return {side: np.stack([pool[int(i)].permute(1, 2, 0).numpy() for i in index])
            for side, index in pick.items()}


def plot_visualizations(path: str | Path, visualizations: list[UnitVisualizations], pool,
                        natural: dict, n_units: int = 4, title: str | None = None) -> Path:
    """A PNG with one row per unit (the first `n_units`), laid out as an IMI trial: natural
    minimal exemplars, minimal visualisations | maximal visualisations, natural maximal
    exemplars, each as a 3 x 3 grid, the weakest visualisation's activation and the pool's
    extreme in the titles."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    shown = visualizations[:n_units]
    figure = Figure(figsize=(12, 3.2 * len(shown) + (0.4 if title else 0)), layout="constrained")
    axes = figure.subplots(len(shown), 4, squeeze=False)
    for row, vis in zip(axes, shown):
        nat = natural_images(pool, natural[vis.unit], len(vis.sides["max"].images))
        panels = [
            (nat["min"], f"natural min (pool: {vis.sides['min'].natural:.2f})"),
            (vis.sides["min"].images[::-1], f"synthetic min (weakest {vis.sides['min'].weakest:.2f})"),
            (vis.sides["max"].images[::-1], f"synthetic max (weakest {vis.sides['max'].weakest:.2f})"),
            (nat["max"], f"natural max (pool: {vis.sides['max'].natural:.2f})"),
        ]
        for ax, (images, label) in zip(row, panels):
            ax.imshow(_mosaic(images))
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{vis.unit.layer}:{vis.unit.channel}", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=11)
    path = Path(path)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    return path
