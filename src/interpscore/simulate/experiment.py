"""The embedded default: a simulated IMI release, generated offline from real networks.

Units of real models (pretrained EfficientNet-Lites from PyPI wheels, untrained timm models) get
IMI stimuli from two offline pools of disjoint source images (A for every unit, B again for the
test units). Simulated participants (see `observers`) do the 2-AFC task. The release holds several
*audiences*, each a complete IMI-format response set over the same stimuli:

- `default`: pool A, participants mixing the training families (what `python train.py` fits);
- `family-<name>`: pool A, one family alone (every family, held-out ones included, for
  in-family experiments);
- `heldout-pool-default`, `heldout-pool-<name>`: pool B, test units only, the training mixture
  and each held-out family: the benchmark's headline (new observers on new images).

Each audience folder holds `responses_main.csv` (trial level, demo and catch rows included, the
family behind every answer in `observer_family`), `unit_truth.csv` (each condition's expected
accuracy for a typical valid participant, overall and per family), `unit_splits.csv` (one split
for every audience), `unit_activation_stats.csv`. Everything is labelled `source: simulated`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_folder, check_output_folder
from ..data.dataset import (SPLITS_FILE, STATS_FILE, TRUTH_FILE, assign_splits,
                            split_half_reliability as reliability)
from ..data.layouts import batch_dir, condition_label, unit_id
from ..errors import InputError
from ..resources import DEFAULT_DATA_ROOT
from ..stimuli.selection import build_exemplars
from ..stimuli.store import write_store
from ..stimuli.units import Unit, choose_units, unit_depths
from .observers import (FAMILIES, HELDOUT_FAMILIES, OBSERVER_NETWORK, TRAINING_FAMILIES, calibrate_sigma, evidence, family_features,
                        feature_spaces, p_correct)

SIMULATOR_VERSION = 4  # bump when the same config would generate different data
URL_ROOT = "https://simulated.invalid/imi"
DEFAULT_AUDIENCE = "default"
HELDOUT_POOL = "heldout-pool"


@dataclass
class SimulationConfig:
    models: list[str] = field(default_factory=lambda: [
        "efficientnet_lite0", "efficientnet_lite1", "resnet18@random", "convnext_atto@random",
        "vit_tiny_patch16_224@random"])
    units_per_model: int = 96
    # model label -> hard conditions shown besides `easy`
    hard: dict = field(default_factory=lambda: {"efficientnet_lite0": ["hard85", "hard95",
                                                                       "hard99"]})
    pool_size: int = 3000  # pool A: every unit's stimuli
    heldout_pool_size: int = 1500  # pool B (disjoint source photos): the test units again
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
    target_accuracy: float = 0.83  # mean easy accuracy on trained networks, every family
    val_fraction: float = 0.15
    test_fraction: float = 0.30
    training_families: list = field(default_factory=lambda: [f.name for f in TRAINING_FAMILIES])
    heldout_families: list = field(default_factory=lambda: [f.name for f in HELDOUT_FAMILIES])
    seed: int = 0

    def key(self) -> str:
        """Names the cached release: changes with the config and with the generator's version."""
        payload = json.dumps({**asdict(self), "generator": SIMULATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]

    def check(self) -> None:
        unknown = [f for f in self.training_families + self.heldout_families if f not in FAMILIES]
        if unknown:
            raise InputError(f"simulation: unknown observer families {unknown}; valid: "
                             f"{', '.join(FAMILIES)}")
        if set(self.training_families) & set(self.heldout_families):
            raise InputError("simulation: a family cannot be both a training and a held-out family")
        if not self.training_families:
            raise InputError("simulation: training_families is empty")
        from ..stimuli.networks import check_model_spec

        for spec in self.models:
            check_model_spec(spec, option="--models")


def audiences(config: SimulationConfig) -> dict[str, tuple[str, list[str]]]:
    """Audience name -> (pool, the families its participants mix)."""
    out = {DEFAULT_AUDIENCE: ("A", list(config.training_families))}
    out.update({f"family-{f}": ("A", [f])
                for f in config.training_families + config.heldout_families})
    out[f"{HELDOUT_POOL}-{DEFAULT_AUDIENCE}"] = ("B", list(config.training_families))
    out.update({f"{HELDOUT_POOL}-{f}": ("B", [f]) for f in config.heldout_families})
    return out


def is_pretrained(spec: str) -> bool:
    return "@" not in spec


# --- stimuli --------------------------------------------------------------------------------------

@dataclass
class PoolStimuli:
    """The conditions shown from one pool: one row per unit x difficulty, and per (condition,
    batch) the pool images of its task."""

    pool: object
    conditions: pd.DataFrame
    tasks: dict  # (condition index, batch) -> (q_max, q_min, refs_max, refs_min)
    paths: dict  # (condition index, batch) -> relative image paths in the store
    stats: list

    def __post_init__(self):
        self.records = self.conditions.to_dict("records")  # fast row access per trial


def _stimuli(pool, models, units_of, config, images: Path, progress: bool) -> PoolStimuli:
    """Exemplars of the given units of each model from one pool, written to a stimulus store."""
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
            for difficulty, queries in ex.queries.items():
                c = len(rows)
                rows.append(dict(
                    spec=spec, model=model.label, model_label=condition_label(model.label, difficulty),
                    layer=ex.unit.layer, channel=ex.unit.channel, mode="natural", unit=ex.unit,
                    unit_id=unit_id(model.label, ex.unit.layer, ex.unit.channel),
                    difficulty=difficulty, layer_depth=depths[ex.unit], pretrained=is_pretrained(spec),
                    ties=ex.flags["ties_cover_max_refs"] or ex.flags["ties_cover_min_refs"]))
                for b, (q_max, q_min) in enumerate(queries):
                    tasks[(c, b)] = (q_max, q_min, ex.refs_max[b], ex.refs_min[b])
                    paths[(c, b)] = store[(ex.unit, difficulty, b)]
    return PoolStimuli(pool, pd.DataFrame(rows), tasks, paths, stats)


def _task_arrays(stimuli: PoolStimuli, where: dict):
    """Per task (in a fixed order) the rows of its images in a feature table."""
    keys = sorted(stimuli.tasks)
    t = [stimuli.tasks[k] for k in keys]
    return keys, (np.array([where[x[0]] for x in t]), np.array([where[x[1]] for x in t]),
                  np.array([[where[i] for i in x[2]] for x in t]),
                  np.array([[where[i] for i in x[3]] for x in t]))


# --- the observers' evidence and calibration --------------------------------------------------------

class Observers:
    """Every family's view of every task of both pools, its noise level calibrated on the
    trained networks' easy conditions of pool A, and each condition's true accuracy."""

    def __init__(self, pools: dict[str, PoolStimuli], config: SimulationConfig):
        self.config = config
        self._features = {}
        used = {name: np.array(sorted({i for t in s.tasks.values()
                                       for i in (t[0], t[1], *t[2], *t[3])}))
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
        easy_trained = np.array([calibration.loc[c, "difficulty"] == "easy"
                                 and calibration.loc[c, "pretrained"] for c, _ in self.keys["A"]])
        if not easy_trained.any():  # no pretrained model in the config: calibrate on all easy
            easy_trained = np.array([calibration.loc[c, "difficulty"] == "easy"
                                     for c, _ in self.keys["A"]])
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


# --- participants and experiments ---------------------------------------------------------------

CARELESS_KINDS = ("random", "too_fast", "one_row", "no_instructions")


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
            bias = np.where(switched[mine], -self.bias, self.bias) * sigma
            p[mine] = p_correct(e, sigma, self.lapse, bias)
        return p, [self.families[k] for k in chosen]


def simulate_audience(observers: Observers, pool: str, families: list[str], condition_ids,
                      config: SimulationConfig, rng, image_prefix: str) -> pd.DataFrame:
    """One audience's whole experiment over the conditions `condition_ids` of a pool."""
    stimuli = observers.pools[pool]
    conditions = stimuli.conditions
    task_row = {key: r for r, key in enumerate(observers.keys[pool])}
    items = [(stimuli.records[c]["unit_id"],
              [(c, int(rng.integers(config.n_batches))) for _ in range(config.responses_per_unit)])
             for c in condition_ids]
    items = [items[i] for i in rng.permutation(len(items))]
    n_trials = sum(len(reps) for _, reps in items)
    # Enough tasks that each condition's repetitions go to distinct participants.
    n_tasks = max(int(np.ceil(n_trials / config.trials_per_task)), config.responses_per_unit)
    tasks = _assign_tasks(items, n_tasks, config.trials_per_task, rng)
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
    careless = person.careless
    # Careless kinds: skipped instructions, or clicked through the whole task.
    instructions_s = {"no_instructions": 5.0, "too_fast": 20.0}.get(careless)
    time_ms = 1000.0 * (instructions_s or max(16.0, rng.normal(60, 20)))
    rt_scale, pause_ms = (0.4, 300) if careless == "too_fast" else (4.5, 1500)
    rows = []
    task_id = f"task-{task_number}"
    url = f"{URL_ROOT}/{image_prefix}"

    def trial(kind, p_max_chosen, switched, family="none", **info):
        nonlocal time_ms
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
            simulated_participant=careless or "attentive", observer_family=family, **info))

    attentive = 0.99  # demo and catch trials are easy for anyone who looks
    easy = 0.5 if careless == "random" else attentive
    for _ in range(5):  # the practice block repeats until passed
        passed = True
        for j in range(config.demo_trials):
            trial("demo", easy, bool(rng.random() < 0.5), model="demo", layer="demo",
                  channel=f"demo_{j}", mode="natural", batch=-1,
                  max_query=f"{URL_ROOT}/demo/trials/trial_{j}/queries/max.png")
            passed &= rows[-1]["correct"]
        if passed:
            break
    switched = rng.random(len(trials)) < 0.5  # max query in the lower row when switched
    task_rows = np.array([task_row[t] for t in trials])
    if careless is None:
        p_main, families = person.p_max_chosen(observers, pool, task_rows, switched)
    else:
        p_main, families = np.full(len(trials), 0.5), ["careless"] * len(trials)
    catch_at = set(rng.choice(len(trials) + config.catch_per_task, config.catch_per_task,
                              replace=False).tolist())
    k = 0
    for position in range(len(trials) + config.catch_per_task):
        if position in catch_at:
            trial("catch", easy, bool(rng.random() < 0.5), model="catch", layer="catch",
                  channel=f"catch_{position}", mode="catch_trial", batch=-1)
            continue
        c, b = trials[k]
        row = conditions[c]
        folder = batch_dir(row["model"], row["layer"], row["channel"], b, row["difficulty"])
        image = paths[(c, b)]
        trial("main", float(p_main[k]), bool(switched[k]), families[k],
              model=row["model_label"], layer=row["layer"], channel=row["channel"],
              mode="natural", batch=b, query_path=f"{url}/{folder}",
              max_query=f"{url}/{image['query_max']}", min_query=f"{url}/{image['query_min']}",
              max_references=json.dumps([f"{url}/{p}" for p in image["refs_max"]]),
              min_references=json.dumps([f"{url}/{p}" for p in image["refs_min"]]),
              layer_depth=row["layer_depth"])
        k += 1
    return rows


