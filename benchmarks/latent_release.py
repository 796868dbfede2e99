"""A simulated release whose units are SAE latents, beside channels and random directions of the
same EfficientNet-Lite0 layers (N units of each per layer). Each readout's units get their
exemplars and tasks from the default simulated release's pool A as the simulator makes them for
channels: the same pool, n_refs, batches, difficulties, source cap and seed, `select_all` over
rankings of the readout's activations. The activations of every readout come from one hooked
pass (`Readout.activations`), ranked by `rank_matrix`, the accumulator the hooked pass
(`collect_rankings`) uses; `--smoke` checks that the two choose the same exemplars. Then the
simulator's observer code, read-only (no simulator module is changed), gives each condition's
true simulated HIS: P(correct) of a typical participant averaged over its tasks and over the
default audience's families (the release's truth table). The families' noise is calibrated by
the release's rule (mean easy accuracy 0.83 on trained networks' units) on this run's channel
units, or taken from a built release (`--release`). The default audience's answers are
simulated too (attentive participants only).

Units whose max side reaches images that do not activate them (`interpscore score` leaves them
out: `metric.jobs.too_sparse`) are counted, and each readout that has some is reported again
without them. Per readout: the mean true simulated HIS per difficulty with a 95 % interval over
units, and the within-group (layer x difficulty) Spearman of MIS and of a trained head
(`--checkpoint`, trained on the release's channel answers; units it saw are left out) against
that truth and against the simulated answers, with 95 % intervals from resampling units, and
head - MIS paired.

What it shows: agreement with the simulator's observer families on latent units, whose
features are the same image features (low-level, spectral, Lite2 texture / semantic /
pre-logits) that judge channels. A transfer result here is the simulator's; it says nothing of
how people see SAE latents.

    python benchmarks/latent_release.py [--checkpoint CKPT] [--release DIR] [--units 48]
        [--smoke] [--out benchmarks/results/latent_release.json]
"""

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from common import emit

MODEL = "efficientnet_lite0"
LAYERS = "blocks.3.0,blocks.4.0"  # 80 and 112 channels
READOUTS = ("channels", "sae_latents", "random_directions")
WHAT_IT_SHOWS = (
    "Simulated: agreement with the simulator's observer families (hypotheses about people) on "
    "latent units, whose features are the same image features as for channels; not agreement "
    "with people. A transfer result here is the simulator's and says nothing of how people see "
    "SAE latents.")


def sae_file(layer: str, args, config) -> Path:
    """The SAE of a layer: `--sae LAYER=FILE`, else one fitted by `interpscore sae fit` (its
    defaults, on `--sae-pool-size` images), kept in the cache for the next run."""
    given = dict(item.split("=", 1) for item in args.sae)
    if layer in given:
        return Path(given[layer])
    out = (Path(args.cache) / "latent_release"
           / f"{MODEL}-{layer}-{args.latents}-{args.sae_pool_size}-{config.image_size}.sae.pt")
    if out.is_file():
        return out
    subprocess.run([sys.executable, "-m", "interpscore.cli", "sae", "fit", "--model", MODEL,
                    "--layer", layer, "--latents", str(args.latents), "--pool-size",
                    str(args.sae_pool_size), "--image-size", str(config.image_size),
                    "--cache-dir", args.cache, "--out", str(out)], check=True,
                   stdout=sys.stderr)  # stdout is the JSON
    return out


def readouts_of(layer: str, model, args, config) -> dict:
    """The three readouts of a layer and their units (N each, seeded as `score` samples)."""
    import torch

    from interpscore.stimuli.readouts import channel_readout, check_readout, direction_readout
    from interpscore.stimuli.readouts import load_sae
    from interpscore.stimuli.units import Unit, layer_channels, parse_units

    width = layer_channels(model, [layer], config.image_size)[layer]
    sae = load_sae(sae_file(layer, args, config))
    directions = torch.randn(width, args.units, generator=torch.Generator().manual_seed(0))
    out = {"channels": (channel_readout(), parse_units(args.units, {layer: width}, config.seed)),
           "sae_latents": (sae, parse_units(args.units, {layer: sae.n_features}, config.seed)),
           "random_directions": (direction_readout(directions, layer),
                                 [Unit(layer, j) for j in range(args.units)])}
    for readout, _ in out.values():
        check_readout(readout, model, MODEL, config.image_size, [layer])
    return out


