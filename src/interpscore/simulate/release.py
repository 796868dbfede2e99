"""The whole simulated release: stimuli, observers and every audience's experiment written in
the IMI formats with the dataset card, and where a config's release and its prepared audiences
live (built once, cached)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from ..atomic import atomic_folder, check_output_folder
from ..data.dataset import SPLITS_FILE, STATS_FILE, TRUTH_FILE, assign_splits, split_half_reliability
from ..errors import InputError
from ..resources import DEFAULT_DATA_ROOT, package_file
from ..stimuli.units import choose_units
from .config import (DEFAULT_AUDIENCE, HELDOUT_POOL, SimulationConfig, audiences,
                     simulator_fingerprint)
from .observers import FAMILIES, OBSERVER_NETWORK
from .participants import simulate_audience
from .pinned import (PINNED_ENVIRONMENT, check_pins_held, in_pinned_build, library_versions,
                     run_pinned)
from .world import Observers, pool_stimuli


def audience_reliability(table: pd.DataFrame, seed: int = 0) -> float:
    """Spearman-Brown corrected split-half reliability of per-condition accuracy, from the
    attentive participants' main trials (what the exclusions keep)."""
    main = table[(table["simulated_participant"] == "attentive") & ~table["is_demo"]
                 & ~table["catch_trial"]]
    counts = main.groupby(["model", "layer", "channel", "mode"])["correct"].agg(["size", "sum"])
    return split_half_reliability(counts["size"].to_numpy(), counts["sum"].to_numpy(), seed=seed)


def calibration_rows(name: str, conditions: pd.DataFrame, truth: pd.DataFrame,
                     table: pd.DataFrame) -> dict:
    """What the card reports of one audience: each model's easy accuracy, the accuracy per
    difficulty of the models shown in hard conditions, each model's accuracy with synthetic
    references (where the config has them), responses per condition and split-half
    reliability."""
    frame = conditions[["model", "difficulty", "mode"]].assign(p=truth["true_accuracy"].to_numpy())
    main = table[(table["simulated_participant"] == "attentive") & ~table["is_demo"]
                 & ~table["catch_trial"]]
    row = {"audience": name}
    natural, optimized = frame[frame["mode"] == "natural"], frame[frame["mode"] == "optimized"]
    for model, group in natural[natural["difficulty"] == "easy"].groupby("model", sort=True):
        row[f"easy {model}"] = float(group["p"].mean())
    hard_models = natural.loc[natural["difficulty"] != "easy", "model"].unique()
    for difficulty, group in natural[natural["model"].isin(hard_models)].groupby("difficulty"):
        row[f"{difficulty} ({', '.join(hard_models)})"] = float(group["p"].mean())
    for model, group in optimized.groupby("model", sort=True):
        row[f"synthetic {model}"] = float(group["p"].mean())
    row["valid responses per condition"] = float(
        main.groupby(["model", "layer", "channel", "mode"]).size().mean())
    row["split-half reliability"] = audience_reliability(table)
    return row


def simulation_card(config: SimulationConfig, calibration: pd.DataFrame, sigma: dict,
                    hashes: dict) -> str:
    """The release's dataset card (the template `card.md` filled in)."""
    columns = list(calibration.columns)
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
              for row in calibration.itertuples(index=False)]
    families = "\n".join(
        f"- `{name}` ({'training' if name in config.training_families else 'held out'}): "
        f"sees {' + '.join(FAMILIES[name].features)}, decides by `{FAMILIES[name].rule}`, "
        f"noise {sigma[name]:.4f}" for name in config.training_families + config.heldout_families)
    stages = "\n".join(f"- {stage}: `{digest}`" for stage, digest in hashes.items())
    return Template(package_file("simulate", "card.md").read_text()).substitute(
        key=config.key(), observer_network=OBSERVER_NETWORK, families=families,
        target_accuracy=config.target_accuracy, pool_size=config.pool_size,
        heldout_pool_size=config.heldout_pool_size, calibration="\n".join(table),
        hashes=stages, config=json.dumps(asdict(config)))


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