# --- the card's calibration table ---------------------------------------------------------------

def split_half_reliability(table: pd.DataFrame, seed: int = 0) -> float:
    """Spearman-Brown corrected split-half reliability of per-condition accuracy, from the
    attentive participants' main trials (what the exclusions keep)."""
    main = table[(table["simulated_participant"] == "attentive") & ~table["is_demo"]
                 & ~table["catch_trial"]]
    counts = main.groupby(["model", "layer", "channel"])["correct"].agg(["size", "sum"])
    return reliability(counts["size"].to_numpy(), counts["sum"].to_numpy(), seed=seed)


def calibration_rows(name: str, conditions: pd.DataFrame, truth: pd.DataFrame,
                     table: pd.DataFrame) -> dict:
    """What the card reports of one audience: each model's easy accuracy, the accuracy per
    difficulty of the models shown in hard conditions, responses per condition and split-half
    reliability."""
    frame = conditions[["model", "difficulty"]].assign(p=truth["true_accuracy"].to_numpy())
    main = table[(table["simulated_participant"] == "attentive") & ~table["is_demo"]
                 & ~table["catch_trial"]]
    row = {"audience": name}
    for model, group in frame[frame["difficulty"] == "easy"].groupby("model", sort=True):
        row[f"easy {model}"] = float(group["p"].mean())
    hard_models = frame.loc[frame["difficulty"] != "easy", "model"].unique()
    for difficulty, group in frame[frame["model"].isin(hard_models)].groupby("difficulty"):
        row[f"{difficulty} ({', '.join(hard_models)})"] = float(group["p"].mean())
    row["valid responses per condition"] = float(
        main.groupby(["model", "layer", "channel"]).size().mean())
    row["split-half reliability"] = split_half_reliability(table)
    return row