def activation_matrices(model, pool, plan: list, progress: bool, batch_size: int = 64
                        ) -> list[np.ndarray]:
    """One hooked pass over the pool for every (layer, readout, units) of `plan`: each
    readout's activation matrix [pool, units], computed as the readout-aware pass computes it
    (`Readout.activations` of the layer's maps, batches of 64 in pool order)."""
    import torch
    from tqdm.auto import tqdm

    from interpscore.stimuli.networks import channel_maps

    modules, hooks, out = dict(model.module.named_modules()), [], [[] for _ in plan]
    for layer in sorted({layer for layer, _, _ in plan}):
        def hook(module, _inputs, output, layer=layer):
            maps = channel_maps(module, output)
            for k, (name, readout, units) in enumerate(plan):
                if name == layer:
                    index = torch.tensor([u.channel for u in units])
                    out[k].append(readout.activations(maps, index).float().numpy())
        hooks.append(modules[layer].register_forward_hook(hook))
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(pool), batch_size), desc="activations", unit="batch",
                              disable=not progress):
                model(torch.stack([pool[i] for i in range(start, min(start + batch_size,
                                                                       len(pool)))]))
    finally:
        for handle in hooks:
            handle.remove()
    return [np.concatenate(parts) for parts in out]


def exemplars_of(units, pool, config, values=None, model=None, readout=None):
    """Exemplars of a readout's units as the simulator chooses a channel's (`select_all`, the
    release's seed for this model, every difficulty at once), from the readout's activation
    matrix ranked by `rank_matrix` (the hooked pass's accumulator: the same batches, reservoir
    and tie keys), or with `model` from the readout's own hooked pass (`collect_rankings`, as
    `build_exemplars` runs it; the smoke run's check that the two agree)."""
    from interpscore.metric.jobs import too_sparse
    from interpscore.stimuli.activations import collect_rankings, rank_matrix
    from interpscore.stimuli.selection import keep_for, select_all

    seed, keep = config.seed + config.models.index(MODEL), keep_for(config.n_refs, config.n_batches)
    rankings = (collect_rankings(model, pool, units, keep, 4096, 64, seed, False, readout=readout)
                if model is not None else
                rank_matrix(values, np.arange(len(pool)), units, keep, 4096, 64, seed))
    kept, lost = select_all(rankings, pool.sources, units, config.n_refs, config.n_batches,
                            ["easy", *config.hard.get(MODEL, [])], config.max_refs_per_source,
                            seed)
    for ex in kept:  # the scorer's rule, recorded (the simulator's selection keeps them all)
        ex.flags["too_sparse"] = too_sparse(rankings[ex.unit], ex) is not None
    return kept, lost


def condition_rows(model, kept, readout, kind: str):
    """The readout's condition rows (the columns `simulate.world.pool_stimuli` writes) and
    each condition's tasks."""
    from interpscore.data.layouts import condition_label, unit_id
    from interpscore.stimuli.readouts import unit_layer
    from interpscore.stimuli.units import unit_depths

    rows, tasks = [], []
    for ex in kept:
        layer = unit_layer(ex.unit.layer, readout.identity())  # the store's name of the unit
        for difficulty in ex.queries:
            rows.append(dict(
                spec=MODEL, model=MODEL, model_label=condition_label(MODEL, difficulty),
                layer=layer, channel=ex.unit.channel, mode="natural", unit=ex.unit,
                unit_id=unit_id(MODEL, layer, ex.unit.channel), difficulty=difficulty,
                layer_depth=unit_depths(model, [ex.unit])[ex.unit],
                pretrained=kind == "channels",  # the noise is calibrated on channels only
                ties=ex.flags["ties_cover_max_refs"] or ex.flags["ties_cover_min_refs"],
                too_sparse=ex.flags["too_sparse"],
                readout=kind, base_layer=ex.unit.layer))
            tasks.append(ex.tasks(difficulty))
    return rows, tasks


