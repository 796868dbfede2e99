"""The `interpscore` command. Subcommands import their heavy modules lazily, so `--help` is fast.

`main(argv)` returns an exit code and is callable from tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .atomic import check_output_folder
from .errors import InputError
from .resources import DEFAULT_CACHE, DEFAULT_DATA_ROOT, DEFAULT_LEADERBOARD

# The one rule of every command: arguments and inputs are checked before any work; outputs are
# built beside their destination and renamed into place; nothing the command did not write is
# touched; bad input exits 2 with `error: <file or option>: <problem and what to do>`, and no
# traceback unless --debug.
BAD_INPUT, INTERRUPTED = 2, 130


class Parser(argparse.ArgumentParser):
    """argparse with every default shown in --help and its errors in the package's one form."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(BAD_INPUT)


def _number(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a number of `kind` within the given bounds."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}")
        if (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and (value >= high if high_open else value > high)):
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range; give a value in {left}{low if low is not None else '-inf'}"
                f", {high if high is not None else 'inf'}{right}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE = _number(float, 0)
FRACTION = _number(float, 0, 1, high_open=True)
PROBABILITY = _number(float, 0, 1)
SEED = _number(int, 0, 2**32 - 1)  # numpy's seeds


def _download_imi(args) -> int:
    from .data.download import download_imi

    # The folder may hold earlier (partial) downloads: they are this command's, and resumed.
    check_output_folder(args.out, overwrite=True)
    for path in download_imi(args.out, args.files or None, base_url=args.base_url):
        print(f"ok  {path}")
    return 0


