"""What a small study buys: a new population's answers, a few units at a time, into the default
metric. Each held-out observer family in turn is "a new population" (people the default head was
never fitted on): buy k of its units (k = 10 ... 160, about 30 responses a condition, every
condition of a unit), chosen by each selection rule (`interpscore.data.selection`), update the
default checkpoint's head with them as `python train.py --model.init_from CKPT` does (its prior
pulls toward the checkpoint, with a strength chosen on the bought units alone), and measure
within-group Spearman on that family's answers to the held-out pool's test units: pictures no
bought task and no training task shows. Beside it: MIS, and the checkpoint without an update.

Every number is a paired difference with a 95 % CI from bootstrap draws that resample test units
(paired across families for the mean). Random selection is drawn `--draws` times; the other
rules are deterministic given the checkpoint's predictions. Cost: responses bought, and their
price at IMI's rate ($2.79 for a 45-trial session: 40 main trials).

    python benchmarks/study_budget.py [--out benchmarks/results/study_budget.json]
    python benchmarks/study_budget.py --table benchmarks/results/study_budget.json

Simulated data: the numbers say what answers from the simulator's families buy a metric on the
simulator's families, not what people's answers buy on people.
"""

import argparse
import copy
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import emit, shared_test_ids  # noqa: E402

BUDGETS = (10, 20, 40, 80, 160)
PRICE_PER_MAIN_TRIAL = 2.79 / 40  # IMI: $2.79 a session of 40 main trials (+5 practice, catch)


def candidates(head, tensors, ids):
    """One row per unit of `ids`: what `interpscore score` tells a user before a study (the
    checkpoint's score, its interval over tasks, the unit's model)."""
    import pandas as pd
    import torch

    from interpscore.metric.scorer import task_interval
    from interpscore.metric.tasks import gather

    rows = []
    with torch.no_grad():
        batch = gather(tensors, ids)
        p = head(batch)
    for row, i in enumerate(ids):
        tasks = p[row][batch["task_mask"][row]].numpy()
        low, high = task_interval(tasks)
        c = tensors.conditions.iloc[i]
        rows.append(dict(unit_id=c["unit_id"], model=c["model"], difficulty=c["difficulty"],
                         score=float(tasks.mean()), score_low=low, score_high=high))
    frame = pd.DataFrame(rows)
    easy = frame[frame["difficulty"] == "easy"]  # a unit is chosen by its easy condition
    return (easy if len(easy) else frame).drop_duplicates("unit_id")


def bought(tensors, ids, units) -> list[int]:
    chosen = set(units)
    return [i for i in ids if tensors.conditions["unit_id"].iloc[i] in chosen]


def updated(start, tensors, ids):
    """The checkpoint's head updated with the answers of `ids` (what `--model.init_from` does)."""
    head = copy.deepcopy(start)
    head.set_anchor()
    info = head.fit(tensors, ids)
    return head.eval(), {k: v for k, v in info.items() if not k.endswith("_scores")}


def buy(job: dict) -> dict:
    """One family as a new population: every rule's units bought at every budget, each time the
    checkpoint updated with them. Runs in a worker process."""
    import torch

    from interpscore.data.selection import choose
    from interpscore.metric.backbones import create_backbone
    from interpscore.metric.checkpoint import load_checkpoint
    from interpscore.metric.tasks import load_task_tensors
    from interpscore.resources import DEFAULT_BACKBONE, DEFAULT_BACKBONE_IMAGE_SIZE
    from interpscore.simulate.release import simulated_dataset_dir

    torch.set_num_threads(1)
    encoder = create_backbone(DEFAULT_BACKBONE, image_size=DEFAULT_BACKBONE_IMAGE_SIZE)
    own = load_task_tensors(simulated_dataset_dir(None, job["data_root"],
                                                  f"family-{job['family']}"),
                            encoder, job["cache_dir"])
    start = job["start"] or load_checkpoint(job["checkpoint"]).head
    train = np.flatnonzero(own.conditions["split"] == "train").tolist()
    pool = candidates(start.eval(), own, train)
    out = {}
    for rule in job["rules"]:
        for draw in range(job["draws"] if rule == "random" else 1):
            for k in job["budgets"]:
                units = choose(pool, rule, k, seed=draw)
                ids = bought(own, train, units)
                head, info = updated(start, own, ids)
                responses = int(sum(own.n[own.condition_tasks[i][own.condition_tasks[i] >= 0]]
                                    .sum() for i in ids))
                out[f"{rule}/{draw}/{k}"] = {"run": [rule, draw, k], "state": head.state_dict(),
                                             "units": len(units), "conditions": len(ids),
                                             "responses": responses, "learned": info}
                print(f"{job['family']} {rule}#{draw} k={k}: {responses} responses, shrink "
                      f"{info.get('shrink')}, learned space {info.get('learned_share', 0):.2f}",
                      file=sys.stderr, flush=True)
    return out