def simulated_world(rows, tasks, pool, config):
    """The simulator's observers over these conditions (pool A only), read-only."""
    from interpscore.simulate.world import Observers, PoolStimuli

    conditions = pd.DataFrame(rows)
    by_key = {(c, b): task for c, unit_tasks in enumerate(tasks)
              for b, task in enumerate(unit_tasks)}
    blank = dict(query_max="-", query_min="-", refs_max=[], refs_min=[])  # no stimulus store
    stimuli = PoolStimuli(pool, conditions, by_key, {key: blank for key in by_key}, [])
    return Observers({"A": stimuli}, config)


def simulated_answers(observers, families, config) -> pd.DataFrame:
    """The default audience's answers to every condition: per condition the attentive
    participants' main trials (what the exclusions keep) and their accuracy."""
    from interpscore.simulate.participants import simulate_audience

    conditions = observers.pools["A"].conditions
    table = simulate_audience(observers, "A", families, list(conditions.index), config,
                              np.random.default_rng(config.seed), "images")
    main = table[(table["simulated_participant"] == "attentive") & ~table["is_demo"]
                 & ~table["catch_trial"]]
    counts = main.groupby(["model", "layer", "channel"])["correct"].agg(["size", "mean"])
    keys = pd.MultiIndex.from_frame(conditions[["model_label", "layer", "channel"]])
    return counts.reindex(keys).reset_index(drop=True)


def predictions(scorer, pool, tasks) -> np.ndarray:
    """A metric's score of each condition from its tasks (the scorer's own task path)."""
    import torch

    used = sorted({i for unit_tasks in tasks for task in unit_tasks for i in task.images()})
    row_of = {image: r for r, image in enumerate(used)}
    embeddings = scorer.cache.embed_images([pool[i] for i in used], progress=False)
    mapped = [[task.map(row_of.__getitem__) for task in unit_tasks] for unit_tasks in tasks]
    rows = scorer.score_tasks(torch.from_numpy(embeddings), mapped, seed=0)
    return np.array([row["score"] for row in rows])


