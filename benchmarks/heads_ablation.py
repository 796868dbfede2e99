"""The ablation table of the per-reference heads, and each head in-family and on held-out
families, against MIS, stage-weighted MIS and model identity. Needs the default simulated release
built (`python train.py` once); embeddings come from the cache after the first run.

Every predictor reads the same EfficientNet-Lite0 + Lite1 task tensors; "one backbone" rows see
only Lite0's stages of them (rescaled: exactly the Lite0-only tensors), so every row is measured
on the same tasks and the paired differences are to one fixed MIS (Lite0's, as in the default).

- headline: fitted on the `default` audience's training units, measured on the held-out families
  answering the test units from the held-out pool (within model x difficulty groups, averaged
  over the families, CIs resample units);
- in-family: fitted and tested on one family's audience at a time (pool A), against that
  family's within-group ceiling; for the held-out families, also on the held-out pool (their
  answers to the test units' pool-B stimuli: no picture shared with training tasks).

Rows: set means only (`mis`, `stage_mis`) vs every reference (`pooled`, `attention`, with and
without the prior toward MIS), a weight per stage vs per dimension (`pooled_dims`, Lite0 only:
its fit takes minutes) vs a learned low-rank space (`pooled_lowrank`), one backbone vs the
mixture, and an ensemble (pooled + attention).
About 40 minutes on 2 CPU cores.

    python benchmarks/heads_ablation.py [--out benchmarks/results/heads_ablation.json]

Simulated data: the numbers say how a head does on the simulator's families, not on people.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import emit, shared_test_ids, test_ids  # noqa: E402

BACKBONE = "efficientnet_lite0+efficientnet_lite1"


def only_stages(tensors, keep: list[int], owners: tuple):
    """Task tensors of the stages `keep` alone, scaled as if their networks were the whole
    mixture: an n-network mixture scales each network's embedding by 1/sqrt(n), so its
    per-stage similarities are 1/n of that network's own."""
    dims = np.cumsum((0,) + tensors.stage_dims)
    columns = torch.cat([torch.arange(dims[s], dims[s + 1]) for s in keep])
    scale = len(set(owners)) / len({owners[s] for s in keep})
    vectors = {name: getattr(tensors, name)[:, columns] * math.sqrt(scale)
               for name in ("q_max", "q_min", "mean_max", "mean_min", "embeddings")}
    return replace(tensors, **vectors, ref_sims=tensors.ref_sims[..., keep] * scale,
                   stage_dims=tuple(tensors.stage_dims[s] for s in keep))


class Ensemble(torch.nn.Module):
    """The mean P(correct) of several fitted heads."""

    def __init__(self, heads):
        super().__init__()
        self.heads = torch.nn.ModuleList(heads)

    def forward(self, batch):
        return torch.stack([h(batch) for h in self.heads]).mean(0)


def fit_heads(train, ids, views: dict, owners: tuple) -> dict:
    """Every row of the table fitted on `train`'s conditions `ids`: name -> (predictor, view,
    what it learned)."""
    from interpscore.evaluation.baselines import fit_mis, fit_stage_mis, metadata_baselines
    from interpscore.metric.heads import (AttentionHead, DimensionPooledHead, LowRankPooledHead,
                                          PooledHead)

    rows = {}
    for view_name, keep in views.items():
        t = only_stages(train, keep, owners)
        rows[f"mis [{view_name}]"] = (fit_mis(t, ids), keep, {})
        rows[f"stage_mis [{view_name}]"] = (fit_stage_mis(t, ids), keep, {})
        heads = {"pooled": PooledHead, "attention": AttentionHead,
                 "pooled_lowrank": LowRankPooledHead}
        if view_name == "lite0":  # a weight per dimension: minutes per fit, one view
            heads["pooled_dims"] = DimensionPooledHead
        for name, cls in heads.items():
            for shrunk in (True, False) if name in ("pooled", "attention") else (True,):
                # Not shrunk: no prior, maximum likelihood.
                head = cls(t.dim, t.stage_dims, shrink=None if shrunk else 0.0)
                start = time.perf_counter()
                info = {k: v for k, v in head.fit(t, ids).items() if not k.endswith("_scores")}
                info["fit_seconds"] = round(time.perf_counter() - start, 1)
                rows[f"{name}{'' if shrunk else ' no-shrink'} [{view_name}]"] = (head, keep, info)
        rows[f"pooled+attention [{view_name}]"] = (
            Ensemble([rows[f"pooled [{view_name}]"][0], rows[f"attention [{view_name}]"][0]]),
            keep, {})
    rows["model_identity"] = (metadata_baselines(train, ids)["model_identity"], None, {})
    return rows


