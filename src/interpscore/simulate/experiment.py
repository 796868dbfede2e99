"""The embedded default: a simulated IMI release, generated offline from real networks.

Units of real models (pretrained EfficientNet-Lites from PyPI wheels, untrained timm models) get
IMI stimuli from the offline pool; simulated participants do the 2-AFC task with a perceptual
observer whose features are never offered as a predictor backbone: colour, layout and texture
statistics plus the class posteriors of EfficientNet-Lite2. Participants differ in noise, lapses
and side bias; a few are careless so that the exclusion criteria have something to catch.

Output, exactly as the real release would hold it and labelled `source: simulated`:
`responses_main.csv` (trial level, demo and catch rows included), `images/` (stimulus store),
`unit_truth.csv` (each unit's expected accuracy for a typical valid participant),
`unit_activation_stats.csv` (sparsity and spatial contrast of each unit over the pool),
`README.md`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_folder
from ..data.dataset import STATS_FILE
from ..data.layouts import batch_dir, condition_label, unit_id
from ..errors import InputError
from ..resources import DEFAULT_DATA_ROOT
from ..stimuli.selection import build_exemplars
from ..stimuli.store import write_store
from ..stimuli.units import choose_units, unit_depths
from .observers import (OBSERVER_SEMANTIC_MODEL, calibrate_sigma, observer_features, p_correct,
                        trial_evidence)

SIMULATOR_VERSION = 2  # bump when the same config would generate different data
URL_ROOT = "https://simulated.invalid/imi/images"


@dataclass
class SimulationConfig:
    models: list[str] = field(default_factory=lambda: [
        "efficientnet_lite0", "efficientnet_lite1", "resnet18@random", "convnext_atto@random",
        "vit_tiny_patch16_224@random"])
    units_per_model: int = 64
    # model label -> hard conditions shown besides `easy`
    hard: dict = field(default_factory=lambda: {"efficientnet_lite0": ["hard85", "hard95"]})
    pool_size: int = 3000
    image_size: int = 128
    n_refs: int = 9
    n_batches: int = 10
    max_refs_per_source: int = 8
    responses_per_unit: int = 34  # ~30 valid after exclusions
    trials_per_task: int = 20
    catch_per_task: int = 4
    demo_trials: int = 2
    careless_fraction: float = 0.10
    multi_participation_fraction: float = 0.02
    target_accuracy: float = 0.83  # mean easy accuracy of a typical valid participant
    semantic_weight: float = 1.0
    seed: int = 0

    def key(self) -> str:
        """Names the cached release: changes with the config and with the generator's version."""
        payload = json.dumps({**asdict(self), "generator": SIMULATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


# --- participants and experiments --------------------------------------------------------------

CARELESS_KINDS = ("random", "too_fast", "one_row", "no_instructions")


def _assign_tasks(items: list, n_tasks: int, per_task_limit: int, rng) -> list[list]:
    """Spread each condition's repetitions over distinct tasks, balancing task lengths."""
    tasks: list[list] = [[] for _ in range(n_tasks)]
    load = np.zeros(n_tasks)
    units_in = [set() for _ in range(n_tasks)]
    for unit_id, repetitions in items:
        blocked = np.array([unit_id in u for u in units_in])
        score = load + rng.random(n_tasks) * 0.5 + blocked * 1e6 + (load >= per_task_limit) * 1e3
        for t in np.argsort(score)[:len(repetitions)]:
            tasks[t].append(repetitions.pop())
            load[t] += 1
            units_in[t].add(unit_id)
    return [t for t in tasks if t]


def simulate_responses(conditions: pd.DataFrame, trial_images: dict, features: dict,
                       config: SimulationConfig, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulated experiment. `conditions`: one row per unit x difficulty with columns
    model_label, layer, channel, mode, layer_depth, unit (a stimuli.Unit), difficulty, model."""
    # Evidence of every (condition, batch) trial; noise calibrated on the easy conditions.
    evidence = {}
    for row in conditions.itertuples():
        for b in range(config.n_batches):
            paths = trial_images[(row.model, row.unit, row.difficulty, b)]
            evidence[(row.Index, b)] = trial_evidence(features, *paths["pool"])
    easy = np.array([v for (c, _), v in evidence.items()
                     if conditions.loc[c, "difficulty"] == "easy"])
    sigma = calibrate_sigma(easy, config.target_accuracy)
    truth = conditions[["model_label", "layer", "channel", "mode"]].rename(
        columns={"model_label": "model"})
    truth["true_accuracy"] = [np.mean([p_correct(evidence[(c, b)], sigma)
                                       for b in range(config.n_batches)])
                              for c in conditions.index]

    items = [(unit_id(r.model, r.unit.layer, r.unit.channel),
              [(c, int(rng.integers(config.n_batches))) for _ in range(config.responses_per_unit)])
             for c, r in zip(conditions.index, conditions.itertuples())]
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    n_trials = sum(len(reps) for _, reps in items)
    n_tasks = int(np.ceil(n_trials / config.trials_per_task))
    tasks = _assign_tasks(items, n_tasks, config.trials_per_task, rng)

    rows = []
    n_multi = int(round(config.multi_participation_fraction * len(tasks)))
    workers = [f"sim-worker-{k:05d}" for k in range(len(tasks))]
    for k in range(n_multi):  # a few workers take a second task
        workers[len(tasks) - 1 - k] = workers[k]
    for task_number, trials in enumerate(tasks, start=1):
        careless = (CARELESS_KINDS[int(rng.integers(len(CARELESS_KINDS)))]
                    if rng.random() < config.careless_fraction else None)
        rows += _participant_rows(task_number, workers[task_number - 1], trials, conditions,
                                  trial_images, evidence, sigma, careless, config, rng)
    table = pd.DataFrame(rows)
    table["source"] = "simulated"
    return table, truth


def _participant_rows(task_number, worker, trials, conditions, trial_images, evidence, sigma,
                      careless, config, rng) -> list[dict]:
    noise = sigma * float(np.exp(rng.normal(0, 0.25)))
    lapse = float(rng.beta(1, 30))
    bias = float(rng.normal(0, 0.2)) * sigma  # towards the upper row
    # Careless kinds: skipped instructions, or clicked through the whole task.
    instructions_s = {"no_instructions": 5.0, "too_fast": 20.0}.get(careless)
    time_ms = 1000.0 * (instructions_s or max(16.0, rng.normal(60, 20)))
    rt_scale, pause_ms = (0.4, 300) if careless == "too_fast" else (4.5, 1500)
    rows = []
    task_id = f"task-{task_number}"

    def trial(kind, p_max_chosen, **info):
        nonlocal time_ms
        switched = bool(rng.random() < 0.5)  # max query in the lower row when switched
        if callable(p_max_chosen):
            p_max_chosen = float(p_max_chosen(switched))
        chose_max = bool(rng.random() < p_max_chosen)
        upper = chose_max != switched
        if careless == "one_row":
            upper, chose_max = True, not switched
        margin = abs(p_max_chosen - 0.5) * 2 + rng.normal(0, 0.2)
        confidence = int(np.clip(1 + (margin > 0.35) + (margin > 0.75), 1, 3))
        rt = float(rng.lognormal(np.log(rt_scale * 1000 * (1.2 - 0.3 * margin)), 0.35))
        time_ms += rt + float(rng.uniform(200, pause_ms))
        rows.append(dict(
            participant_id=worker, worker_id=worker, task_id=task_id, task_number=task_number,
            response_index=0, trial_index=len(rows), is_demo=kind == "demo",
            catch_trial=kind == "catch", rt=round(rt, 1), time_elapsed=round(time_ms),
            switched_queries=switched, choice="b" if chose_max else "a", correct=chose_max,
            confidence=confidence, button_pressed=(3 - confidence) if upper else (2 + confidence),
            simulated_participant=careless or "attentive", **info))

    def unit_info(c, b, difficulty_mode):
        row = conditions.loc[c]
        folder = batch_dir(row["model"], row["unit"].layer, row["unit"].channel, b, row["difficulty"])
        paths = trial_images[(row["model"], row["unit"], row["difficulty"], b)]
        return dict(
            model=row["model_label"], layer=row["layer"], channel=row["channel"],
            mode=difficulty_mode, batch=b, query_path=f"{URL_ROOT}/{folder}",
            max_query=f"{URL_ROOT}/{paths['query_max']}", min_query=f"{URL_ROOT}/{paths['query_min']}",
            max_references=json.dumps([f"{URL_ROOT}/{p}" for p in paths["refs_max"]]),
            min_references=json.dumps([f"{URL_ROOT}/{p}" for p in paths["refs_min"]]),
            layer_depth=row["layer_depth"])

    attentive = 0.99  # demo and catch trials are easy for anyone who looks
    for _ in range(5):  # the practice block repeats until passed
        passed = True
        for j in range(config.demo_trials):
            trial("demo", 0.5 if careless == "random" else attentive, model="demo", layer="demo", channel=f"demo_{j}",
                  mode="natural", batch=-1, max_query=f"{URL_ROOT}/demo/trials/trial_{j}/queries/max.png")
            passed &= rows[-1]["correct"]
        if passed:
            break
    catch_at = set(rng.choice(len(trials) + config.catch_per_task, config.catch_per_task,
                              replace=False).tolist())
    main = iter(trials)
    for position in range(len(trials) + config.catch_per_task):
        if position in catch_at:
            trial("catch", 0.5 if careless == "random" else attentive, model="catch", layer="catch",
                  channel=f"catch_{position}", mode="catch_trial", batch=-1)
            continue
        c, b = next(main)
        if careless is None:
            def p(switched, e=evidence[(c, b)]):  # the side bias favours the upper row
                return p_correct(e, noise, lapse, -bias if switched else bias)
        else:
            p = 0.5
        trial("main", p, **unit_info(c, b, "natural"))
    return rows


# --- the whole simulated release ---------------------------------------------------------------

def simulation_card(config: SimulationConfig, table: pd.DataFrame) -> str:
    main = table[~table["is_demo"] & ~table["catch_trial"]]
    counts = main.groupby("model").agg(trials=("correct", "size"), accuracy=("correct", "mean"),
                                       units=("query_path", lambda s: s.str.rsplit("/", n=2)
                                              .str[0].nunique()))
    lines = "\n".join(f"| {m} | {r.units} | {r.trials} | {r.accuracy:.3f} |"
                      for m, r in counts.iterrows())
    return f"""---
source: simulated
---
# Simulated IMI release (not human data)

source: simulated. Generated offline by `interpscore simulate` (config key {config.key()}).
Participants are simulated observers (colour/layout/texture statistics + {OBSERVER_SEMANTIC_MODEL}
class posteriors); `unit_truth.csv` holds each unit's true expected accuracy for a typical valid
participant. Accuracy below includes careless participants (before exclusions).

| model (condition) | units | main trials | accuracy |
|---|---:|---:|---:|
{lines}

Config: `{json.dumps(asdict(config))}`
"""


def simulate(out: str | Path, config: SimulationConfig | None = None, pool=None,
             progress: bool = True, overwrite: bool = False) -> Path:
    """Generate the simulated release into OUT (atomically). Returns OUT."""
    from ..stimuli.networks import load_model
    from ..stimuli.pools import default_pool

    config = config or SimulationConfig()
    rng = np.random.default_rng(config.seed)
    pool = pool or default_pool(config.pool_size, config.image_size, config.seed)
    with atomic_folder(out, overwrite) as tmp:
        images = tmp / "images"
        conditions, trial_images, stats = [], {}, []
        for m, spec in enumerate(config.models):
            model = load_model(spec, image_size=config.image_size)
            units = choose_units(model, "auto", config.units_per_model, config.image_size,
                                 config.seed + m)
            difficulties = ["easy", *config.hard.get(model.label, [])]
            exemplars, _constant = build_exemplars(
                model, pool, units, config.n_refs, config.n_batches, difficulties,
                config.max_refs_per_source, seed=config.seed + m, progress=progress)
            paths = write_store(images, model.label, exemplars, pool)
            depths = unit_depths(model, [ex.unit for ex in exemplars])
            for ex in exemplars:
                stats.append(dict(model=model.label, layer=ex.unit.layer,
                                  channel=ex.unit.channel, **ex.stats))
                for difficulty, queries in ex.queries.items():
                    conditions.append(dict(
                        model=model.label, model_label=condition_label(model.label, difficulty),
                        layer=ex.unit.layer, channel=ex.unit.channel, mode="natural",
                        unit=ex.unit, difficulty=difficulty, layer_depth=depths[ex.unit],
                        ties=ex.flags["ties_cover_max_refs"] or ex.flags["ties_cover_min_refs"]))
                    for b, (q_max, q_min) in enumerate(queries):
                        entry = dict(paths[(ex.unit, difficulty, b)])
                        entry["pool"] = (q_max, q_min, ex.refs_max[b], ex.refs_min[b])
                        trial_images[(model.label, ex.unit, difficulty, b)] = entry
        conditions = pd.DataFrame(conditions)
        used = sorted({i for e in trial_images.values() for i in
                       (e["pool"][0], e["pool"][1], *e["pool"][2], *e["pool"][3])})
        features = observer_features(pool, np.array(used), config.semantic_weight)
        table, truth = simulate_responses(conditions, trial_images, features, config, rng)
        truth["ties_cover_refs"] = conditions["ties"].to_numpy()
        table.to_csv(tmp / "responses_main.csv", index=False)
        truth.to_csv(tmp / "unit_truth.csv", index=False)
        pd.DataFrame(stats).to_csv(tmp / STATS_FILE, index=False)
        (tmp / "simulation.json").write_text(json.dumps(asdict(config) | {"key": config.key()},
                                                        indent=2))
        (tmp / "README.md").write_text(simulation_card(config, table))
    return Path(out)


def simulated_dataset_dir(simulation: dict | None = None, data_root: str | Path = DEFAULT_DATA_ROOT) -> Path:
    """Where the prepared simulated dataset of this config lives (built or not)."""
    try:
        config = SimulationConfig(**(simulation or {}))
    except TypeError as err:
        raise InputError(f"simulation config: {err}") from err
    return Path(data_root) / f"simulated-{config.key()}" / "prepared"


def ensure_simulated(simulation: dict | None = None, data_root: str | Path = DEFAULT_DATA_ROOT) -> Path:
    """The prepared simulated dataset of this config, generated and prepared once (cached)."""
    from ..data.dataset import prepare

    prepared = simulated_dataset_dir(simulation, data_root)
    if not (prepared / "dataset_dict.json").is_file():
        release = prepared.parent / "release"
        if not (release / "responses_main.csv").is_file():
            simulate(release, SimulationConfig(**(simulation or {})), overwrite=True)
        prepare(release / "responses_main.csv", prepared, images=release / "images",
                overwrite=True)
    return prepared