def _prepare(args) -> int:
    from .data.dataset import prepare
    from .data.exclusion import ExclusionCriteria

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
    from .simulate.experiment import SimulationConfig, simulate

    config = SimulationConfig(seed=args.seed)
    for name in ("models", "units_per_model", "pool_size", "image_size", "n_batches",
                 "responses_per_unit"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    out = simulate(args.out, config, overwrite=args.overwrite)
    print(f"simulated IMI release (source: simulated) -> {out}\nnext: interpscore prepare "
          f"--responses {out}/audiences/default/responses_main.csv --images {out}/images "
          "--out DIR (audiences/heldout-pool-*: --images images_heldout_pool)")
    return 0


def _layers(args) -> int:
    from .stimuli.networks import layers_of_interest, load_model, module_depths
    from .stimuli.units import layer_channels

    model = load_model(args.model, image_size=args.image_size)
    layers = layers_of_interest(model.module)
    channels = layer_channels(model, layers, args.image_size or model.input_size)
    depths = module_depths(model.module)
    print(f"{'layer':48s} {'units':>6s} {'depth':>6s}")
    for layer in layers:
        print(f"{layer:48s} {channels[layer]:6d} {depths[layer]:6.3f}")
    return 0


def _stimuli(args) -> int:
    from .stimuli.networks import load_model
    from .stimuli.pools import open_pool
    from .atomic import atomic_folder
    from .stimuli.selection import build_exemplars, check_request
    from .stimuli.store import write_store
    from .stimuli.units import check_units_spec, choose_units

    difficulties = args.difficulties.split(",")
    check_request(args.n_refs, args.n_batches, difficulties, difficulty_option="--difficulties")
    check_units_spec(args.units)
    check_output_folder(args.out, args.overwrite)
    model = load_model(args.model, image_size=args.image_size)
    units = choose_units(model, _layers_arg(args.layers), args.units, args.image_size, args.seed)
    pool = open_pool(args.images, size=args.image_size, seed=args.seed)
    exemplars, dropped = build_exemplars(
        model, pool, units, args.n_refs, args.n_batches, difficulties,
        args.max_refs_per_source, batch_size=args.batch_size, seed=args.seed)
    with atomic_folder(args.out, args.overwrite) as tmp:
        write_store(tmp, model.label, exemplars, pool, progress=True)
    print(f"{len(exemplars)} units -> {args.out}/{model.label}/ (stimulus store layout); "
          f"{len(dropped)} units dropped (constant over the pool or non-finite)")
    return 0


def _layers_arg(text: str):
    return "auto" if text == "auto" else [name.strip() for name in text.split(",")]


def _simulated_benchmark_of(checkpoint, data) -> dict | None:
    """A checkpoint trained on the simulated default is also measured on the release's held-out
    audiences (unless another dataset is asked for)."""
    from .metric.checkpoint import load_checkpoint
    from .simulate.experiment import benchmark_datasets, simulated_dataset_dir

    hparams = load_checkpoint(checkpoint).data_hparams
    if "simulation" not in hparams or data not in (None, hparams.get("data_dir")):
        return None
    default = simulated_dataset_dir(hparams["simulation"], hparams.get("data_root", "data"))
    if Path(hparams.get("data_dir") or "") != default:
        return None
    return benchmark_datasets(hparams["simulation"], hparams.get("data_root", "data"))


def _evaluate(args) -> int:
    from .evaluation.harness import run_evaluation
    from .evaluation.report import write_report

    check_output_folder(args.out, args.overwrite)
    if args.images_dir is not None and not Path(args.images_dir).is_dir():
        raise InputError(f"--images-dir {args.images_dir}: no such folder")
    metrics, table, tensors = run_evaluation(
        args.checkpoint, data_dir=args.data, split=args.split, backbone=args.backbone,
        images_dir=args.images_dir, cache_dir=args.cache_dir, n_boot=args.n_boot,
        benchmark=_simulated_benchmark_of(args.checkpoint, args.data))
    if args.folds == "lomo":  # retraining is the training stack's job
        from .metric.checkpoint import load_checkpoint
        from .train.lomo import leave_one_model_out

        metric = load_checkpoint(args.checkpoint)
        metrics["lomo"] = leave_one_model_out(
            tensors, dict(metric.hparams), args.lomo_epochs,
            batch_size=metric.data_hparams.get("batch_size", 32))
    write_report(metrics, table, args.out, "trained")
    print(f"{'predictor':14s} {'spearman':>9s} {'95% CI':>16s} {'mae':>7s} {'of ceiling':>10s}")
    for name, m in metrics["predictors"].items():
        ci = f"[{m['spearman_ci'][0]:.3f}, {m['spearman_ci'][1]:.3f}]"
        print(f"{name:14s} {m['spearman']:9.3f} {ci:>16s} {m['mae']:7.3f} "
              f"{m['fraction_of_ceiling']:10.2f}")
    print(f"report -> {args.out}/report.md (and report.html, metrics.json, figures)")
    return 0


def _shard_arg(text: str | None) -> tuple[int, int] | None:
    """`--shard R/W`, or torchrun's RANK and WORLD_SIZE when it launched us."""
    import os

    if text is None:
        if os.environ.get("WORLD_SIZE", "1") == "1":
            return None
        text = f"{os.environ.get('RANK', '0')}/{os.environ['WORLD_SIZE']}"
    rank, _, world = text.partition("/")
    if not (rank.isdigit() and world.isdigit() and 0 <= int(rank) < int(world)):
        raise InputError(f"--shard {text}: write it as RANK/WORLD with 0 <= RANK < WORLD, e.g. 0/4")
    return int(rank), int(world)


def _score(args) -> int:
    from .metric.scorer import load, summarise_scores

    shard = _shard_arg(args.shard)
    # A folder holding only shards/ is a run to resume (or a sharded run's other ranks).
    check_output_folder(args.out, args.overwrite, resumable=("shards",))
    scorer = load(args.checkpoint, cache_dir=args.cache_dir)
    request = dict(layers=_layers_arg(args.layers), units=args.units, images=args.images,
                   **_scoring_options(args))
    if shard is not None:
        scorer.compute_shard(args.model, *shard, out=args.out, **request)
        print(f"shard {shard[0]}/{shard[1]} done -> {args.out}/shards/ (run without --shard "
              "to merge)")
        return 0
    frame = scorer.score_units(args.model, out=args.out, save_stimuli=args.save_stimuli,
                               **request)
    skipped = frame.attrs["skipped_images"]
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s) of the pool, e.g. "
              f"{next(iter(skipped.values()))}")
    for name, table in summarise_scores(frame).items():
        print(f"\nby {name}:\n{table.to_string(index=False, float_format='%.3f')}")
    print(f"\n{int((frame['status'] == 'ok').sum())} of {len(frame)} units scored -> "
          f"{args.out}/scores.parquet (and .csv)")
    return 0


