"""The `interpscore` command. Subcommands import their heavy modules lazily, so `--help` is fast.

`main(argv)` returns an exit code and is callable from tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InputError


def _download_imi(args) -> int:
    from .download import download_imi

    for path in download_imi(args.out, args.files or None, base_url=args.base_url):
        print(f"ok  {path}")
    return 0


def _prepare(args) -> int:
    from .dataset import prepare
    from .exclusion import ExclusionCriteria

    criteria = ExclusionCriteria(
        min_catch_accuracy=args.min_catch_accuracy, min_total_time_s=args.min_total_time,
        max_total_time_s=args.max_total_time, min_instruction_time_s=args.min_instruction_time,
        min_presses_per_row=args.min_presses_per_row, max_demo_attempts=args.max_demo_attempts,
        drop_multi_participation=not args.keep_multi_participation,
        use_table_checks=not args.recompute_checks)
    result = prepare(args.responses, args.out, images=args.images, criteria=criteria,
                     allow_missing=args.allow_missing, seed=args.seed,
                     val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                     overwrite=args.overwrite)
    print(result.report.table())
    print(f"\nsource: {result.source}; {len(result.trials)} valid trials, "
          f"{result.units['unit_id'].nunique()} units -> {result.out}")
    return 0


def _simulate(args) -> int:
    from .simulate import SimulationConfig, simulate

    config = SimulationConfig(seed=args.seed)
    for name in ("models", "units_per_model", "pool_size", "image_size", "n_batches",
                 "responses_per_unit"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    out = simulate(args.out, config, overwrite=args.overwrite)
    print(f"simulated IMI release (source: simulated) -> {out}\nnext: interpscore prepare "
          f"--responses {out}/responses_main.csv --images {out}/images --out DIR")
    return 0


def _layers(args) -> int:
    from .models import layers_of_interest, load_model, module_depths
    from .stimuli import layer_channels

    model = load_model(args.model, image_size=args.image_size)
    layers = layers_of_interest(model.module)
    channels = layer_channels(model, layers, args.image_size or model.input_size)
    depths = module_depths(model.module)
    print(f"{'layer':48s} {'units':>6s} {'depth':>6s}")
    for layer in layers:
        print(f"{layer:48s} {channels[layer]:6d} {depths[layer]:6.3f}")
    return 0


def _stimuli(args) -> int:
    from .models import layers_of_interest, load_model
    from .pools import open_pool
    from .stimuli import build_exemplars, layer_channels, sample_units, write_store

    model = load_model(args.model, image_size=args.image_size)
    layers = (layers_of_interest(model.module) if args.layers == "auto"
              else [name.strip() for name in args.layers.split(",")])
    channels = layer_channels(model, layers, args.image_size)
    units = sample_units(channels, None if args.units == "all" else int(args.units), args.seed)
    pool = open_pool(args.images, size=args.image_size, seed=args.seed)
    exemplars, constant = build_exemplars(
        model, pool, units, args.n_refs, args.n_batches, args.difficulties.split(","),
        args.max_refs_per_source, batch_size=args.batch_size, seed=args.seed)
    write_store(args.out, model.label, exemplars, pool, progress=True)
    print(f"{len(exemplars)} units -> {args.out}/{model.label}/ (stimulus store layout); "
          f"{len(constant)} constant units dropped")
    return 0


def _evaluate(args) -> int:
    from .evaluate import run_evaluation

    metrics = run_evaluation(args.checkpoint, args.out, data_dir=args.data, split=args.split,
                             folds=args.folds, backbone=args.backbone, images_dir=args.images_dir,
                             cache_dir=args.cache_dir, lomo_epochs=args.lomo_epochs,
                             n_boot=args.n_boot)
    print(f"{'predictor':14s} {'spearman':>9s} {'95% CI':>16s} {'mae':>7s} {'of ceiling':>10s}")
    for name, m in metrics["predictors"].items():
        ci = f"[{m['spearman_ci'][0]:.3f}, {m['spearman_ci'][1]:.3f}]"
        print(f"{name:14s} {m['spearman']:9.3f} {ci:>16s} {m['mae']:7.3f} "
              f"{m['fraction_of_ceiling']:10.2f}")
    print(f"report -> {args.out}/report.md (and report.html, metrics.json, figures)")
    return 0


def _score(args) -> int:
    from .score import load, summarise_scores

    shard = None
    if args.shard is not None:
        shard = tuple(int(x) for x in args.shard.split("/"))
    scorer = load(args.checkpoint, cache_dir=args.cache_dir)
    frame = scorer.score_units(
        args.model, layers="auto" if args.layers == "auto" else args.layers.split(","),
        units=args.units if args.units == "all" or args.units.isdigit() else args.units.split(","),
        images=args.images, difficulty=args.difficulty, n_refs=args.n_refs,
        n_batches=args.n_batches, image_size=args.image_size, pool_size=args.pool_size,
        seed=args.seed, batch_size=args.batch_size, out=args.out,
        save_stimuli=args.save_stimuli, shard=shard)
    if frame is None:
        print(f"shard {args.shard} done -> {args.out}/shards/ (run without --shard to merge)")
        return 0
    for name, table in summarise_scores(frame).items():
        print(f"\nby {name}:\n{table.to_string(index=False, float_format='%.3f')}")
    print(f"\n{int((frame['status'] == 'ok').sum())} of {len(frame)} units scored -> "
          f"{args.out}/scores.parquet (and .csv)")
    return 0


def _export(args) -> int:
    from .export import export_experiment

    out = export_experiment(args.stimuli, args.out, scores=args.scores, units=args.units,
                            select=args.select, n=args.n, seed=args.seed)
    print(f"experiment -> {out}")
    return 0


def _leaderboard(args) -> int:
    from . import leaderboard as board

    root = Path(args.root) if args.root else board.ROOT
    if args.action == "validate":
        problems = board.validate_all(args.files, root)
        for item in problems.items:
            print(item)
        print(f"{len(problems.items)} problem(s)" if problems else "all entries valid")
        return 1 if problems else 0
    if args.action == "fix-track":
        if not (args.track and args.imi_data):
            raise InputError("fix-track needs --track NAME and --imi-data DIR (a prepared dataset)")
        print(f"track units -> {board.fix_track_units(args.track, args.imi_data, root)}")
        return 0
    if args.action == "score":
        for path in board.score_entries(args.ids, root, args.data_root, args.imi_data, args.n_boot):
            print(f"scored -> {path}")
        return 0
    if args.action == "submit":
        path = board.submit(args.meta, root, checkpoint=args.checkpoint, baseline=args.baseline,
                            data_root=args.data_root, cache_dir=args.cache_dir)
        print(f"entry -> {path}\nnext: interpscore leaderboard validate {path}")
        return 0
    for path in board.render(root):
        print(f"rendered -> {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interpscore", description="Predict per-unit human interpretability (IMI 2-AFC).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dl = commands.add_parser("download-imi", help="download the IMI release from Zenodo")
    dl.add_argument("--out", required=True, help="folder for the zips")
    dl.add_argument("--files", nargs="*", help="subset: human_responses.zip image_data.zip")
    dl.add_argument("--base-url", default="https://zenodo.org/records/8131197/files")
    dl.set_defaults(run=_download_imi)

    prep = commands.add_parser("prepare", help="turn IMI responses (+ images) into a dataset")
    prep.add_argument("--responses", required=True,
                      help="responses_main.csv, a folder or a zip (CSV or result_task_*.pkl)")
    prep.add_argument("--images", help="images root (stimulus store or per-task layout)")
    prep.add_argument("--out", required=True, help="output dataset folder")
    prep.add_argument("--allow-missing", action="store_true",
                      help="drop trials whose images are missing instead of failing")
    prep.add_argument("--overwrite", action="store_true")
    prep.add_argument("--seed", type=int, default=0, help="seed of the unit split")
    prep.add_argument("--val-fraction", type=float, default=0.15)
    prep.add_argument("--test-fraction", type=float, default=0.15)
    prep.add_argument("--min-catch-accuracy", type=float, default=0.8)
    prep.add_argument("--min-total-time", type=float, default=135.0, help="seconds")
    prep.add_argument("--max-total-time", type=float, default=2500.0, help="seconds")
    prep.add_argument("--min-instruction-time", type=float, default=15.0, help="seconds")
    prep.add_argument("--min-presses-per-row", type=int, default=5)
    prep.add_argument("--max-demo-attempts", type=int, default=3)
    prep.add_argument("--keep-multi-participation", action="store_true")
    prep.add_argument("--recompute-checks", action="store_true",
                      help="ignore the table's passed_checks and compute the checks")
    prep.set_defaults(run=_prepare)

    sim = commands.add_parser("simulate", help="generate the simulated IMI release (offline)")
    sim.add_argument("--out", required=True)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--models", nargs="+", help="model specs (default: five offline models)")
    sim.add_argument("--units-per-model", type=int)
    sim.add_argument("--pool-size", type=int)
    sim.add_argument("--image-size", type=int)
    sim.add_argument("--n-batches", type=int)
    sim.add_argument("--responses-per-unit", type=int)
    sim.add_argument("--overwrite", action="store_true")
    sim.set_defaults(run=_simulate)

    lay = commands.add_parser("layers", help="list a model's layers of interest")
    lay.add_argument("model", help="timm name, NAME@random, efficientnet_lite0, open_clip:NAME:TAG")
    lay.add_argument("--image-size", type=int, default=None)
    lay.set_defaults(run=_layers)

    stim = commands.add_parser("stimuli", help="build IMI stimuli for units of a model")
    stim.add_argument("--model", required=True)
    stim.add_argument("--images", default="default", help="image folder, saved HF dataset, or "
                      "'default' (the offline pool)")
    stim.add_argument("--out", required=True)
    stim.add_argument("--layers", default="auto", help="auto or L1,L2,...")
    stim.add_argument("--units", default="20", help="number of units, or 'all'")
    stim.add_argument("--n-refs", type=int, default=9)
    stim.add_argument("--n-batches", type=int, default=20)
    stim.add_argument("--difficulties", default="easy", help="e.g. easy,hard85,hard95")
    stim.add_argument("--max-refs-per-source", type=int, default=None)
    stim.add_argument("--image-size", type=int, default=224)
    stim.add_argument("--batch-size", type=int, default=64)
    stim.add_argument("--seed", type=int, default=0)
    stim.set_defaults(run=_stimuli)

    ev = commands.add_parser("evaluate", help="predicted vs measured HIS, baselines, ceiling")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data", help="prepared dataset (default: the one it was trained on)")
    ev.add_argument("--split", default="test", help="test, val or all")
    ev.add_argument("--folds", help="lomo: also retrain without each model and predict it")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--backbone", help="check the checkpoint reads this backbone")
    ev.add_argument("--images-dir", help="images root (default: as recorded by prepare)")
    ev.add_argument("--cache-dir", default=".cache/interpscore")
    ev.add_argument("--lomo-epochs", type=int, default=60)
    ev.add_argument("--n-boot", type=int, default=1000)
    ev.set_defaults(run=_evaluate)

    sc = commands.add_parser("score", help="score units of any model with a trained metric")
    sc.add_argument("--checkpoint", required=True)
    sc.add_argument("--model", required=True, help="timm name, NAME@random, efficientnet_lite0, "
                    "open_clip:NAME:TAG")
    sc.add_argument("--images", default="default", help="image folder, saved HF dataset, or "
                    "'default' (the offline pool)")
    sc.add_argument("--layers", default="auto", help="auto or L1,L2,...")
    sc.add_argument("--units", default="20", help="N (IMI sampling), all, or layer:channel,...")
    sc.add_argument("--difficulty", default="easy", help="easy, hard85, hard95 or hard99")
    sc.add_argument("--n-refs", type=int, default=9)
    sc.add_argument("--n-batches", type=int, default=20)
    sc.add_argument("--image-size", type=int, default=224)
    sc.add_argument("--pool-size", type=int, default=3000, help="size of the default pool")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--batch-size", type=int, default=64)
    sc.add_argument("--shard", help="RANK/WORLD: compute only this part of the activation pass")
    sc.add_argument("--save-stimuli", action="store_true", help="also write the exemplars")
    sc.add_argument("--cache-dir", default=".cache/interpscore")
    sc.add_argument("--out", required=True)
    sc.set_defaults(run=_score)

    ex = commands.add_parser("export-experiment",
                             help="a ready 2-AFC experiment (IMI per-task layout) for chosen units")
    ex.add_argument("--stimuli", required=True, help="a stimulus store (score --save-stimuli)")
    ex.add_argument("--out", required=True)
    ex.add_argument("--scores", help="scores.parquet, for --select uncertain|extreme")
    ex.add_argument("--units", nargs="*", help="units as MODEL/LAYER/CHANNEL (default: all)")
    ex.add_argument("--select", choices=["uncertain", "extreme", "random"])
    ex.add_argument("-n", type=int, default=10, help="how many units --select picks")
    ex.add_argument("--seed", type=int, default=0)
    ex.set_defaults(run=_export)

    lb = commands.add_parser("leaderboard", help="validate, score, submit and render entries")
    lb.add_argument("action", choices=["validate", "score", "submit", "render", "fix-track"])
    lb.add_argument("files", nargs="*", help="validate: entry files (default: all)")
    lb.add_argument("--root", help="leaderboard folder (default: the project's leaderboard/)")
    lb.add_argument("--ids", nargs="*", help="score: only these entries")
    lb.add_argument("--meta", help="submit: the entry's metadata YAML")
    lb.add_argument("--checkpoint", help="submit: a trained checkpoint")
    lb.add_argument("--baseline", choices=["mis", "layer_depth", "constant"],
                    help="submit: a built-in baseline instead of a checkpoint")
    lb.add_argument("--data-root", default="data", help="where simulated datasets are cached")
    lb.add_argument("--imi-data", help="score, fix-track: the prepared real IMI dataset")
    lb.add_argument("--track", help="fix-track: the track whose test units to freeze")
    lb.add_argument("--cache-dir", default=".cache/interpscore")
    lb.add_argument("--n-boot", type=int, default=1000)
    lb.set_defaults(run=_leaderboard)

    # `train` hands all its arguments to LightningCLI (see main); listed here for --help.
    commands.add_parser("train", help="train a metric (LightningCLI: `interpscore train --help`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["train"]:  # LightningCLI parses its own arguments
            from .train import main as train_main

            train_main(argv[1:])
            return 0
        args = build_parser().parse_args(argv)
        return args.run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
