"""Watching training after the fact: `track` scores a series of saved checkpoints."""

from __future__ import annotations

from dataclasses import asdict

from ..options import add_fields, from_namespace, overwrite_help
from ..resources import DEFAULT_CACHE
from .common import FEATURES_HELP, REDUCTION_HELP, add_command, layers_arg, readout_arg

# Options of the scoring path that do not apply to a probe of natural images over training
# (and batch_size, which the monitor declares with its own default).
NOT_TRACKED = ("explanations", "batch_size")


def track(args) -> int:
    from ..monitor.check import summary
    from ..monitor.options import WatchOptions
    from ..monitor.report import FIGURE
    from ..monitor.track import track_checkpoints
    from ..stimuli.options import ScoringOptions

    watch = from_namespace(args, WatchOptions)
    readout = readout_arg(args.features, watch.layers, args.reduction)  # before any work
    options = asdict(from_namespace(args, ScoringOptions, skip=NOT_TRACKED))
    del options["batch_size"]  # the monitor's own (`WatchOptions`), in `watch`
    table = track_checkpoints(args.model, args.checkpoints, args.out,
                              **{**asdict(watch), "layers": layers_arg(watch.layers)},
                              features=readout, overwrite=args.overwrite,
                              cache_dir=args.cache_dir, **options)
    overall = summary(table)
    overall = overall[overall["layer"] == "all"]
    print(overall.drop(columns="layer").to_string(index=False, float_format="%.3f"))
    print(f"{table['checkpoint'].nunique()} checkpoint(s), {len(table)} unit scores -> "
          f"{args.out}/interpretability.parquet (and .csv, summary, {FIGURE})")
    return 0


def register(commands) -> None:
    from ..monitor.options import DEFAULT_POOL, WatchOptions
    from ..stimuli.options import ScoringOptions

    tr = add_command(commands, "track", track, "predicted interpretability of a model's units "
                     "over a series of saved checkpoints (resumable), with a figure")
    tr.add_argument("--model", required=True,
                    help="the timm architecture the checkpoints hold (e.g. resnet18)")
    tr.add_argument("checkpoints", nargs="+", help="state dicts or Lightning .ckpt files, in "
                    "training order")
    add_fields(tr, WatchOptions)
    tr.add_argument("--features", help=f"track {FEATURES_HELP}")
    tr.add_argument("--reduction", help=REDUCTION_HELP)
    add_fields(tr, ScoringOptions, skip=NOT_TRACKED, defaults={"pool_size": DEFAULT_POOL})
    tr.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding and pool cache")
    tr.add_argument("--out", required=True, help="folder for the table and figure (a rerun "
                    "skips the checkpoints already scored there)")
    tr.add_argument("--overwrite", action="store_true", help=overwrite_help("track"))
