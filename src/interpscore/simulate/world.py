"""The simulated world: the units' stimuli from each pool, and every observer family's view of
every task (its evidence, its calibrated noise, each condition's true accuracy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.layouts import condition_label, unit_id
from ..stimuli.selection import build_exemplars
from ..stimuli.store import write_store
from ..stimuli.units import unit_depths
from .config import SimulationConfig, is_pretrained
from .observers import FAMILIES, calibrate_sigma, evidence, family_features, feature_spaces, p_correct


@dataclass
class PoolStimuli:
    """The conditions shown from one pool: one row per unit x difficulty, and per (condition,
    batch) the pool images of its task."""

    pool: object
    conditions: pd.DataFrame
    tasks: dict  # (condition index, batch) -> its Task in pool indices
    paths: dict  # (condition index, batch) -> relative image paths in the store
    stats: list

    def __post_init__(self):
        self.records = self.conditions.to_dict("records")  # fast row access per trial


def pool_stimuli(pool, models, units_of, config, images: Path, progress: bool,
                 visualisations: dict | None = None) -> PoolStimuli:
    """Exemplars of the given units of each model from one pool, written to a stimulus store;
    where the config asks for them (`synthetic`), an `optimized` condition of some units too:
    their feature visualisations as references (made once, kept in `visualisations` for the
    other pool), natural queries from this pool."""
    from ..stimuli.networks import load_model

    rows, tasks, paths, stats = [], {}, {}, []
    for m, spec in enumerate(config.models):
        if not units_of.get(spec):
            continue
        model = models.get(spec) or load_model(spec, image_size=config.image_size)
        difficulties = ["easy", *config.hard.get(model.label, [])]
        exemplars, _constant = build_exemplars(
            model, pool, units_of[spec], config.n_refs, config.n_batches, difficulties,
            config.max_refs_per_source, seed=config.seed + m, progress=progress)
        store = write_store(images, model.label, exemplars, pool)
        depths = unit_depths(model, [ex.unit for ex in exemplars])
        for ex in exemplars:
            stats.append(dict(model=model.label, layer=ex.unit.layer, channel=ex.unit.channel,
                              **ex.stats))
            for difficulty in ex.queries:
                c = len(rows)
                rows.append(dict(
                    spec=spec, model=model.label, model_label=condition_label(model.label, difficulty),
                    layer=ex.unit.layer, channel=ex.unit.channel, mode="natural", unit=ex.unit,
                    unit_id=unit_id(model.label, ex.unit.layer, ex.unit.channel),
                    difficulty=difficulty, layer_depth=depths[ex.unit], pretrained=is_pretrained(spec),
                    ties=ex.flags["ties_cover_max_refs"] or ex.flags["ties_cover_min_refs"]))
                for b, task in enumerate(ex.tasks(difficulty)):
                    tasks[(c, b)] = task
                    paths[(c, b)] = store[(ex.unit, difficulty, b)]
        if config.synthetic.get(model.label):
            from .synthetic import add_optimized_conditions

            pool = add_optimized_conditions(model, spec, pool, exemplars, config, images, rows,
                                            tasks, paths, visualisations, progress)
    return PoolStimuli(pool, pd.DataFrame(rows), tasks, paths, stats)


def _task_arrays(stimuli: PoolStimuli, where: dict):
    """Per task (in a fixed order) the rows of its images in a feature table."""
    keys = sorted(stimuli.tasks)
    t = [stimuli.tasks[k].map(where.__getitem__) for k in keys]
    return keys, (np.array([x.query_max for x in t]), np.array([x.query_min for x in t]),
                  np.array([x.refs_max for x in t]), np.array([x.refs_min for x in t]))


# --- the observers' evidence and calibration --------------------------------------------------------

class Observers:
    """Every family's view of every task of both pools, its noise level calibrated on the
    trained networks' easy conditions of pool A, and each condition's true accuracy."""

    def __init__(self, pools: dict[str, PoolStimuli], config: SimulationConfig):
        self.config = config
        self._features = {}
        used = {name: np.array(sorted({i for t in s.tasks.values() for i in t.images()}))
                for name, s in pools.items()}
        spaces = feature_spaces([(pools[name].pool, used[name]) for name in pools])
        self.spaces = dict(zip(pools, spaces))
        self.where = {name: {int(i): r for r, i in enumerate(used[name])} for name in pools}
        self.pools = pools
        self.keys, self.arrays = {}, {}
        for name, stimuli in pools.items():
            self.keys[name], self.arrays[name] = _task_arrays(stimuli, self.where[name])
        self.sigma = {}
        self.family_names = config.training_families + config.heldout_families
        calibration = pools["A"].conditions
        # Calibrated on natural exemplars (a synthetic condition's level is the observers' own).
        easy = np.array([calibration.loc[c, "difficulty"] == "easy"
                         and calibration.loc[c, "mode"] == "natural" for c, _ in self.keys["A"]])
        trained = np.array([bool(calibration.loc[c, "pretrained"]) for c, _ in self.keys["A"]])
        # no pretrained model in the config: calibrate on every model's easy conditions
        easy_trained = easy & trained if (easy & trained).any() else easy
        for name in self.family_names:
            e = self.typical_evidence("A", name)
            self.sigma[name] = calibrate_sigma(e[easy_trained], config.target_accuracy)

    def features(self, pool: str, family: str) -> np.ndarray:
        key = (pool, family)
        if key not in self._features:
            self._features[key] = family_features(self.spaces[pool], FAMILIES[family])
        return self._features[key]

    def task_evidence(self, pool: str, family: str, task_rows, weights=None):
        q_max, q_min, r_max, r_min = (a[task_rows] for a in self.arrays[pool])
        return evidence(FAMILIES[family].rule, self.features(pool, family), q_max, q_min,
                        r_max, r_min, weights)

    def typical_evidence(self, pool: str, family: str) -> np.ndarray:
        """Evidence of a typical participant (unit cue weights) for every task of the pool,
        in `self.keys[pool]` order."""
        return self.task_evidence(pool, family, np.arange(len(self.keys[pool])))

    def true_accuracy(self, pool: str, family: str) -> np.ndarray:
        """Per condition of the pool: mean P(correct) of a typical participant over its tasks."""
        p = p_correct(self.typical_evidence(pool, family), self.sigma[family])
        frame = pd.DataFrame({"c": [c for c, _ in self.keys[pool]], "p": p})
        return frame.groupby("c")["p"].mean().reindex(range(len(self.pools[pool].conditions))).to_numpy()