def _zoo(args) -> int:
    from .zoo.scan import read_models, scan

    models = read_models(args.models)
    shard = _shard_arg(args.shard) if args.shard else None
    options = _scoring_options(args)
    units = scan(args.checkpoint, models, args.out, images=args.images, layers=args.layers,
                 units=args.units, pool_shards=args.pool_shards, shard=shard,
                 overwrite=args.overwrite, cache_dir=args.cache_dir, metadata=args.metadata,
                 **options)
    if units is None:
        print(f"this process's models are done -> {args.out}/models/; the scan is merged when "
              "every model is (rerun the same command without --shard to merge)")
        return 0
    ok = units["status"] == "ok"
    failed = units[units["status"].str.startswith("failed")]
    for _, row in failed.iterrows():
        print(f"failed: {row['spec']}: {row['status'].removeprefix('failed: ')}")
    print(f"{int(ok.sum())} units of {units.loc[ok, 'model'].nunique()} models scored, "
          f"{len(failed)} model(s) failed -> {args.out}/scores.parquet, summary_by_model.csv, "
          "report.html")
    return 0


def _export(args) -> int:
    from .stimuli.export import export_experiment

    out = export_experiment(args.stimuli, args.out, scores=args.scores, units=args.units,
                            select=args.select, n=args.n, seed=args.seed,
                            overwrite=args.overwrite)
    print(f"experiment -> {out}")
    return 0


def _track_datasets(root, data_root, imi_data) -> dict[str, dict | None]:
    """Each track's prepared datasets: `score` (what entries are measured on) and `fit` (whose
    training units baselines are fitted on). The simulated ones are generated on demand (here,
    not in the leaderboard package, which never simulates); the human one only where given;
    retired tracks are not measured again."""
    from .leaderboard.entries import load_tracks
    from .simulate.experiment import ensure_simulated, simulated_dataset_dir

    out = {}
    for name, track in load_tracks(root).items():
        if track.get("status") == "retired":
            out[name] = None
        elif track["dataset"] == "simulated":
            simulation = track.get("simulation")
            ensure_simulated(simulation, data_root)
            audiences = track.get("audiences", ["default"])
            out[name] = {"score": [simulated_dataset_dir(simulation, data_root, a) for a in audiences],
                         "fit": simulated_dataset_dir(simulation, data_root,
                                                      track.get("fit_audience", audiences[0]))}
        else:
            out[name] = {"score": [Path(imi_data)], "fit": Path(imi_data)} if imi_data else None
    return out


def _leaderboard_validate(args) -> int:
    from .leaderboard.entries import check_root, validate_all

    problems = validate_all(args.files, check_root(args.root))
    for item in problems.items:
        print(item)
    print(f"{len(problems.items)} problem(s)" if problems else "all entries valid")
    return 1 if problems else 0


def _leaderboard_fix_track(args) -> int:
    from .leaderboard.entries import check_root, fix_track_units

    print(f"track units -> {fix_track_units(args.track, args.imi_data, check_root(args.root))}")
    return 0


def _leaderboard_score(args) -> int:
    from .leaderboard.entries import check_root
    from .leaderboard.scoring import score_entries

    root = check_root(args.root)
    datasets = {name: d and d["score"] for name, d in
                _track_datasets(root, args.data_root, args.imi_data).items()}
    for path in score_entries(datasets, args.ids, root, args.n_boot):
        print(f"scored -> {path}")
    return 0