def main():
    from interpscore.evaluation.agreement import average_reports
    from interpscore.evaluation.baselines import fit_mis
    from interpscore.evaluation.benchmark import measure_dataset
    from interpscore.metric.backbones import create_backbone
    from interpscore.metric.checkpoint import load_checkpoint
    from interpscore.metric.heads import create_head
    from interpscore.metric.tasks import load_task_tensors
    from interpscore.resources import (DEFAULT_BACKBONE, DEFAULT_BACKBONE_IMAGE_SIZE,
                                       DEFAULT_CACHE, DEFAULT_DATA_ROOT)
    from interpscore.simulate.config import HELDOUT_POOL, SimulationConfig
    from interpscore.data.selection import SELECTION_RULES
    from interpscore.simulate.release import ensure_simulated, simulated_dataset_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="the checkpoint to update (default: fit the "
                        "default head on the default audience, as `python train.py` does)")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--rules", nargs="+", default=list(SELECTION_RULES),
                        choices=SELECTION_RULES)
    parser.add_argument("--draws", type=int, default=3, help="draws of the random rule")
    parser.add_argument("--families", nargs="+", help="held-out families (default: all)")
    parser.add_argument("--processes", type=int, default=2, help="families fitted at once")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out")
    parser.add_argument("--table", help="print the tables of a saved result and stop")
    parser.add_argument("--figure", help="write the gain-against-cost figure (PNG) here")
    args = parser.parse_args()
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(table(saved))
        if args.figure:
            figure(saved, args.figure)
        return

    started = time.time()
    config = SimulationConfig()
    families = args.families or config.heldout_families
    ensure_simulated(None, args.data_root)
    encoder = create_backbone(DEFAULT_BACKBONE, image_size=DEFAULT_BACKBONE_IMAGE_SIZE)

    def tensors_of(audience):
        return load_task_tensors(simulated_dataset_dir(None, args.data_root, audience), encoder,
                                 args.cache_dir)

    default = tensors_of("default")
    default_train = np.flatnonzero(default.conditions["split"] == "train").tolist()
    if args.checkpoint:
        start = load_checkpoint(args.checkpoint).head
    else:
        start = create_head("pooled_lowrank", default.dim, stage_dims=default.stage_dims)
        start.fit(default, default_train)
    start.eval()
    mis = fit_mis(default, default_train)
    tests = {f: tensors_of(f"{HELDOUT_POOL}-{f}") for f in families}
    ids_of = shared_test_ids(list(tests.values()))
    result = {"benchmark": "study_budget", "families": families, "budgets": args.budgets,
              "rules": args.rules, "draws": args.draws, "runs": {}, "bought": {}}
    runs = {}  # (rule, draw, k) -> {family: head}
    jobs = [dict(family=f, checkpoint=args.checkpoint, start=None if args.checkpoint else start,
                 data_root=args.data_root, cache_dir=args.cache_dir, rules=args.rules,
                 draws=args.draws, budgets=args.budgets) for f in families]
    # One process a family, one thread each: the fits are many and small, and two threads on
    # two busy cores wait on each other more than they work.
    with multiprocessing.get_context("spawn").Pool(min(args.processes, len(jobs))) as workers:
        for family, bought_here in zip(families, workers.map(buy, jobs)):
            for key, item in bought_here.items():
                head = copy.deepcopy(start)
                head.load_state_dict(item.pop("state"))
                runs.setdefault(tuple(item.pop("run")), {})[family] = head.eval()
                result["bought"].setdefault(key, {})[family] = item
    for (rule, draw, k), heads in runs.items():
        reports, boots = {}, {}
        for family, tensors in tests.items():
            predictors = {"updated": heads[family], "checkpoint": start, "mis": mis}
            reports[family], boots[family] = measure_dataset(
                predictors, tensors, ids_of(tensors), args.n_boot, 0, "mis")
        mean = average_reports(list(reports.values()), list(boots.values()), "mis")
        versus_start = average_reports(list(reports.values()), list(boots.values()),
                                       "checkpoint")
        result["runs"][f"{rule}/{draw}/{k}"] = {
            "rule": rule, "draw": draw, "k": k, "mean": _row(mean, versus_start),
            "per_family": {f: _row(reports[f], _versus(reports[f], boots[f])) for f in families}}
    result["seconds"] = round(time.time() - started, 1)
    emit(result, args.out)
    print(table(result), file=sys.stderr)
    if args.figure:
        figure(result, args.figure)


def _versus(report, boots):
    """A dataset's report with differences to the un-updated checkpoint."""
    from interpscore.evaluation.agreement import average_reports

    return average_reports([report], [boots], "checkpoint")


def _row(against_mis: dict, against_start: dict) -> dict:
    up, start = against_mis["predictors"]["updated"], against_start["predictors"]["updated"]
    return {"within": up["within"], "within_ci": up["within_ci"],
            "minus_mis": up["within_minus_mis"], "minus_mis_ci": up["within_minus_mis_ci"],
            "minus_checkpoint": start["within_minus_checkpoint"],
            "minus_checkpoint_ci": start["within_minus_checkpoint_ci"],
            "checkpoint_minus_mis": against_mis["predictors"]["checkpoint"]["within_minus_mis"],
            "ceiling_within": against_mis["ceiling"]["within"]}


