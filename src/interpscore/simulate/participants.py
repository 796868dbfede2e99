"""Simulated participants doing the IMI task: each draws a mixture over its audience's
families, cue weights, noise, lapse and side bias, or does the task carelessly (what the
exclusion criteria must catch); an audience is one whole experiment in the IMI trial format."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.exclusion import ExclusionCriteria
from ..data.layouts import batch_dir
from .config import URL_ROOT, SimulationConfig
from .observers import p_correct
from .world import Observers


CARELESS_KINDS = ("random", "too_fast", "one_row", "no_instructions")
# Attentive participants read the instructions for at least a second longer than the exclusions
# ask; the practice block repeats until passed, but no more than two tries past the attempts the
# exclusions allow (a careless participant who never passes is then seen to have needed more).
READING_S = ExclusionCriteria().min_instruction_time_s + 1.0
EXTRA_PRACTICE_ATTEMPTS = 2


def _assign_tasks(items: list, n_tasks: int, per_task_limit: int, rng) -> list[list]:
    """Spread each condition's repetitions over distinct tasks, balancing task lengths."""
    tasks: list[list] = [[] for _ in range(n_tasks)]
    load = np.zeros(n_tasks)
    units_in = [set() for _ in range(n_tasks)]
    for unit, repetitions in items:
        blocked = np.array([unit in u for u in units_in])
        score = load + rng.random(n_tasks) * 0.5 + blocked * 1e6 + (load >= per_task_limit) * 1e3
        for t in np.argsort(score)[:len(repetitions)]:
            tasks[t].append(repetitions.pop())
            load[t] += 1
            units_in[t].add(unit)
    return [t for t in tasks if t]


@dataclass
class Participant:
    """One simulated person: a mixture over the audience's families, cue weights per family,
    noise, lapse, side bias, and possibly a careless way of doing the task."""

    families: list[str]
    mixture: np.ndarray
    noise: float  # multiplies each family's calibrated noise
    lapse: float
    bias: float  # towards the upper row, in units of the noise
    careless: str | None
    seed: int

    @classmethod
    def draw(cls, families, config: SimulationConfig, rng) -> "Participant":
        careless = (CARELESS_KINDS[int(rng.integers(len(CARELESS_KINDS)))]
                    if rng.random() < config.careless_fraction else None)
        return cls(families, rng.dirichlet(np.ones(len(families))), float(np.exp(rng.normal(0, 0.25))),
                   float(rng.beta(1, 30)), float(rng.normal(0, 0.2)), careless,
                   int(rng.integers(2**31)))

    def p_max_chosen(self, observers: Observers, pool: str, task_rows: np.ndarray, switched):
        """P(choosing the max query) in each of its trials, and the family that answered."""
        rng = np.random.default_rng(self.seed)
        chosen = rng.choice(len(self.families), size=len(task_rows), p=self.mixture)
        p = np.full(len(task_rows), 0.5)
        for k, family in enumerate(self.families):
            mine = chosen == k
            if not mine.any():
                continue
            dim = observers.features(pool, family).shape[1]
            weights = np.exp(rng.normal(0, 0.3, dim))  # this person's cue weights
            e = observers.task_evidence(pool, family, task_rows[mine], weights)
            sigma = observers.sigma[family] * self.noise
            bias = np.where(switched[mine], self.bias, -self.bias) * sigma  # + where the max query is upper
            p[mine] = p_correct(e, sigma, self.lapse, bias)
        return p, [self.families[k] for k in chosen]


def simulate_audience(observers: Observers, pool: str, families: list[str], condition_ids,
                      config: SimulationConfig, rng, image_prefix: str) -> pd.DataFrame:
    """One audience's whole experiment over the conditions `condition_ids` of a pool."""
    stimuli = observers.pools[pool]
    task_row = {key: r for r, key in enumerate(observers.keys[pool])}
    items = [(stimuli.records[c]["unit_id"],
              [(c, int(rng.integers(config.n_batches))) for _ in range(config.responses_per_unit)])
             for c in condition_ids]
    items = [items[i] for i in rng.permutation(len(items))]
    n_trials = sum(len(reps) for _, reps in items)
    # Enough tasks that each condition's repetitions go to distinct participants.
    per_task = config.protocol.trials_per_task
    n_tasks = max(int(np.ceil(n_trials / per_task)), config.responses_per_unit)
    tasks = _assign_tasks(items, n_tasks, per_task, rng)
    n_multi = int(round(config.multi_participation_fraction * len(tasks)))
    workers = [f"sim-worker-{k:05d}" for k in range(len(tasks))]
    for k in range(n_multi):  # a few workers take a second task
        workers[len(tasks) - 1 - k] = workers[k]
    rows = []
    for number, trials in enumerate(tasks, start=1):
        person = Participant.draw(families, config, rng)
        rows += _participant_rows(number, workers[number - 1], trials, person, observers, pool,
                                  task_row, config, rng, image_prefix)
    table = pd.DataFrame(rows)
    table["source"] = "simulated"
    return table