def simulation_card(config: SimulationConfig, calibration: pd.DataFrame, sigma: dict) -> str:
    columns = list(calibration.columns)
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "---|" * len(columns)
    body = "\n".join("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v)
                                       for v in row) + " |"
                     for row in calibration.itertuples(index=False))
    families = "\n".join(
        f"- `{name}` ({'training' if name in config.training_families else 'held out'}): "
        f"sees {' + '.join(FAMILIES[name].features)}, decides by `{FAMILIES[name].rule}`, "
        f"noise {sigma[name]:.4f}" for name in config.training_families + config.heldout_families)
    return f"""---
source: simulated
---
# Simulated IMI release (not human data)

source: simulated. Generated offline by `interpscore simulate` (config key {config.key()}).
Every answer comes from a simulated participant, a hypothesis about people, not a person: a
metric that agrees with these answers agrees with the simulator. The families differ in what
they see and how they decide, so that no single rule is the truth; held-out families and a
held-out image pool test whether a metric learned something beyond the families it was fit on.

## Observer families
The observers' network is {OBSERVER_NETWORK} (never offered as a predictor backbone).
{families}

Each participant draws a mixture over its audience's families (Dirichlet(1)), per-dimension cue
weights (log-normal, sd 0.3), a noise factor (log-normal, sd 0.25), a lapse rate (Beta(1, 30))
and a side bias. `observer_family` records the family behind every
answer. Each family's noise is calibrated so that a typical participant's mean accuracy on the
trained networks' easy conditions of pool A is {config.target_accuracy}.

## Pools and hard queries
Pool A ({config.pool_size} images) holds every unit's stimuli; pool B
({config.heldout_pool_size} images, disjoint source photos and dead-leaves colours) holds the
test units' stimuli again. In IMI the references and easy queries are each side's top 200 of
1.28 million images, and hard99 lies 64 times deeper in rank than that top, hard95 320 times,
hard85 960 times. A pool of a few thousand has no room for those depths, and a plain percentile
would put hard99 right after the easy queries (as easy as easy, in the first release). So each
hard query sits as deep below the unit's references and easy queries as in IMI in log rank,
measured as a fraction of the distance from that top to the median (`effective_quantile`): in
pool A, hard99 / hard95 / hard85 fall near ranks 400 / 690 / 1000 of 3000.

## Calibration, measured (true accuracy of a typical participant; reliability from the answers)
{header}
{rule}
{body}

Ranges the tests hold every audience to (`tests/test_calibration.py`): on pool A the trained
networks' easy accuracy 0.78-0.88 (on pool B, new images, 0.65-0.90), the networks not all alike,
hard85 < hard95 < hard99 < easy with easy - hard85 at least 0.05, 25-35 valid responses per
condition, split-half reliability 0.5-0.97.

Config: `{json.dumps(asdict(config))}`
"""