def _leaderboard_submit(args) -> int:
    """Predictions through the evaluation harness, then the entry's files."""
    import yaml

    from .evaluation.harness import predict_units
    from .leaderboard.entries import KEYS, check_root, load_tracks, track_units, write_entry

    if (args.checkpoint is None) == (args.baseline is None):
        raise InputError("leaderboard submit: give --checkpoint CKPT or --baseline NAME")
    root = check_root(args.root)
    metric = None
    if args.checkpoint:  # read before any dataset is simulated
        from .metric.checkpoint import load_checkpoint

        metric = load_checkpoint(args.checkpoint)
    meta = yaml.safe_load(Path(args.meta).read_text()) if Path(args.meta).is_file() else None
    if not isinstance(meta, dict) or "id" not in meta:
        raise InputError(f"--meta {args.meta}: a YAML file with at least an id")
    if (root / "submissions" / f"{meta['id']}.yaml").exists() and not args.overwrite:
        raise InputError(f"--meta {args.meta}: entry '{meta['id']}' already exists in "
                         f"{root / 'submissions'}; pass --overwrite to replace its predictions")
    tracks = load_tracks(root)
    datasets = {name: d for name, d in _track_datasets(root, args.data_root, None).items() if d}
    # Baselines that read no embeddings (backbone: none) still go through the task tensors,
    # which the default backbone builds.
    backbone = meta.get("backbone") if meta.get("backbone") not in (None, "none") else "efficientnet_lite0"
    predictions = {}
    for name, dataset in datasets.items():
        units = track_units(root, name, tracks[name])
        if units is None:
            continue
        frame = units[KEYS].copy()
        frame["predicted"] = predict_units(
            dataset["score"][0], units, checkpoint=args.checkpoint, baseline=args.baseline,
            backbone=backbone, cache_dir=args.cache_dir,
            fit_on=dataset["fit"]).round(6)
        predictions[name] = frame
    if metric is not None:
        meta.setdefault("backbone", metric.backbone)
        meta.setdefault("trainable_parameters", int(sum(
            p.numel() for p in metric.head.parameters() if p.requires_grad)))
    path = write_entry(meta, predictions, root)
    print(f"entry -> {path}\nnext: interpscore leaderboard validate {path}")
    return 0


def _leaderboard_render(args) -> int:
    from .leaderboard.entries import check_root
    from .leaderboard.render import render

    for path in render(check_root(args.root)):
        print(f"rendered -> {path}")
    return 0


SCORING_ARGUMENTS = ("difficulty", "n_refs", "n_batches", "image_size", "pool_size", "seed",
                     "batch_size", "workers")  # ScoringOptions fields, as score and zoo take them


def _scoring_arguments(sub) -> None:
    """How stimuli are made for scoring: the options `score` and `zoo` share."""
    sub.add_argument("--difficulty", default="easy", choices=["easy", "hard85", "hard95", "hard99"],
                     help="how far below the references the queries sit")
    sub.add_argument("--n-refs", type=POSITIVE_INT, default=9, help="references per side")
    sub.add_argument("--n-batches", type=POSITIVE_INT, default=20, help="tasks per unit")
    sub.add_argument("--image-size", type=POSITIVE_INT, default=224, help="pixels")
    sub.add_argument("--pool-size", type=POSITIVE_INT, default=3000,
                     help="size of the default pool")
    sub.add_argument("--seed", type=SEED, default=0, help="seed of unit sampling and batches")
    sub.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="images per forward pass")
    sub.add_argument("--workers", type=_number(int, 0), default=0,
                     help="DataLoader processes decoding images (a GPU wants several)")