def table(result: dict) -> str:
    """Gain over MIS and over the un-updated checkpoint, by rule and budget (mean over the
    held-out families; random averaged over its draws), with responses and their price."""
    lines = ["| rule | units | responses (mean over families) | price | updated - MIS [95% CI] "
             "| updated - checkpoint [95% CI] | worst family - checkpoint (worst draw) "
             "| updates that moved |",
             "|---|---:|---:|---:|---|---|---:|---:|"]
    for rule in result["rules"]:
        for k in result["budgets"]:
            runs = [r for r in result["runs"].values() if r["rule"] == rule and r["k"] == k]
            if not runs:
                continue
            keys = [f"{rule}/{r['draw']}/{k}" for r in runs]
            responses = np.mean([b["responses"] for key in keys
                                 for b in result["bought"][key].values()])
            gain = np.mean([r["mean"]["minus_mis"] for r in runs])
            over = np.mean([r["mean"]["minus_checkpoint"] for r in runs])
            worst = _worst_family(runs)
            fits = [b["learned"] for key in keys for b in result["bought"][key].values()]
            moved = sum(_moved(f) for f in fits)
            ci = runs[0]["mean"]["minus_mis_ci"] if len(runs) == 1 else None
            ci_start = runs[0]["mean"]["minus_checkpoint_ci"] if len(runs) == 1 else None
            fmt = (lambda c: f" [{c[0]:+.3f}, {c[1]:+.3f}]" if c else f" (mean of {len(runs)} draws)")
            lines.append(f"| {rule} | {k} | {responses:.0f} | ${responses * PRICE_PER_MAIN_TRIAL:.0f} "
                         f"| {gain:+.3f}{fmt(ci)} | {over:+.3f}{fmt(ci_start)} | {worst} "
                         f"| {moved} of {len(fits)} |")
    first = next(iter(result["runs"].values()))
    lines.append(f"\ncheckpoint without update - MIS: {first['mean']['checkpoint_minus_mis']:+.3f}; "
                 f"ceiling (within groups): {first['mean']['ceiling_within']:.3f}")
    return "\n".join(lines)


def _worst_family(runs: list) -> str:
    """The family furthest below the un-updated checkpoint: by the mean of a rule's draws (what
    the rule does), and where draws differ also by its worst single draw (what one study may
    meet)."""
    families = runs[0]["per_family"]
    by_mean = min(np.mean([r["per_family"][f]["minus_checkpoint"] for r in runs])
                  for f in families)
    by_draw = min(r["per_family"][f]["minus_checkpoint"] for r in runs for f in families)
    return f"{by_mean:+.3f}" + (f" ({by_draw:+.3f})" if len(runs) > 1 else "")


def _moved(learned: dict) -> bool:
    """Whether an update left the checkpoint (a prior weaker than holding it was chosen): an
    update that holds is the checkpoint, and its difference to it is zero by construction."""
    return any(learned.get(name, float("inf")) != float("inf")
               for name in ("shrink", "shrink_learned"))


def figure(result: dict, path: str) -> None:
    """Gain over MIS (mean over the held-out families, within groups) against responses bought,
    one line per rule (random: the mean of its draws), the price at IMI's rate on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for rule in result["rules"]:
        points = []
        for k in result["budgets"]:
            runs = [r for r in result["runs"].values() if r["rule"] == rule and r["k"] == k]
            if runs:
                keys = [f"{rule}/{r['draw']}/{k}" for r in runs]
                responses = np.mean([b["responses"] for key in keys
                                     for b in result["bought"][key].values()])
                points.append((responses, np.mean([r["mean"]["minus_mis"] for r in runs])))
        if points:
            ax.plot(*zip(*points), marker="o", label=rule)
    first = next(iter(result["runs"].values()))["mean"]
    ax.axhline(first["checkpoint_minus_mis"], color="grey", ls="--", lw=1,
               label="checkpoint, no update")
    ax.axhline(0.05, color="grey", ls=":", lw=1, label="MIS + 0.05")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("responses bought (all conditions of the bought units)")
    ax.set_ylabel("within-group Spearman - MIS (new pictures)")
    top = ax.secondary_xaxis("top", functions=(lambda r: r * PRICE_PER_MAIN_TRIAL,
                                               lambda d: d / PRICE_PER_MAIN_TRIAL))
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    for axis, ticks in ((ax.xaxis, [500, 1000, 2000, 5000]), (top.xaxis, [30, 100, 300])):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_minor_locator(NullLocator())  # log minor labels overlap on a short axis
        axis.set_major_formatter(ScalarFormatter())
    top.set_xlabel("price at IMI's rate (US$)")
    ax.set_title("Simulated populations: what a small study buys", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