# --- the whole simulated release ---------------------------------------------------------------

def _truth_table(conditions: pd.DataFrame, observers: Observers, pool: str, families) -> pd.DataFrame:
    truth = conditions[["model_label", "layer", "channel", "mode"]].rename(
        columns={"model_label": "model"})
    per_family = {f: observers.true_accuracy(pool, f) for f in families}
    truth["true_accuracy"] = np.mean(list(per_family.values()), axis=0)  # Dirichlet(1) mean
    for f, values in per_family.items():
        truth[f"true_accuracy_{f}"] = values
    truth["ties_cover_refs"] = conditions["ties"].to_numpy()
    return truth


def simulate(out: str | Path, config: SimulationConfig | None = None, progress: bool = True,
             overwrite: bool = False) -> Path:
    """Generate the simulated release into OUT (atomically). Returns OUT."""
    from ..stimuli.networks import load_model
    from ..stimuli.pools import default_pool

    config = config or SimulationConfig()
    config.check()
    check_output_folder(out, overwrite)
    rng = np.random.default_rng(config.seed)
    pool_a = default_pool(config.pool_size, config.image_size, config.seed, part="A")
    pool_b = default_pool(config.heldout_pool_size, config.image_size, config.seed, part="B")
    with atomic_folder(out, overwrite) as tmp:
        models, units_of = {}, {}
        for m, spec in enumerate(config.models):
            models[spec] = load_model(spec, image_size=config.image_size)
            units_of[spec] = choose_units(models[spec], "auto", config.units_per_model,
                                          config.image_size, config.seed + m)
        stimuli = {"A": _stimuli(pool_a, models, units_of, config, tmp / "images", progress)}
        conditions = stimuli["A"].conditions
        split = assign_splits(conditions, config.seed, config.val_fraction, config.test_fraction)
        conditions["split"] = split.to_numpy()
        test_rows = conditions[conditions["split"] == "test"].drop_duplicates("unit_id")
        test = {spec: list(group["unit"]) for spec, group in test_rows.groupby("spec")}
        stimuli["B"] = _stimuli(pool_b, models, test, config, tmp / "images_heldout_pool", progress)
        del models
        observers = Observers(stimuli, config)
        splits = (conditions.drop_duplicates("unit_id")[["unit_id", "split"]]
                  .assign(fold=lambda f: f["unit_id"].str.split("/").str[0]
                          .map({m: i for i, m in enumerate(sorted(conditions["model"].unique()))})))
        calibration = []
        for name, (pool, families) in audiences(config).items():
            s = stimuli[pool]
            folder = tmp / "audiences" / name
            folder.mkdir(parents=True)
            images = "images" if pool == "A" else "images_heldout_pool"
            table = simulate_audience(observers, pool, families, list(s.conditions.index), config,
                                      rng, images)
            truth = _truth_table(s.conditions, observers, pool, families)
            table.to_csv(folder / "responses_main.csv", index=False)
            truth.to_csv(folder / TRUTH_FILE, index=False)
            splits.to_csv(folder / SPLITS_FILE, index=False)
            pd.DataFrame(s.stats).to_csv(folder / STATS_FILE, index=False)
            (folder / "images.json").write_text(json.dumps({"images": images}))
            calibration.append(calibration_rows(name, s.conditions, truth, table))
        calibration = pd.DataFrame(calibration)
        calibration.to_csv(tmp / "calibration.csv", index=False)
        (tmp / "simulation.json").write_text(json.dumps(
            asdict(config) | {"key": config.key(), "sigma": observers.sigma}, indent=2))
        (tmp / "README.md").write_text(simulation_card(config, calibration, observers.sigma))
    return Path(out)


