"""A ready 2-AFC experiment for chosen units, in the IMI per-task layout, so that a predicted score
can be checked with real people:

    EXP/structure.json                                   (which unit each trial shows)
    EXP/task_<k>/index.json                              (task_name, n_reference_images, n_trials)
    EXP/task_<k>/trials/trial_<j>/queries/{min,max}.png
    EXP/task_<k>/trials/trial_<j>/references/{min,max}_<i>.png

Catch trials (the max query is one of the max references) are mixed in, as in the study.
`select` spends a human-study budget where an answer teaches the metric most (the rules are
`data.selection`'s).
`plan_experiment` (the checks, the units, which trials go in which task) is shared with the
browser study (`interpscore.study.build`), which shows the same plan in a jsPsych page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_folder, check_output_folder
from ..data.layouts import QUERY_INDEX, image_name, parse_batch_dir, unit_id
from ..errors import InputError
from ..protocol import IMI
from .readouts import score_unit_ids, unit_layer
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


def readout_units(available: dict[str, list[Path]], readout, stimuli: Path
                  ) -> dict[str, list[Path]]:
    """The store's units that `readout` (`--features`) made: their layer folder is the one
    `readouts.unit_layer` names for it."""
    layer = unit_layer(readout.layer, readout.identity())
    kept = {u: b for u, b in available.items() if "/".join(u.split("/")[1:-1]) == layer}
    if not kept:
        raise InputError(f"--features {readout.source}: the stimulus store {stimuli} holds no "
                         f"units of it (folders {layer}/channel_<c>); score them first with "
                         "`interpscore score --features ... --save-stimuli`")
    return kept


def choose_units(available: list[str], scores: pd.DataFrame | None, units, select, n, seed
                 ) -> list[str]:
    """The units of a study: those given (default: every unit of the store), or `n` of them
    chosen by the rule `select` (`data.selection`) from the scores `interpscore score` wrote."""
    from ..data.selection import NEEDS_SCORES, choose

    chosen = list(units) if units else list(available)
    unknown = [u for u in chosen if u not in available]
    if unknown:
        raise InputError(f"--units: {unknown[:5]} not in the stimulus store; available e.g. "
                         f"{available[:5]}")
    if select is None:
        return chosen
    if select in NEEDS_SCORES and scores is None:
        raise InputError(f"--select {select} needs --scores (scores.parquet from `score`)")
    if scores is None:
        frame = pd.DataFrame({"unit_id": chosen, "model": [u.split("/")[0] for u in chosen]})
    else:
        frame = scores.assign(unit_id=score_unit_ids(scores))
        frame = frame[frame["unit_id"].isin(chosen)]
    picked = choose(frame, select, n, seed)
    return sorted(picked) if select == "random" else picked


@dataclass
class PlannedTrial:
    unit: str  # model/layer/channel
    batch: Path  # its batch folder in the stimulus store
    catch: bool = False  # a catch trial's queries are its most extreme references


@dataclass
class ExperimentPlan:
    available: dict[str, list[Path]]  # every unit of the store -> its batch folders
    units: list[str]  # the units chosen
    tasks: list[list[PlannedTrial]]  # each task's trials in the order shown


def plan_tasks(trials: list[tuple[str, Path]], trials_per_task: int, catch_per_task: int,
               rng: np.random.Generator) -> list[list[PlannedTrial]]:
    """Shuffle the (unit, batch) trials into as few tasks of at most `trials_per_task` as hold
    them, of near-equal length; each task gets `catch_per_task` catch trials on its own units,
    at random places."""
    order = rng.permutation(len(trials))
    n_tasks = -(-len(trials) // trials_per_task)
    tasks = []
    for chunk in np.array_split(order, n_tasks):
        main = [PlannedTrial(*trials[i]) for i in chunk]
        picks = rng.choice(len(main), catch_per_task, replace=catch_per_task > len(main))
        catch = [PlannedTrial(main[i].unit, main[i].batch, catch=True) for i in picks]
        task = main + catch
        tasks.append([task[i] for i in rng.permutation(len(task))])
    return tasks


def plan_experiment(stimuli, out, scores=None, units=None, select=None, n: int = 10,
                    seed: int = 0, trials_per_task: int = IMI.trials_per_task,
                    catch_per_task: int = IMI.catch_per_task,
                    overwrite: bool = False, readout=None) -> ExperimentPlan:
    """Check the request (before any work) and plan it: every batch of each chosen unit is one
    main trial. `readout` (`--features`) keeps the store's units of that readout."""
    stimuli, out = Path(stimuli), Path(out)
    if trials_per_task < 1:
        raise InputError(f"--trials-per-task {trials_per_task}: must be at least 1")
    if catch_per_task < 0:
        raise InputError(f"--catch-per-task {catch_per_task}: must be 0 or more")
    if scores is not None and not Path(scores).is_file():
        raise InputError(f"--scores {scores}: no such file; give the scores.parquet of `score`")
    check_output_folder(out, overwrite)
    available = store_units(stimuli) if stimuli.is_dir() else {}
    if not available:
        raise InputError(f"--stimuli {stimuli}: no stimulus store here (expected "
                         "<model>/<layer>/channel_<c>/natural_images/batch_<b>/max_9.png)")
    if readout is not None:
        available = readout_units(available, readout, stimuli)
    score_table = pd.read_parquet(scores) if scores else None
    chosen = choose_units(sorted(available), score_table, units, select, n, seed)
    rng = np.random.default_rng(seed)
    trials = [(unit, batch) for unit in chosen for batch in available[unit]]
    return ExperimentPlan(available, chosen, plan_tasks(trials, trials_per_task,
                                                        catch_per_task, rng))


def export_experiment(stimuli, out, scores=None, units=None, select=None, n: int = 10,
                      seed: int = 0, trials_per_task: int = IMI.trials_per_task,
                      catch_per_task: int = IMI.catch_per_task,
                      overwrite: bool = False, readout=None) -> Path:
    stimuli, out = Path(stimuli), Path(out)
    plan = plan_experiment(stimuli, out, scores, units, select, n, seed, trials_per_task,
                           catch_per_task, overwrite, readout)
    structure = {"tasks": []}
    with atomic_folder(out, overwrite) as tmp:
        for k, planned in enumerate(plan.tasks, start=1):
            entries = []
            for j, t in enumerate(planned, start=1):
                trial = tmp / f"task_{k}" / "trials" / f"trial_{j}"
                refs = [t.batch / image_name(side, i) for side in ("max", "min")
                        for i in range(QUERY_INDEX)]
                for ref in refs:
                    if ref.is_file():
                        link_or_copy(ref, trial / "references" / ref.name)
                for side in ("max", "min"):  # a catch trial's query is one of its references
                    query = t.batch / image_name(side, 0 if t.catch else QUERY_INDEX)
                    link_or_copy(query, trial / "queries" / f"{side}.png")
                _model, layer, channel = t.unit.split("/")
                entries.append({"queries": f"catch_trials/{layer}/channel_{channel}/trial_{j}"
                                if t.catch else t.batch.relative_to(stimuli).as_posix(),
                                "mode": "catch_trial" if t.catch else "natural"})
            n_refs = len(list((trial / "references").glob("max_*.png")))
            (tmp / f"task_{k}" / "index.json").write_text(json.dumps(
                {"task_name": f"task_{k}", "n_reference_images": n_refs, "n_trials": len(entries)}))
            structure["tasks"].append({"index": k, "trials": entries})
        (tmp / "structure.json").write_text(json.dumps(structure, indent=1))
        (tmp / "units.json").write_text(json.dumps({"units": plan.units, "select": select},
                                                   indent=1))
    return out