def digest(*parts) -> str:
    """A content hash of arrays, tables and JSON-able values (stage hashes of a release)."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, pd.DataFrame):
            h.update(part.to_csv(index=False).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def stage_hashes(pools: dict, stimuli: dict, observers: Observers) -> dict[str, str]:
    """Hashes of what each stage made, in pipeline order: the pools' pixels, the exemplars chosen
    from the networks' activations, the observers' features and noise levels."""
    out = {}
    for name, pool in pools.items():
        out[f"pool {name}"] = digest(pool.images)
    for name, s in stimuli.items():
        tasks = [[*key, *map(int, t.images())]
                 for key, t in sorted(s.tasks.items())]
        out[f"exemplars {name}"] = digest(s.conditions[["unit_id", "difficulty"]], tasks)
    for name, spaces in observers.spaces.items():
        out[f"features {name}"] = digest(*(spaces[k] for k in sorted(spaces)))
    out["noise levels"] = digest(observers.sigma)
    return out


def simulate(out: str | Path, config: SimulationConfig | None = None, progress: bool = True,
             overwrite: bool = False) -> Path:
    """Generate the simulated release into OUT (atomically), in a child process whose CPU
    kernels are pinned (`pinned`), so it is the same on every machine. Returns OUT."""
    config = config or SimulationConfig()
    config.check()
    check_output_folder(out, overwrite)
    if in_pinned_build():
        build_here(Path(out), config, progress, overwrite)
    else:
        run_pinned(Path(out), config, progress, overwrite)
    return Path(out)


def build_here(out: Path, config: SimulationConfig, progress: bool, overwrite: bool) -> None:
    """The release, built in this process (`simulate` calls it in the pinned child)."""
    from ..stimuli.networks import load_model
    from ..stimuli.pools import default_pool

    rng = np.random.default_rng(config.seed)
    pool_a = default_pool(config.pool_size, config.image_size, config.seed, part="A")
    pool_b = default_pool(config.heldout_pool_size, config.image_size, config.seed, part="B")
    with atomic_folder(out, overwrite) as tmp:
        models, units_of = {}, {}
        for m, spec in enumerate(config.models):
            models[spec] = load_model(spec, image_size=config.image_size)
            units_of[spec] = choose_units(models[spec], "auto", config.units_per_model,
                                          config.image_size, config.seed + m)
        made = {}  # each unit's feature visualisations, made once for both pools
        stimuli = {"A": pool_stimuli(pool_a, models, units_of, config, tmp / "images", progress,
                                     made)}
        conditions = stimuli["A"].conditions
        split = assign_splits(conditions, config.seed, config.val_fraction, config.test_fraction)
        conditions["split"] = split.to_numpy()
        test_rows = conditions[conditions["split"] == "test"].drop_duplicates("unit_id")
        test = {spec: list(group["unit"]) for spec, group in test_rows.groupby("spec")}
        stimuli["B"] = pool_stimuli(pool_b, models, test, config, tmp / "images_heldout_pool",
                                    progress, made)
        del models
        observers = Observers(stimuli, config)
        splits = (conditions.drop_duplicates("unit_id")[["unit_id", "split"]]
                  .assign(fold=lambda f: f["unit_id"].str.split("/").str[0]
                          .map({m: i for i, m in enumerate(sorted(conditions["model"].unique()))})))
        hashes = stage_hashes({name: s.pool for name, s in stimuli.items()}, stimuli, observers)
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
            hashes[f"answers {name}"] = digest(table)
            truth.to_csv(folder / TRUTH_FILE, index=False)
            splits.to_csv(folder / SPLITS_FILE, index=False)
            pd.DataFrame(s.stats).to_csv(folder / STATS_FILE, index=False)
            (folder / "images.json").write_text(json.dumps({"images": images}))
            calibration.append(calibration_rows(name, s.conditions, truth, table))
        calibration = pd.DataFrame(calibration)
        calibration.to_csv(tmp / "calibration.csv", index=False)
        (tmp / "simulation.json").write_text(json.dumps(
            asdict(config) | {"key": config.key(), "sigma": observers.sigma, "hashes": hashes,
                              "simulator": simulator_fingerprint(bool(config.synthetic)),
                              "libraries": library_versions(), "pinned": PINNED_ENVIRONMENT},
            indent=2))
        (tmp / "README.md").write_text(simulation_card(config, calibration, observers.sigma,
                                                       hashes))


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


def release_benchmark(simulation: dict | None, data_root, data_dir, fold=None) -> dict | None:
    """What a head trained on `data_dir` is also measured on: where that is the default
    audience of a simulated release (and no model was left out), the release's other
    audiences (`benchmark_datasets`); None for any other data."""
    if fold is not None or data_dir is None:
        return None
    if Path(data_dir) != simulated_dataset_dir(simulation, data_root):
        return None
    return benchmark_datasets(simulation, data_root)


if __name__ == "__main__":  # the pinned child of `simulate`: OUT CONFIG_JSON [--progress] [--overwrite]
    import sys

    check_pins_held()
    try:
        simulate(sys.argv[1], SimulationConfig(**json.loads(sys.argv[2])),
                 progress="--progress" in sys.argv, overwrite="--overwrite" in sys.argv)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
