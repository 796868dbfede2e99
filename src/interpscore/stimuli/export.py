"""A ready 2-AFC experiment for chosen units, in the IMI per-task layout, so that a predicted score
can be checked with real people:

    EXP/structure.json                                   (which unit each trial shows)
    EXP/task_<k>/index.json                              (task_name, n_reference_images, n_trials)
    EXP/task_<k>/trials/trial_<j>/queries/{min,max}.png
    EXP/task_<k>/trials/trial_<j>/references/{min,max}_<i>.png

Catch trials (the max query is one of the max references) are mixed in, as in the study.
`select` spends a human-study budget where an answer teaches the metric most: the units with the
widest predicted interval (`uncertain`), the most extreme predictions, or a random draw.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_folder, check_output_folder
from ..data.layouts import QUERY_INDEX, image_name, parse_batch_dir, unit_id
from ..errors import InputError
from .store import link_or_copy


def store_units(stimuli: Path) -> dict[str, list[Path]]:
    """unit id (`model/layer/channel`) -> its batch folders in a stimulus store."""
    units: dict[str, list[Path]] = {}
    for folder in sorted(stimuli.glob("**/natural_images/batch_*")):
        parts = parse_batch_dir(folder.relative_to(stimuli).as_posix())
        if parts and (folder / image_name("max", QUERY_INDEX)).is_file():
            units.setdefault(unit_id(parts["model"], parts["layer"], parts["channel"]),
                             []).append(folder)
    return units


def choose_units(available: list[str], scores: pd.DataFrame | None, units, select, n, seed
                 ) -> list[str]:
    chosen = list(units) if units else list(available)
    unknown = [u for u in chosen if u not in available]
    if unknown:
        raise InputError(f"units not in the stimulus store: {unknown[:5]}; available e.g. "
                         f"{available[:5]}")
    if select is None:
        return chosen
    if select == "random":
        return sorted(np.random.default_rng(seed).choice(chosen, min(n, len(chosen)),
                                                         replace=False).tolist())
    if scores is None:
        raise InputError(f"--select {select} needs --scores (scores.parquet from `score`)")
    frame = scores.assign(unit=[unit_id(m, l, c) for m, l, c in
                                zip(scores["model"], scores["layer"], scores["channel"])])
    frame = frame[frame["unit"].isin(chosen) & frame["score"].notna()]
    if select == "uncertain":
        order = (frame["score_high"] - frame["score_low"]).sort_values(ascending=False).index
        return frame.loc[order[:n], "unit"].tolist()
    if select == "extreme":
        ranked = frame.sort_values("score")["unit"].tolist()
        return ranked[: (n + 1) // 2] + ranked[::-1][: n // 2]
    raise InputError(f"unknown --select {select!r}; valid: uncertain, extreme, random")


def export_experiment(stimuli, out, scores=None, units=None, select=None, n: int = 10,
                      seed: int = 0, trials_per_task: int = 20, catch_per_task: int = 2,
                      overwrite: bool = False) -> Path:
    stimuli, out = Path(stimuli), Path(out)
    if scores is not None and not Path(scores).is_file():
        raise InputError(f"--scores {scores}: no such file; give the scores.parquet of `score`")
    check_output_folder(out, overwrite)
    available = store_units(stimuli) if stimuli.is_dir() else {}
    if not available:
        raise InputError(f"--stimuli {stimuli}: no stimulus store here (expected "
                         "<model>/<layer>/channel_<c>/natural_images/batch_<b>/max_9.png)")
    score_table = pd.read_parquet(scores) if scores else None
    chosen = choose_units(sorted(available), score_table, units, select, n, seed)
    rng = np.random.default_rng(seed)
    trials = [(unit, batch) for unit in chosen for batch in available[unit]]
    order = rng.permutation(len(trials))
    trials = [trials[i] for i in order]
    structure = {"tasks": []}
    with atomic_folder(out, overwrite) as tmp:
        for k, start in enumerate(range(0, len(trials), trials_per_task), start=1):
            main = trials[start:start + trials_per_task]
            catch_at = set(rng.choice(len(main) + catch_per_task, catch_per_task,
                                      replace=False).tolist())
            entries, main_iter = [], iter(main)
            for j in range(1, len(main) + catch_per_task + 1):
                unit, batch = main[(j - 1) % len(main)] if (j - 1) in catch_at else next(main_iter)
                catch = (j - 1) in catch_at
                trial = tmp / f"task_{k}" / "trials" / f"trial_{j}"
                refs = [batch / image_name(side, i) for side in ("max", "min")
                        for i in range(QUERY_INDEX)]
                for ref in refs:
                    if ref.is_file():
                        link_or_copy(ref, trial / "references" / ref.name)
                for side in ("max", "min"):  # a catch trial's query is one of its references
                    query = batch / image_name(side, 0 if catch else QUERY_INDEX)
                    link_or_copy(query, trial / "queries" / f"{side}.png")
                _model, layer, channel = unit.split("/")
                entries.append({"queries": f"catch_trials/{layer}/channel_{channel}/trial_{j}"
                                if catch else batch.relative_to(stimuli).as_posix(),
                                "mode": "catch_trial" if catch else "natural"})
            n_refs = len(list((trial / "references").glob("max_*.png")))
            (tmp / f"task_{k}" / "index.json").write_text(json.dumps(
                {"task_name": f"task_{k}", "n_reference_images": n_refs, "n_trials": len(entries)}))
            structure["tasks"].append({"index": k, "trials": entries})
        (tmp / "structure.json").write_text(json.dumps(structure, indent=1))
        (tmp / "units.json").write_text(json.dumps({"units": chosen, "select": select}, indent=1))
    return out