def mean_interval(values: np.ndarray, unit_ids: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    from interpscore.correlation import percentile_interval
    from interpscore.evaluation.agreement import unit_draws

    draws = [values[d].mean() for d in unit_draws(unit_ids, n_boot, seed)]
    return dict(mean=float(values.mean()), ci95=percentile_interval(draws),
                units=int(len(set(unit_ids))))


def readout_report(frame: pd.DataFrame, predicted: dict, n_boot: int) -> dict:
    """Truth per difficulty, and each metric's within-group Spearman against the truth and
    against the simulated answers (layer x difficulty groups, units resampled)."""
    from interpscore.evaluation.agreement import grouped_report

    ids = frame["unit_id"].to_numpy()
    truth = {d: mean_interval(g["true_accuracy"].to_numpy(), g["unit_id"].to_numpy(), n_boot)
             for d, g in frame.groupby("difficulty", sort=False)}
    units = frame.assign(model=frame["base_layer"], his=frame["true_accuracy"])
    against_truth, _ = grouped_report(predicted, units, n_boot)
    out = dict(units=int(len(set(ids))), conditions=int(len(frame)), true_his=truth,
               predicted_his={name: mean_interval(p, ids, n_boot) for name, p in predicted.items()},
               within_vs_truth={name: {k: row[k] for k in row if k.startswith("within")
                                       and "ceiling" not in k}  # the truth is its own ceiling
                                for name, row in against_truth["predictors"].items()},
               groups=against_truth["groups"])
    if "answers" in frame:
        against, _ = grouped_report(predicted, units.assign(his=frame["answers"]), n_boot)
        out["within_vs_answers"] = {name: {k: row[k] for k in row if k.startswith("within")}
                                    for name, row in against["predictors"].items()}
        out["within_vs_answers"]["truth (ceiling)"] = {"within": against["ceiling"]["within"]}
        out["answers_per_condition"] = float(frame["n_answers"].mean())
    return out


def build_conditions(args, config, seconds: dict):
    """Every layer's three readouts: their condition rows and tasks over pool A."""
    import torch

    from interpscore.stimuli.networks import load_model
    from interpscore.stimuli.pools import default_pool

    start = time.perf_counter()
    pool = default_pool(config.pool_size, config.image_size, config.seed, part="A",
                        cache_dir=Path(args.cache) / "pools")
    model = load_model(MODEL, image_size=config.image_size)
    plan, saes = [], {}
    for layer in args.layers.split(","):
        for kind, (readout, units) in readouts_of(layer, model, args, config).items():
            plan.append((layer, kind, readout, units))
            if kind == "sae_latents":
                record = torch.load(readout.source, weights_only=True)
                saes[layer] = dict(latents=record["latents"], top_k=record["top_k"],
                                   r2=record["r2"], dead_fraction=record["dead_fraction"],
                                   pool_images=record["training"]["pool_images"])
    seconds["pool and SAEs"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    matrices = activation_matrices(model, pool, [(layer, r, u) for layer, _, r, u in plan],
                                   args.progress)
    rows, tasks, dropped, checked = [], [], {}, {}
    for (layer, kind, readout, units), values in zip(plan, matrices):
        kept, lost = exemplars_of(units, pool, config, values)
        if args.smoke and kind != "channels":
            hooked, _ = exemplars_of(units, pool, config, model=model, readout=readout)
            checked[f"{layer} {kind}"] = [(e.refs_max, e.refs_min, e.queries) for e in hooked] \
                == [(e.refs_max, e.refs_min, e.queries) for e in kept]
        r, t = condition_rows(model, kept, readout, kind)
        rows, tasks = rows + r, tasks + t
        dropped[f"{layer} {kind}"] = len(lost)
    seconds["activations and exemplars"] = round(time.perf_counter() - start, 1)
    built = dict(dropped_constant_units=dropped, sae=saes)
    if checked:
        built["same_exemplars_as_hooked_pass"] = checked
    return pool, rows, tasks, built


def noise_levels(observers, args, config) -> str:
    """The families' noise: the release's (`--release`) or calibrated here on channels."""
    if not args.release:
        return (f"calibrated here: mean easy accuracy {config.target_accuracy} over this run's "
                "channel units (the release's rule, on these units)")
    recorded = json.loads((Path(args.release) / "simulation.json").read_text())
    observers.sigma = {name: recorded["sigma"][name] for name in observers.sigma}
    return f"the release's ({args.release}, key {recorded['key']})"


def _ci(row: dict, key: str, signed: bool = False) -> str:
    if key not in row:
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    low, high = row[f"{key}_ci"] if f"{key}_ci" in row else row["ci95"]
    return f"{f.format(row[key])} [{f.format(low)}, {f.format(high)}]"


def table(result: dict) -> str:
    """The README's tables: true simulated HIS per readout and difficulty, then the
    within-group Spearman of each metric against the truth and against the answers."""
    difficulties = result["protocol"]["difficulties"]
    lines = ["| readout | units | " + " | ".join(f"true HIS {d}" for d in difficulties) + " |",
             "|---|---:|" + "---|" * len(difficulties)]
    for kind, r in result["readouts"].items():
        lines.append(f"| {kind} | {r['units']} | " + " | ".join(
            _ci(r["true_his"][d], "mean") for d in difficulties) + " |")
    lines += ["", "| readout | MIS vs truth | head vs truth | head - MIS (truth) | MIS vs answers "
              "| head vs answers | truth vs answers |", "|---|---|---|---|---|---|---|"]
    for kind, r in result["readouts"].items():
        truth, answers = r["within_vs_truth"], r.get("within_vs_answers", {})
        head, head_a = truth.get("head", {}), answers.get("head", {})
        lines.append(" | ".join([
            f"| {kind}", _ci(truth["mis"], "within"), _ci(head, "within"),
            _ci(head, "within_minus_mis", signed=True), _ci(answers.get("mis", {}), "within"),
            _ci(head_a, "within"),
            f"{answers['truth (ceiling)']['within']:.3f}" if answers else "-"]) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=48, help="units per readout and layer")
    parser.add_argument("--layers", default=LAYERS)
    parser.add_argument("--latents", type=int, default=256)
    parser.add_argument("--sae-pool-size", type=int, default=1000)
    parser.add_argument("--sae", action="append", default=[], metavar="LAYER=FILE",
                        help="an SAE file of `interpscore sae fit` to use for LAYER")
    parser.add_argument("--checkpoint", help="a trained head (default: MIS only)")
    parser.add_argument("--release", help="a built default release folder (with "
                        "simulation.json): use its noise levels instead of calibrating here")
    parser.add_argument("--no-answers", action="store_true", help="skip the simulated answers")
    parser.add_argument("--cache", default=".cache/interpscore")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run: a 400-image pool, 3 batches, 6 units, 32 latents")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--table", metavar="JSON", help="print the README's tables of a result")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return

    import torch

    import interpscore
    from interpscore.simulate.config import DEFAULT_AUDIENCE, SimulationConfig, audiences
    from interpscore.simulate.release import _truth_table

    config = SimulationConfig()  # the default release's: pool, n_refs, batches, difficulties
    if args.smoke:
        config = replace(config, pool_size=400, n_batches=3)
        args.units, args.latents, args.sae_pool_size, args.n_boot = 6, 32, 100, 50
    scorers = {"mis": interpscore.load("mis", cache_dir=args.cache)}
    if args.checkpoint:
        scorers["head"] = interpscore.load(args.checkpoint, cache_dir=args.cache)
    seconds = {}
    pool, rows, tasks, built = build_conditions(args, config, seconds)
    start = time.perf_counter()
    observers = simulated_world(rows, tasks, pool, config)
    noise = noise_levels(observers, args, config)
    families = audiences(config)[DEFAULT_AUDIENCE][1]
    conditions = observers.pools["A"].conditions
    truth = _truth_table(conditions, observers, "A", families)
    frame = conditions.assign(true_accuracy=truth["true_accuracy"].to_numpy())
    if not args.no_answers:
        answers = simulated_answers(observers, families, config)
        frame = frame.assign(answers=answers["mean"].to_numpy(),
                             n_answers=answers["size"].to_numpy())
    seconds["observers, truth and answers"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    predicted = {name: predictions(s, pool, tasks) for name, s in scorers.items()}
    seconds["metrics"] = round(time.perf_counter() - start, 1)
    # Units the head trained or selected on (channels of the release) are left out of every
    # metric's numbers, as `evaluate` leaves them out.
    seen = scorers["head"].metric.seen_units if "head" in scorers else set()
    # Each readout as the simulator builds it, then (where some are) without the units that
    # `interpscore score` leaves out as too sparse for their max side (`jobs.too_sparse`).
    report = {}
    for kind in READOUTS:
        rows = ((frame["readout"] == kind) & ~frame["unit_id"].isin(seen)).to_numpy()
        subsets = {kind: rows}
        if frame.loc[rows, "too_sparse"].any():
            subsets[f"{kind}, max side full"] = rows & ~frame["too_sparse"].to_numpy(bool)
        for name, chosen in subsets.items():
            report[name] = readout_report(frame[chosen].reset_index(drop=True),
                                          {n: p[chosen] for n, p in predicted.items()},
                                          args.n_boot)
            report[name]["too_sparse_units"] = int(
                frame.loc[chosen & frame["too_sparse"].to_numpy(bool), "unit_id"].nunique())
    result = dict(
        what_it_shows=WHAT_IT_SHOWS, model=MODEL, layers=args.layers.split(","),
        units_per_readout_and_layer=args.units, smoke=args.smoke,
        pool=dict(name="pool A of the default release", size=config.pool_size,
                  image_size=config.image_size),
        protocol=dict(n_refs=config.n_refs, n_batches=config.n_batches,
                      difficulties=["easy", *config.hard.get(MODEL, [])]),
        audience=dict(name=DEFAULT_AUDIENCE, families=families, noise_levels=noise,
                      sigma={f: observers.sigma[f] for f in families}),
        **built,
        metrics={"mis": "training-free MIS (builtin)",
                 **({"head": str(args.checkpoint)} if args.checkpoint else {})},
        left_out_seen_by_head=sorted(set(frame["unit_id"]) & seen),
        readouts=report, seconds=seconds, cpu_threads=torch.get_num_threads())
    emit(result, args.out)


if __name__ == "__main__":
    main()