def _participant_rows(task_number, worker, trials, person: Participant, observers, pool,
                      task_row, config, rng, image_prefix) -> list[dict]:
    conditions, paths = observers.pools[pool].records, observers.pools[pool].paths
    careless, protocol = person.careless, config.protocol
    # Careless kinds: skipped instructions, or clicked through the whole task.
    instructions_s = {"no_instructions": 5.0, "too_fast": 20.0}.get(careless)
    time_ms = 1000.0 * (instructions_s or max(READING_S, rng.normal(60, 20)))
    rt_scale, pause_ms = (0.4, 300) if careless == "too_fast" else (4.5, 1500)
    rows = []
    task_id = f"task-{task_number}"
    url = f"{URL_ROOT}/{image_prefix}"

    def trial(kind, p_max_chosen, switched, family="none", **info):
        nonlocal time_ms
        chose_max = bool(rng.random() < p_max_chosen)
        if careless == "one_row":  # the upper row, whichever query it shows
            chose_max = protocol.query_row("b", switched) == "upper"
        choice = "b" if chose_max else "a"
        margin = abs(p_max_chosen - 0.5) * 2 + rng.normal(0, 0.2)
        confidence = int(np.clip(1 + (margin > 0.35) + (margin > 0.75), 1, 3))
        rt = float(rng.lognormal(np.log(rt_scale * 1000 * (1.2 - 0.3 * margin)), 0.35))
        time_ms += rt + float(rng.uniform(200, pause_ms))
        rows.append(dict(
            participant_id=worker, worker_id=worker, task_id=task_id, task_number=task_number,
            response_index=0, trial_index=len(rows), is_demo=kind == "demo",
            catch_trial=kind == "catch", rt=round(rt, 1), time_elapsed=round(time_ms),
            switched_queries=switched, choice=choice, correct=chose_max,
            confidence=confidence,
            button_pressed=protocol.button(protocol.query_row(choice, switched), confidence),
            simulated_participant=careless or "attentive", observer_family=family, **info))

    attentive = 0.99  # demo and catch trials are easy for anyone who looks
    easy = 0.5 if careless == "random" else attentive
    for _ in range(protocol.max_demo_attempts + EXTRA_PRACTICE_ATTEMPTS):
        passed = True
        for j in range(protocol.demo_trials):
            trial("demo", easy, bool(rng.random() >= 0.5), model="demo", layer="demo",
                  channel=f"demo_{j}", mode="natural", batch=-1,
                  max_query=f"{URL_ROOT}/demo/trials/trial_{j}/queries/max.png")
            passed &= rows[-1]["correct"]
        if passed:
            break
    switched = rng.random(len(trials)) >= 0.5  # the max query in the upper row
    task_rows = np.array([task_row[t] for t in trials])
    if careless is None:
        p_main, families = person.p_max_chosen(observers, pool, task_rows, switched)
    else:
        p_main, families = np.full(len(trials), 0.5), ["careless"] * len(trials)
    catch_at = set(rng.choice(len(trials) + protocol.catch_per_task, protocol.catch_per_task,
                              replace=False).tolist())
    k = 0
    for position in range(len(trials) + protocol.catch_per_task):
        if position in catch_at:
            trial("catch", easy, bool(rng.random() >= 0.5), model="catch", layer="catch",
                  channel=f"catch_{position}", mode="catch_trial", batch=-1)
            continue
        c, b = trials[k]
        row = conditions[c]
        folder = batch_dir(row["model"], row["layer"], row["channel"], b, row["difficulty"])
        image = paths[(c, b)]
        trial("main", float(p_main[k]), bool(switched[k]), families[k],
              model=row["model_label"], layer=row["layer"], channel=row["channel"],
              mode=row["mode"], batch=b, query_path=f"{url}/{folder}",
              max_query=f"{url}/{image['query_max']}", min_query=f"{url}/{image['query_min']}",
              max_references=json.dumps([f"{url}/{p}" for p in image["refs_max"]]),
              min_references=json.dumps([f"{url}/{p}" for p in image["refs_min"]]),
              layer_depth=row["layer_depth"])
        k += 1
    return rows
