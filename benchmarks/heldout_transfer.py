"""What the held-out target asks of a head, measured. Issue #12 asks the default head, trained on
the default audience (the training families), for MIS + 0.05 on average over the held-out
families (within model x difficulty groups, on the held-out pool). Two measurements say what
that asks, on one backbone's features:

1. `own_family`: `pooled` and `pooled_lowrank` (a feature space learned from the answers), each
   fitted on one held-out family's own answers (its pool-A audience, training units, the heads'
   usual leave-one-model-out choice of their priors) and scored on that family's pool-B
   answers (the same family, other simulated participants): the best training data a head
   could have for a family, short of the test pictures; beside it, its paired difference to
   the default head fitted on the default audience. A head trained on *other* families has
   less to go on. A reference, not a bound: other heads or features could do better.
2. `learned_space`: the same heads fitted on the default audience, as `python train.py` fits
   them (there the one-standard-error rule switches `pooled_lowrank`'s learned space off), and
   `pooled_lowrank` with its learned space held on (`shrink_learned` 1e-3, the prior whose
   left-out mean score is best there), on three views: the training families on new pictures
   (`heldout-pool-default`), new families on the training pictures (`family-<held-out>`,
   pool A test units) and both new (the headline). They separate what a learned space
   carries to new pictures from what it carries to people who see other features.

Every number is within-group Spearman minus MIS (this backbone's MIS, alpha fitted on the
default audience's training units), with a 95 % CI from draws that resample units, paired
across families. `--backbone` takes a backbone spec or a packaged backbone config, so a machine
that reaches the hub can run the same measurements on the MIS paper's features
(`--backbone backbones/dreamsim_ensemble`). 9 to 20 minutes on 2 CPU cores for Lite0, by the CPU.

    python benchmarks/heldout_transfer.py [--out benchmarks/results/heldout_transfer.json]
    python benchmarks/heldout_transfer.py --table benchmarks/results/heldout_transfer.json

Simulated data: the numbers say how heads do on the simulator's families, not on people.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import emit, shared_test_ids  # noqa: E402

HEADS = ("pooled", "pooled_lowrank")
LEARNED_ON_STRENGTH = 1e-3
LEARNED_ON = f"pooled_lowrank, shrink_learned {LEARNED_ON_STRENGTH:g}"
DEFAULT_HEAD = "default head (fitted on the default audience)"


def backbone_spec(name: str) -> tuple[str, int | None]:
    """A backbone spec and image size, from a spec or a packaged backbone config."""
    import yaml

    from interpscore.errors import InputError
    from interpscore.resources import config_file

    if not name.startswith("backbones/"):
        return name, 128
    try:
        data = yaml.safe_load(config_file(name).read_text())["data"]
    except InputError as err:
        sys.exit(f"error: --backbone {name}: {err}")
    return data["backbone"], data.get("image_size")


def fit(name: str, tensors, ids, **options):
    """A head of `name` fitted on `ids` as training fits it (its own choice of priors)."""
    from interpscore.metric.heads import create_head

    head = create_head(name, tensors.dim, stage_dims=tensors.stage_dims, **options)
    info = head.fit(tensors, ids)
    return head, {k: v for k, v in info.items() if not k.endswith("_scores")}


def averaged(per_dataset: dict, datasets: dict, ids_of, n_boot: int,
             reference: str = "mis") -> dict:
    """Each dataset's predictors measured on its (shared) test conditions, and the mean over
    datasets with paired draws, differences to `reference`:
    {"mean": summary, "per_dataset": {name: summary}}."""
    from interpscore.evaluation.agreement import average_reports
    from interpscore.evaluation.benchmark import measure_dataset

    reports, boots = {}, {}
    for name, tensors in datasets.items():
        reports[name], boots[name] = measure_dataset(per_dataset[name], tensors, ids_of(tensors),
                                                     n_boot, 0, reference)
    mean = average_reports(list(reports.values()), list(boots.values()), reference)
    return {"mean": _summary(mean, reference),
            "per_dataset": {n: _summary(r, reference) for n, r in reports.items()}}


def _summary(report: dict, reference: str = "mis") -> dict:
    keep = ("within", "within_ci", f"within_minus_{reference}", f"within_minus_{reference}_ci")
    return {"ceiling_within": report["ceiling"]["within"],
            "predictors": {name: {k: r[k] for k in keep if k in r}
                           for name, r in report["predictors"].items()}}


def main():
    from interpscore.evaluation.baselines import fit_mis
    from interpscore.metric.backbones import create_backbone
    from interpscore.metric.tasks import load_task_tensors
    from interpscore.resources import DEFAULT_BACKBONE, DEFAULT_CACHE, DEFAULT_DATA_ROOT
    from interpscore.simulate.config import HELDOUT_POOL, SimulationConfig
    from interpscore.simulate.release import simulated_dataset_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE,
                        help="a backbone spec or a packaged config (backbones/NAME)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out")
    parser.add_argument("--table", metavar="JSON",
                        help="print the markdown tables of a saved result and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return

    config = SimulationConfig()
    default = simulated_dataset_dir(None, args.data_root)
    if not (default / "dataset_dict.json").is_file():
        sys.exit(f"error: {default}: not built; run `python train.py` once first")
    spec, image_size = backbone_spec(args.backbone)
    backbone = create_backbone(spec, image_size=image_size)

    def load(audience):
        return load_task_tensors(simulated_dataset_dir(None, args.data_root, audience), backbone,
                                 args.cache_dir)

    start = time.perf_counter()
    train = load("default")
    train_ids = train.conditions.index[train.conditions["split"] == "train"].tolist()
    mis = fit_mis(train, train_ids)
    held = {f: load(f"{HELDOUT_POOL}-{f}") for f in config.heldout_families}
    headline_ids = shared_test_ids(held.values())
    result = {"benchmark": "heldout_transfer", "simulation_key": config.key(),
              "backbone": spec, "image_size": image_size,
              "note": "simulated data: agreement with the simulator's observer families, "
                      "not people"}

    # The heads as `python train.py` fits them on the default audience, and the low-rank head
    # with its learned space held on, at the prior whose left-out mean score is best there
    # (the one-standard-error rule switches it off): what a learned space carries where.
    fitted = {"mis": mis}
    result["learned_space"] = {"learned": {}}
    for name in HEADS:
        fitted[name], result["learned_space"]["learned"][name] = fit(name, train, train_ids)
    fitted[LEARNED_ON], result["learned_space"]["learned"][LEARNED_ON] = fit(
        "pooled_lowrank", train, train_ids, shrink_learned=LEARNED_ON_STRENGTH)

    # 1. Fitted on each held-out family's own pool-A answers, scored on its pool-B answers,
    # beside the default head on the same units (its paired difference: `minus_default`).
    per, learned = {}, {}
    for f in config.heldout_families:
        own = load(f"family-{f}")
        own_ids = own.conditions.index[own.conditions["split"] == "train"].tolist()
        per[f] = {"mis": mis, DEFAULT_HEAD: fitted["pooled_lowrank"]}
        for name in HEADS:
            per[f][name], learned[f"{f} {name}"] = fit(name, own, own_ids)
    result["own_family"] = averaged(per, held, headline_ids, args.n_boot)
    result["own_family"]["minus_default"] = averaged(per, held, headline_ids, args.n_boot,
                                                     reference=DEFAULT_HEAD)["mean"]
    result["own_family"]["learned"] = learned

    # 2. The default audience's heads on views that change the pictures, the families, both.
    views = {"training families, new pictures": {"default": load(f"{HELDOUT_POOL}-default")},
             "new families, training pictures": {f: load(f"family-{f}")
                                                 for f in config.heldout_families},
             "new families, new pictures (headline)": held}
    for view, datasets in views.items():
        result["learned_space"][view] = averaged({n: fitted for n in datasets}, datasets,
                                                 shared_test_ids(datasets.values()), args.n_boot)
    result["seconds"] = round(time.perf_counter() - start, 1)
    emit(result, args.out)


def _cell(row: dict) -> str:
    if "within_minus_mis" not in row:
        return f"{row['within']:.3f}"
    lo, hi = row["within_minus_mis_ci"]
    return f"{row['within']:.3f} ({row['within_minus_mis']:+.3f} [{lo:+.3f}, {hi:+.3f}])"


def markdown(result: dict) -> str:
    """Two tables: heads fitted on each held-out family's own answers (per family, their mean,
    and the mean's paired difference to the default head), and the heads fitted on the default
    audience on each view; each cell is within-group Spearman (minus MIS [95 % CI])."""
    block = result["own_family"]
    families = list(block["per_dataset"])
    lines = ["| fitted on the family's own answers | " + " | ".join(families)
             + " | mean | mean - default head |", "|---" * (3 + len(families)) + "|"]
    for name in block["mean"]["predictors"]:
        cells = [_cell(block["per_dataset"][f]["predictors"][name]) for f in families]
        versus = block["minus_default"]["predictors"][name].get(f"within_minus_{DEFAULT_HEAD}")
        ci = block["minus_default"]["predictors"][name].get(f"within_minus_{DEFAULT_HEAD}_ci")
        versus = "-" if versus is None else f"{versus:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {_cell(block['mean']['predictors'][name])} | {versus} |")
    ceilings = [f"{block['per_dataset'][f]['ceiling_within']:.3f}" for f in families]
    lines.append("| ceiling | " + " | ".join(ceilings)
                 + f" | {block['mean']['ceiling_within']:.3f} | |")
    views = [v for v in result["learned_space"] if v != "learned"]
    lines += ["", "| fitted on the default audience | " + " | ".join(views) + " |",
              "|---" * (1 + len(views)) + "|"]
    for name in result["learned_space"][views[0]]["mean"]["predictors"]:
        lines.append(f"| {name} | " + " | ".join(
            _cell(result["learned_space"][v]["mean"]["predictors"][name]) for v in views) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
