"""Using a metric: `evaluate`, `score`, `zoo`."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..atomic import check_output_folder
from ..errors import InputError
from ..options import (IMAGES_HELP, MODEL_HELP, POSITIVE_INT, add_fields, from_namespace,
                       overwrite_help)
from ..resources import DEFAULT_CACHE
from .common import (FEATURES_HELP, REDUCTION_HELP, UNREADABLE, add_command, layers_arg,
                     readout_arg, shard_arg)

CHECKPOINT_HELP = "a checkpoint of `python train.py`"


def simulated_benchmark_of(checkpoint, data) -> dict | None:
    """A checkpoint trained on the simulated default is also measured on the release's held-out
    audiences (unless another dataset is asked for)."""
    from ..metric.checkpoint import load_checkpoint
    from ..simulate.release import release_benchmark

    hparams = load_checkpoint(checkpoint).data_hparams
    if "simulation" not in hparams or data not in (None, hparams.get("data_dir")):
        return None
    return release_benchmark(hparams["simulation"], hparams.get("data_root", "data"),
                             hparams.get("data_dir"), hparams.get("fold"))


def evaluate(args) -> int:
    from ..evaluation.harness import run_evaluation
    from ..evaluation.report import predictor_table, write_report

    check_output_folder(args.out, args.overwrite)
    if args.images_dir is not None and not Path(args.images_dir).is_dir():
        raise InputError(f"--images-dir {args.images_dir}: no such folder")
    metrics, table, tensors = run_evaluation(
        args.checkpoint, data_dir=args.data, split=args.split, backbone=args.backbone,
        images_dir=args.images_dir, cache_dir=args.cache_dir, n_boot=args.n_boot,
        benchmark=simulated_benchmark_of(args.checkpoint, args.data))
    if args.folds == "lomo":  # retraining is the training stack's job
        from ..metric.checkpoint import load_checkpoint
        from ..train.lomo import leave_one_model_out

        metric = load_checkpoint(args.checkpoint)
        metrics["lomo"] = leave_one_model_out(
            tensors, dict(metric.hparams), args.lomo_epochs,
            batch_size=metric.data_hparams.get("batch_size", 32))
    write_report(metrics, table, args.out, "trained")
    print(predictor_table(metrics["predictors"]))
    if "undefined" in metrics:
        print(f"note: {metrics['undefined']}")
    print(f"report -> {args.out}/report.md (and report.html, metrics.json, figures)")
    return 0


def score(args) -> int:
    from ..metric.scorer import load
    from ..stimuli.options import ScoringOptions

    shard = shard_arg(args.shard)
    # A folder holding only shards/ is a run to resume (or a sharded run's other ranks).
    check_output_folder(args.out, args.overwrite, resumable=("shards",))
    readout = _readout_of(args)
    scorer = load(args.checkpoint, cache_dir=args.cache_dir)
    options = vars(from_namespace(args, ScoringOptions))
    if args.activations is not None:
        frame = scorer.score_activations(args.activations, args.images, args.units or "all",
                                         model=args.model or "activations", out=args.out,
                                         save_stimuli=args.save_stimuli, **options)
        return _report(frame, args.out, args.save_stimuli)
    request = dict(layers=layers_arg(args.layers), units=args.units or "20", images=args.images,
                   **options)
    if readout is not None:  # a feature readout reads its own layer; channels the --layers
        request.update(readout=readout, **({"layers": readout.layer} if readout.layer else {}))
    if shard is not None:
        scorer.compute_shard(args.model, *shard, out=args.out, **request)
        print(f"shard {shard[0]}/{shard[1]} done -> {args.out}/shards/ (run without --shard "
              "to merge)")
        return 0
    with warnings.catch_warnings():  # one line for them all, below, not one per image
        warnings.filterwarnings("ignore", message=UNREADABLE)
        frame = scorer.score_units(args.model, out=args.out, save_stimuli=args.save_stimuli,
                                   **request)
    return _report(frame, args.out, args.save_stimuli)


def _readout_of(args):
    """`--features` (an SAE file, or a direction matrix with one --layers) or `--activations`
    instead of channels, checked before anything is loaded; None for channels."""
    if args.activations is not None:
        if args.features is not None:
            raise InputError("--activations: give either --features or --activations")
        if args.reduction is not None:
            raise InputError("--reduction: precomputed --activations are already reduced")
        return None
    if args.model is None:
        raise InputError("--model: required (unless --activations gives the activations)")
    return readout_arg(args.features, args.layers, args.reduction)


def _report(frame, out, save_stimuli: bool = False) -> int:
    from ..metric.scorer import summarise_scores

    skipped = frame.attrs["skipped_images"]
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s) of the pool, e.g. "
              f"{next(iter(skipped.values()))}")
    for name, table in summarise_scores(frame).items():
        print(f"\nby {name}:\n{table.to_string(index=False, float_format='%.3f')}")
    print(f"\n{int((frame['status'] == 'ok').sum())} of {len(frame)} units scored -> "
          f"{out}/scores.parquet (and .csv)")
    for reason, count in frame.loc[frame["status"] != "ok", "status"].value_counts().items():
        print(f"not scored: {count} unit(s): {reason}")  # the column `status` says it per unit
    if save_stimuli:
        print(f"exemplars -> {out}/stimuli/ (IMI's layout); each unit's references: open "
              f"{out}/exemplars.html in a browser")
    return 0


def zoo(args) -> int:
    from ..stimuli.options import ScoringOptions
    from ..zoo.cluster import check_launcher
    from ..zoo.options import LaunchOptions
    from ..zoo.scan import read_models, scan

    launch = from_namespace(args, LaunchOptions)
    check_launcher(launch, args.shard)  # submitit and sbatch are there, before any work
    models = read_models(args.models)
    request = dict(images=args.images, layers=args.layers, units=args.units,
                   features=args.features, reduction=args.reduction,
                   pool_shards=args.pool_shards, overwrite=args.overwrite,
                   cache_dir=args.cache_dir, metadata=args.metadata,
                   **vars(from_namespace(args, ScoringOptions)))
    if launch.launcher == "submitit":
        return _zoo_on_cluster(args, models, launch, request)
    shard = shard_arg(args.shard) if args.shard else None
    units = scan(args.checkpoint, models, args.out, shard=shard, **request)
    if units is None:
        print(f"this process's models are done -> {args.out}/models/; the scan is merged when "
              "every model is (rerun the same command without --shard to merge)")
        return 0
    return _zoo_summary(args.out, units)


def _zoo_on_cluster(args, models, launch, request) -> int:
    from ..zoo.cluster import submit_scan

    done = submit_scan(args.checkpoint, models, args.out, launch, **request)
    print(f"array jobs: {len(done.shard_tasks)} activation pass(es) of (model, pool shard), "
          f"{len(done.model_tasks)} model(s) scored (work already done was skipped)")
    for failure in done.failures:
        print(f"failed: {failure.task} (job {failure.job_id}): {failure.error}\n"
              f"  log: {failure.log}")
    if done.failures:
        print(f"{len(done.failures)} array job(s) failed; rerun the same command to resume")
        return 1
    return _zoo_summary(args.out, done.units)


def _zoo_summary(out, units) -> int:
    ok = units["status"] == "ok"
    failed = units[units["status"].str.startswith("failed")]
    for _, row in failed.iterrows():
        print(f"failed: {row['spec']}: {row['status'].removeprefix('failed: ')}")
    print(f"{int(ok.sum())} units of {units.loc[ok, 'model'].nunique()} models scored, "
          f"{len(failed)} model(s) failed -> {out}/scores.parquet, summary_by_model.csv, "
          "report.html")
    return 0


def register(commands) -> None:
    from ..evaluation.names import SPLITS
    from ..stimuli.options import ScoringOptions
    from ..zoo.options import LaunchOptions

    ev = add_command(commands, "evaluate", evaluate,
                     "predicted vs measured HIS, baselines, ceiling")
    ev.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    ev.add_argument("--data", help="prepared dataset (default: the one it was trained on)")
    ev.add_argument("--split", default=SPLITS[0], choices=SPLITS, help="which units are measured")
    ev.add_argument("--folds", choices=["lomo"],
                    help="lomo: also retrain without each model and predict it")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--overwrite", action="store_true", help=overwrite_help("report"))
    ev.add_argument("--backbone", help="check the checkpoint reads this backbone")
    ev.add_argument("--images-dir", help="images root (default: as recorded by prepare)")
    ev.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding cache")
    ev.add_argument("--lomo-epochs", type=POSITIVE_INT, default=60,
                    help="epochs of each --folds lomo retraining")
    ev.add_argument("--n-boot", type=POSITIVE_INT, default=1000, help="bootstrap resamples of units")

    sc = add_command(commands, "score", score, "score units of any model with a trained metric")
    sc.add_argument("--checkpoint", required=True,
                    help=f"{CHECKPOINT_HELP}, or 'mis' (training-free MIS, nothing to train first)")
    sc.add_argument("--model", help=f"{MODEL_HELP} (required, except with --activations, "
                    "where it only labels the rows)")
    sc.add_argument("--images", default="default", help=IMAGES_HELP)
    sc.add_argument("--features", help=FEATURES_HELP)
    sc.add_argument("--activations", help="score a precomputed matrix [n_images, n_units] "
                    "over --images (.parquet/.csv with an `image` column, .pt, .npy; see "
                    "docs/scoring.md)")
    sc.add_argument("--reduction", help=REDUCTION_HELP)
    sc.add_argument("--layers", default="auto", help="auto or L1,L2,...")
    sc.add_argument("--units", help="N (IMI sampling), N/layer (N of each layer), all, or "
                    "layer:channel,... (default: 20; with --activations, all)")
    add_fields(sc, ScoringOptions)
    sc.add_argument("--shard", help="RANK/WORLD: compute only this part of the activation pass")
    sc.add_argument("--save-stimuli", action="store_true", help="also write the exemplars")
    sc.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding and pool cache, and "
                    "the chunks of a pass Ctrl-C interrupted (a rerun resumes from them)")
    sc.add_argument("--out", required=True, help="folder for scores.parquet/.csv and summaries "
                    "(its shards/ folder is a resumable cache: a rerun continues from it)")
    sc.add_argument("--overwrite", action="store_true", help=overwrite_help("score"))

    zo = add_command(commands, "zoo", zoo, "score every unit (or N per layer) of many models: "
                     "resumable, shardable (--shard R/W or torchrun), with a report")
    zo.add_argument("--checkpoint", required=True,
                    help=f"{CHECKPOINT_HELP}, or 'mis' (training-free MIS, nothing to train first)")
    zo.add_argument("--models", required=True, nargs="+",
                    help="model specs, or files listing one spec a line (# comments)")
    zo.add_argument("--images", default="default", help=IMAGES_HELP)
    zo.add_argument("--out", required=True, help="scan folder (a rerun resumes it)")
    zo.add_argument("--overwrite", action="store_true",
                    help="start again in an --out that holds another scan or other files")
    zo.add_argument("--layers", default="auto", help="auto (the layers of interest) or L1,L2,...")
    zo.add_argument("--units", default="all", help="all, or N/layer (a seeded sample per layer)")
    zo.add_argument("--features", help=f"scan {FEATURES_HELP} (every model must have it)")
    zo.add_argument("--reduction", help=REDUCTION_HELP)
    zo.add_argument("--metadata", help="CSV with columns model, top1, params (params are "
                    "computed where absent)")
    add_fields(zo, ScoringOptions)
    zo.add_argument("--pool-shards", type=POSITIVE_INT, default=4,
                    help="parts of each model's activation pass saved as they finish (resume)")
    zo.add_argument("--shard", help="RANK/WORLD: only models RANK, RANK+WORLD, ... (array jobs; "
                    "under torchrun the ranks are taken from it)")
    add_fields(zo, LaunchOptions)
    zo.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding and pool cache, and "
                    "the chunks of a pass Ctrl-C interrupted (a rerun resumes from them)")