def main():
    from interpscore.evaluation.agreement import average_reports
    from interpscore.evaluation.benchmark import measure_dataset
    from interpscore.metric.backbones import create_backbone
    from interpscore.metric.tasks import load_task_tensors
    from interpscore.resources import DEFAULT_CACHE, DEFAULT_DATA_ROOT
    from interpscore.simulate.config import HELDOUT_POOL, SimulationConfig
    from interpscore.simulate.release import benchmark_datasets, simulated_dataset_dir

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE)
    parser.add_argument("--families", help="in-family runs, comma-separated (default: all)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out")
    parser.add_argument("--table", metavar="JSON",
                        help="print the markdown table of a saved result and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return

    config = SimulationConfig()
    backbone = create_backbone(BACKBONE, image_size=128)
    owners = backbone.stage_owners
    views = {"lite0": [i for i, o in enumerate(owners) if o == "efficientnet_lite0"],
             "lite0+lite1": list(range(len(owners)))}
    default = simulated_dataset_dir(None, args.data_root)
    if not (default / "dataset_dict.json").is_file():
        sys.exit(f"error: {default}: not built; run `python train.py` once first")

    def load(path):
        return load_task_tensors(path, backbone, args.cache_dir)

    def table(rows, datasets: dict[str, object], ids_of) -> tuple[dict, dict]:
        """Every row on each dataset's test units; MIS on Lite0 is the paired reference."""
        reports, boots = {}, {}
        for name, tensors in datasets.items():
            shared = {tuple(k): only_stages(tensors, k, owners) for k in views.values()}
            predictors = {}
            for label, (head, keep, _) in rows.items():
                if keep is None:
                    predictors[label] = head
                else:
                    predictors[label] = _Reading(head, shared[tuple(keep)])
            reports[name], boots[name] = measure_dataset(
                {"mis": predictors.pop("mis [lite0]"), **predictors}, tensors,
                ids_of(tensors), args.n_boot, 0)
        return reports, boots

    result = {"benchmark": "heads_ablation", "simulation_key": config.key(), "backbone": BACKBONE,
              "note": "simulated data: agreement with the simulator's observer families, "
                      "not people", "views": {k: [owners[i] for i in v] for k, v in views.items()}}

    # Headline: trained on the default audience, tested on held-out families x held-out pool.
    start = time.perf_counter()
    train = load(default)
    train_ids = np.flatnonzero(train.conditions["split"] == "train").tolist()
    rows = fit_heads(train, train_ids, views, owners)
    bench = benchmark_datasets(None, args.data_root)
    heldout = {name: load(bench["datasets"][name]) for name in bench["headline"]}
    reports, boots = table(rows, heldout, shared_test_ids(heldout.values()))
    headline = average_reports(list(reports.values()), list(boots.values()), "mis")
    result["headline"] = {"datasets": list(heldout), "summary": _summary(headline),
                          "per_dataset": {n: _summary(r) for n, r in reports.items()},
                          "learned": {n: info for n, (_, _, info) in rows.items() if info},
                          "seconds": round(time.perf_counter() - start, 1)}
    print(_format(result["headline"]["summary"], "held-out families x held-out pool"),
          file=sys.stderr)

    # In-family: each family's own answers, its own test units, on pool A.
    families = (args.families.split(",") if args.families
                else list(config.training_families + config.heldout_families))
    result["in_family"] = {}
    for family in families:
        start = time.perf_counter()
        tensors = load(simulated_dataset_dir(None, args.data_root, f"family-{family}"))
        ids = np.flatnonzero(tensors.conditions["split"] == "train").tolist()
        rows = fit_heads(tensors, ids, views, owners)
        reports, _ = table(rows, {family: tensors}, test_ids)
        # Where the family also answered the held-out pool, the same fitted rows on the
        # conditions both pools hold: pool A shares pictures between training and test tasks,
        # pool B shares none, so a head that memorised pictures leads MIS by more on A than on B.
        pools = {}
        if f"{HELDOUT_POOL}-{family}" in bench["datasets"]:
            both = {"pool_a": tensors,
                    "pool_b": load(bench["datasets"][f"{HELDOUT_POOL}-{family}"])}
            pools, _ = table(rows, both, shared_test_ids(both.values()))
        result["in_family"][family] = {
            "training_family": family in config.training_families,
            "summary": _summary(reports[family]),
            **({"pools": {k: _summary(r) for k, r in pools.items()}} if pools else {}),
            "learned": {n: info for n, (_, _, info) in rows.items() if info},
            "seconds": round(time.perf_counter() - start, 1)}
        print(_format(result["in_family"][family]["summary"], f"in-family {family}"),
              file=sys.stderr)
    emit(result, args.out)


class _Reading:
    """A head reading its own view of a dataset's tensors: the harness gathers batches from
    the full tensors, this predictor gathers the same conditions from its view."""

    def __init__(self, head, view):
        self.head, self.view = head, view

    def __call__(self, batch):
        from interpscore.metric.tasks import gather

        return self.head(gather(self.view, batch["condition"]))


def _summary(report: dict) -> dict:
    keep = ("within", "within_ci", "within_of_ceiling", "within_minus_mis", "within_minus_mis_ci",
            "overall", "overall_ci")
    return {"ceiling": report["ceiling"],
            "predictors": {name: {k: r[k] for k in keep if k in r}
                           for name, r in report["predictors"].items()}}


def markdown(result: dict) -> str:
    """The ablation table: each row's held-out headline (within-group Spearman minus Lite0's
    MIS, with its CI) and its in-family fraction of the within-group ceiling per family."""
    families = list(result["in_family"])
    head = result["headline"]["summary"]["predictors"]
    lines = ["| row | held-out: within | - MIS [95% CI] | "
             + " | ".join(f"{f}" for f in families) + " |",
             "|---" * (3 + len(families)) + "|"]
    for name, r in head.items():
        if name == "model_identity":
            continue
        diff = r.get("within_minus_mis")
        ci = r.get("within_minus_mis_ci")
        diff = f"{diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if diff is not None else "-"
        label = "mis [lite0]" if name == "mis" else name
        cells = [f"{result['in_family'][f]['summary']['predictors'][name]['within_of_ceiling']:.2f}"
                 for f in families]
        lines.append(f"| {label} | {r['within']:.3f} | {diff} | " + " | ".join(cells) + " |")
    ceilings = [f"{result['in_family'][f]['summary']['ceiling']['within']:.2f}" for f in families]
    lines.append(f"| ceiling | {result['headline']['summary']['ceiling']['within']:.3f} | | "
                 + " | ".join(ceilings) + " |")
    return "\n".join(lines) + "\n\n" + _pool_b_table(result)


def _pool_b_table(result: dict) -> str:
    """In-family on both pools, for the families that also answered the held-out pool, on the
    conditions both hold: a row's within-group Spearman minus MIS on pool A (test units share
    pictures with training tasks) and on pool B (none shared)."""
    families = [f for f, r in result["in_family"].items() if "pools" in r]
    lines = ["| row - MIS | " + " | ".join(f"{f} pool A | pool B" for f in families) + " |",
             "|---" * (1 + 2 * len(families)) + "|"]
    for name in result["headline"]["summary"]["predictors"]:
        if name in ("mis", "model_identity"):
            continue
        cells = []
        for f in families:
            for pool in ("pool_a", "pool_b"):
                r = result["in_family"][f]["pools"][pool]["predictors"][name]
                ci = r["within_minus_mis_ci"]
                cells.append(f"{r['within_minus_mis']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(summary: dict, title: str) -> str:
    lines = [title]
    for name, r in summary["predictors"].items():
        diff = r.get("within_minus_mis")
        ci = r.get("within_minus_mis_ci", [np.nan, np.nan])
        lines.append(f"  {name:34s} {r['within']:6.3f}  of ceiling {r['within_of_ceiling']:5.2f}"
                     + (f"  - MIS {diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
                        if diff is not None and np.isfinite(diff) else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