def simulated_release_dir(simulation: dict | None = None,
                          data_root: str | Path = DEFAULT_DATA_ROOT) -> Path:
    try:
        config = SimulationConfig(**(simulation or {}))
    except TypeError as err:
        raise InputError(f"simulation config: {err}") from err
    return Path(data_root) / f"simulated-{config.key()}"


def simulated_dataset_dir(simulation: dict | None = None, data_root: str | Path = DEFAULT_DATA_ROOT,
                          audience: str = DEFAULT_AUDIENCE) -> Path:
    """Where the prepared dataset of one audience of this config lives (built or not)."""
    return simulated_release_dir(simulation, data_root) / "prepared" / audience


def ensure_simulated(simulation: dict | None = None, data_root: str | Path = DEFAULT_DATA_ROOT,
                     audience: str | None = None) -> Path:
    """The prepared dataset of an audience (default: `default`) of this config, generated and
    prepared once (cached). Preparing one audience prepares all of them."""
    from ..data.dataset import prepare

    config = SimulationConfig(**(simulation or {}))
    root = simulated_release_dir(simulation, data_root)
    release = root / "release"
    if not (release / "simulation.json").is_file():
        simulate(release, config, overwrite=True)
    for name in audiences(config):
        prepared = root / "prepared" / name
        if not (prepared / "dataset_dict.json").is_file():
            folder = release / "audiences" / name
            images = json.loads((folder / "images.json").read_text())["images"]
            prepare(folder / "responses_main.csv", prepared, images=release / images,
                    overwrite=True)
    name = audience or DEFAULT_AUDIENCE
    if name not in audiences(config):
        raise InputError(f"unknown audience {name!r}; valid: {', '.join(audiences(config))}")
    return root / "prepared" / name


def simulated_audiences(simulation: dict | None = None,
                        data_root: str | Path = DEFAULT_DATA_ROOT) -> dict[str, dict]:
    """Every audience of a built release: {name: {path, pool, families, heldout_family}}."""
    config = SimulationConfig(**(simulation or {}))
    root = simulated_release_dir(simulation, data_root) / "prepared"
    return {name: {"path": root / name, "pool": pool, "families": families}
            for name, (pool, families) in audiences(config).items()}


def benchmark_datasets(simulation: dict | None = None,
                       data_root: str | Path = DEFAULT_DATA_ROOT) -> dict:
    """What a head trained on the default audience is measured on: every other audience of the
    release, the headline being the held-out families on the held-out pool."""
    config = SimulationConfig(**(simulation or {}))
    found = simulated_audiences(simulation, data_root)
    # The held-out pool (every audience) and the held-out families on pool A: the two kinds of
    # novelty apart. The training families' single audiences are for in-family experiments.
    wanted = [name for name, a in found.items() if a["pool"] == "B"]
    wanted += [f"family-{f}" for f in config.heldout_families]
    return {"datasets": {name: found[name]["path"] for name in wanted
                         if (found[name]["path"] / "dataset_dict.json").is_file()},
            "headline": [f"{HELDOUT_POOL}-{f}" for f in config.heldout_families]}
