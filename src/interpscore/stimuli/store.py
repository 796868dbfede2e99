"""The stimulus store: exemplars written in the IMI layout (naming rules in `data.layouts`), each
pool image encoded once and hard-linked into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..data.layouts import QUERY_INDEX, batch_dir, image_name
from .selection import UnitExemplars


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
        for difficulty in ex.queries:
            for b, task in enumerate(ex.tasks(difficulty)):
                folder = batch_dir(model_label, ex.unit.layer, ex.unit.channel, b, difficulty)
                paths = {"refs_max": [], "refs_min": []}
                for side, refs in (("max", task.refs_max), ("min", task.refs_min)):
                    for i, image in enumerate(refs):
                        rel = f"{folder}/{image_name(side, i)}"
                        link_or_copy(pool_file(image), root / rel)
                        paths[f"refs_{side}"].append(rel)
                for side, image in (("max", task.query_max), ("min", task.query_min)):
                    rel = f"{folder}/{image_name(side, QUERY_INDEX)}"
                    link_or_copy(pool_file(image), root / rel)
                    paths[f"query_{side}"] = rel
                trials[(ex.unit, difficulty, b)] = paths
    return trials