def _scoring_options(args) -> dict:
    return {name: getattr(args, name) for name in SCORING_ARGUMENTS}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="interpscore", description="Predict per-unit human interpretability (IMI 2-AFC).")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, run, help):
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    dl = command("download-imi", _download_imi, "download the IMI release from Zenodo")
    dl.add_argument("--out", required=True, help="folder for the zips (resumes partial files)")
    dl.add_argument("--files", nargs="*", metavar="FILE",
                    help="only these: human_responses.zip image_data.zip (default: both)")
    dl.add_argument("--base-url", default="https://zenodo.org/records/8131197/files",
                    help="where the files are (a mirror, or file:// for a local copy)")

    prep = command("prepare", _prepare, "turn IMI responses (+ images) into a dataset")
    prep.add_argument("--responses", required=True,
                      help="responses_main.csv, a folder or a zip (CSV or result_task_*.pkl)")
    prep.add_argument("--images", help="images root (stimulus store or per-task layout); "
                      "without it, image paths are kept as the table gives them")
    prep.add_argument("--out", required=True, help="output dataset folder")
    prep.add_argument("--allow-missing", action="store_true",
                      help="drop trials whose images are missing instead of failing")
    prep.add_argument("--overwrite", action="store_true",
                      help="replace the dataset files in an --out that already holds files "
                      "(others are kept)")
    prep.add_argument("--seed", type=SEED, default=0, help="seed of the unit split")
    prep.add_argument("--val-fraction", type=FRACTION, default=0.15,
                      help="fraction of units for validation")
    prep.add_argument("--test-fraction", type=FRACTION, default=0.15,
                      help="fraction of units for the test split")
    prep.add_argument("--min-catch-accuracy", type=PROBABILITY, default=0.8,
                      help="exclude responses below this catch-trial accuracy")
    prep.add_argument("--min-total-time", type=NON_NEGATIVE, default=135.0,
                      help="exclude responses faster than this (seconds)")
    prep.add_argument("--max-total-time", type=NON_NEGATIVE, default=2500.0,
                      help="exclude responses slower than this (seconds)")
    prep.add_argument("--min-instruction-time", type=NON_NEGATIVE, default=15.0,
                      help="exclude responses that read the instructions for less (seconds)")
    prep.add_argument("--min-presses-per-row", type=_number(int, 0), default=5,
                      help="exclude responses with fewer presses in a button row")
    prep.add_argument("--max-demo-attempts", type=POSITIVE_INT, default=3,
                      help="exclude responses that needed more practice attempts")
    prep.add_argument("--keep-multi-participation", action="store_true",
                      help="keep workers who took part more than once (the paper drops them)")
    prep.add_argument("--recompute-checks", action="store_true",
                      help="ignore the table's passed_checks and compute the checks")

    sim = command("simulate", _simulate, "generate the simulated IMI release (offline)")
    sim.add_argument("--out", required=True, help="release folder")
    sim.add_argument("--seed", type=SEED, default=0, help="seed of everything simulated")
    sim.add_argument("--models", nargs="+", help="model specs (default: five offline models)")
    sim.add_argument("--units-per-model", type=POSITIVE_INT, help="(default: the config's)")
    sim.add_argument("--pool-size", type=POSITIVE_INT, help="images of pool A (default: the config's)")
    sim.add_argument("--image-size", type=POSITIVE_INT, help="pixels (default: the config's)")
    sim.add_argument("--n-batches", type=POSITIVE_INT,
                     help="stimulus batches per unit (default: the config's)")
    sim.add_argument("--responses-per-unit", type=POSITIVE_INT,
                     help="simulated participants per unit (default: the config's)")
    sim.add_argument("--overwrite", action="store_true",
                     help="replace the release files in an --out that already holds files "
                     "(others are kept)")

    lay = command("layers", _layers, "list a model's layers of interest")
    lay.add_argument("model", help="timm name, NAME@random, efficientnet_lite0, open_clip:NAME:TAG")
    lay.add_argument("--image-size", type=POSITIVE_INT, default=None,
                     help="input pixels (default: the model's)")

    stim = command("stimuli", _stimuli, "build IMI stimuli for units of a model")
    stim.add_argument("--model", required=True,
                      help="timm name, NAME@random, efficientnet_lite0, open_clip:NAME:TAG")
    stim.add_argument("--images", default="default", help="image folder, saved HF dataset, or "
                      "'default' (the offline pool)")
    stim.add_argument("--out", required=True, help="stimulus store folder")
    stim.add_argument("--overwrite", action="store_true",
                      help="replace this model's stimuli in an --out that already holds files")
    stim.add_argument("--layers", default="auto", help="auto or L1,L2,...")
    stim.add_argument("--units", default="20", help="N (IMI sampling), all, or layer:channel,...")
    stim.add_argument("--n-refs", type=POSITIVE_INT, default=9, help="references per side")
    stim.add_argument("--n-batches", type=POSITIVE_INT, default=20, help="batches per unit")
    stim.add_argument("--difficulties", default="easy", help="e.g. easy,hard85,hard95,hard99")
    stim.add_argument("--max-refs-per-source", type=POSITIVE_INT, default=None,
                      help="at most this many references from one source photo (default: any)")
    stim.add_argument("--image-size", type=POSITIVE_INT, default=224, help="pixels")
    stim.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="images per forward pass")
    stim.add_argument("--seed", type=SEED, default=0, help="seed of unit sampling and batches")

    ev = command("evaluate", _evaluate, "predicted vs measured HIS, baselines, ceiling")
    ev.add_argument("--checkpoint", required=True, help="a checkpoint of `python train.py`")
    ev.add_argument("--data", help="prepared dataset (default: the one it was trained on)")
    ev.add_argument("--split", default="test", choices=["test", "val", "all"],
                    help="which units are measured")
    ev.add_argument("--folds", choices=["lomo"],
                    help="lomo: also retrain without each model and predict it")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--overwrite", action="store_true",
                    help="replace the report files in an --out that already holds files (others are kept)")
    ev.add_argument("--backbone", help="check the checkpoint reads this backbone")
    ev.add_argument("--images-dir", help="images root (default: as recorded by prepare)")
    ev.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding cache")
    ev.add_argument("--lomo-epochs", type=POSITIVE_INT, default=60,
                    help="epochs of each --folds lomo retraining")
    ev.add_argument("--n-boot", type=POSITIVE_INT, default=1000, help="bootstrap resamples of units")

    sc = command("score", _score, "score units of any model with a trained metric")
    sc.add_argument("--checkpoint", required=True, help="a checkpoint of `python train.py`")
    sc.add_argument("--model", required=True, help="timm name, NAME@random, efficientnet_lite0, "
                    "open_clip:NAME:TAG")
    sc.add_argument("--images", default="default", help="image folder, saved HF dataset, or "
                    "'default' (the offline pool)")
    sc.add_argument("--layers", default="auto", help="auto or L1,L2,...")
    sc.add_argument("--units", default="20", help="N (IMI sampling), N/layer (N of each layer), "
                    "all, or layer:channel,...")
    _scoring_arguments(sc)
    sc.add_argument("--shard", help="RANK/WORLD: compute only this part of the activation pass")
    sc.add_argument("--save-stimuli", action="store_true", help="also write the exemplars")
    sc.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding and pool cache")
    sc.add_argument("--out", required=True, help="folder for scores.parquet/.csv and summaries "
                    "(its shards/ folder is a resumable cache: a rerun continues from it)")
    sc.add_argument("--overwrite", action="store_true",
                    help="replace the score files in an --out that already holds files "
                    "(others are kept)")

    zoo = command("zoo", _zoo, "score every unit (or N per layer) of many models: resumable, "
                  "shardable (--shard R/W or torchrun), with a report")
    zoo.add_argument("--checkpoint", required=True, help="a checkpoint of `python train.py`, "
                     "or 'mis' (training-free MIS on EfficientNet-Lite0, nothing to train first)")
    zoo.add_argument("--models", required=True, nargs="+",
                     help="model specs, or files listing one spec a line (# comments)")
    zoo.add_argument("--images", default="default", help="image folder, saved HF dataset, or "
                     "'default' (the offline pool)")
    zoo.add_argument("--out", required=True, help="scan folder (a rerun resumes it)")
    zoo.add_argument("--overwrite", action="store_true",
                     help="start again in an --out that holds another scan or other files")
    zoo.add_argument("--layers", default="auto", help="auto (the layers of interest) or L1,L2,...")
    zoo.add_argument("--units", default="all", help="all, or N/layer (a seeded sample per layer)")
    zoo.add_argument("--metadata", help="CSV with columns model, top1, params (params are "
                     "computed where absent)")
    _scoring_arguments(zoo)
    zoo.add_argument("--pool-shards", type=POSITIVE_INT, default=4,
                     help="parts of each model's activation pass saved as they finish (resume)")
    zoo.add_argument("--shard", help="RANK/WORLD: only models RANK, RANK+WORLD, ... (array jobs; "
                     "under torchrun the ranks are taken from it)")
    zoo.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding and pool cache")

    ex = command("export-experiment", _export,
                 "a ready 2-AFC experiment (IMI per-task layout) for chosen units")
    ex.add_argument("--stimuli", required=True, help="a stimulus store (score --save-stimuli)")
    ex.add_argument("--out", required=True, help="experiment folder")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace the experiment files in an --out that already holds files "
                    "(others are kept)")
    ex.add_argument("--scores", help="scores.parquet, for --select uncertain|extreme")
    ex.add_argument("--units", nargs="*", help="units as MODEL/LAYER/CHANNEL (default: all)")
    ex.add_argument("--select", choices=["uncertain", "extreme", "random"],
                    help="pick -n units: most uncertain, most extreme scores, or at random")
    ex.add_argument("-n", type=POSITIVE_INT, default=10, help="how many units --select picks")
    ex.add_argument("--seed", type=SEED, default=0, help="seed of --select random")

    lb = commands.add_parser("leaderboard", help="validate, score, submit and render entries")
    actions = lb.add_subparsers(dest="action", required=True, metavar="ACTION")

    def board_command(name, run, help):
        sub = actions.add_parser(name, help=help, description=help)
        sub.add_argument("--root", type=Path, default=Path(DEFAULT_LEADERBOARD),
                         help="leaderboard folder (tracks.yaml, submissions/, results/)")
        sub.set_defaults(run=run)
        return sub

    val = board_command("validate", _leaderboard_validate, "check entries (the self-check "
                        "before a pull request)")
    val.add_argument("files", nargs="*", help="entry files (default: every entry under --root)")
    sub = board_command("submit", _leaderboard_submit, "make an entry: predictions of a "
                        "checkpoint or a baseline")
    sub.add_argument("--meta", required=True, help="the entry's metadata YAML (id, method, ...)")
    sub.add_argument("--checkpoint", help="a trained checkpoint")
    sub.add_argument("--baseline", choices=["mis", "stage_mis", "model_identity", "layer_depth",
                                            "constant"],
                     help="a built-in baseline instead of a checkpoint")
    sub.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                     help="where simulated datasets are cached")
    sub.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding cache")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace the predictions of an entry that already exists")
    sco = board_command("score", _leaderboard_score, "measure every entry (maintainers)")
    sco.add_argument("--ids", nargs="*", help="only these entries")
    sco.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                     help="where simulated datasets are cached")
    sco.add_argument("--imi-data", help="the prepared real IMI dataset, for the imi track")
    sco.add_argument("--n-boot", type=POSITIVE_INT, default=1000, help="bootstrap resamples")
    board_command("render", _leaderboard_render, "write README.md and index.html")
    fix = board_command("fix-track", _leaderboard_fix_track,
                        "freeze a track's test units from a prepared dataset (once)")
    fix.add_argument("--track", required=True, help="the track whose test units to freeze")
    fix.add_argument("--data", "--imi-data", dest="imi_data", required=True,
                     help="the prepared dataset whose test split becomes the track's units")

    # `train` hands all its arguments to LightningCLI (see main); listed here for --help.
    commands.add_parser("train", help="train a metric (LightningCLI: `interpscore train --help`)",
                        add_help=False)
    return parser


def _show_progress() -> None:
    """The library's progress lines (logger `interpscore`, level INFO) on stderr."""
    import logging

    class ToStderr(logging.StreamHandler):
        """Writes to whatever sys.stderr is at the time (tests capture it)."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("interpscore")
    if not logger.handlers:
        handler = ToStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run a command; return its exit code (0 ok, 1 problems found, 2 bad input, 130 Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    _show_progress()
    try:
        if argv[:1] == ["train"]:  # LightningCLI parses its own arguments
            from .train.cli import main as train_main

            train_main(argv[1:])
            return 0
        args = build_parser().parse_args(argv)
        return args.run(args)
    except SystemExit as exit_:  # argparse and LightningCLI exit on bad arguments and --help
        return exit_.code if isinstance(exit_.code, int) else BAD_INPUT
    except InputError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: outputs are renamed into place only when complete, so nothing "
              "partial was left (score keeps finished activation shards under OUT/shards/; "
              "a rerun resumes from them)", file=sys.stderr)
        return INTERRUPTED
    except OSError as err:  # a disk that fills or a folder that cannot be read, found mid-run
        if debug or err.filename is None:
            raise
        print(f"error: {err.filename}: {err.strerror}; nothing partial was left (rerun with "
              "--debug for the traceback)", file=sys.stderr)
        return BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
