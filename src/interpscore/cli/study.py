"""The human study: `export-experiment` (IMI per-task image folders)."""

from __future__ import annotations

from ..options import POSITIVE_INT, SEED, overwrite_help
from .common import add_command

SELECT_RULES = ("uncertain", "extreme", "random")


def export(args) -> int:
    from ..stimuli.export import export_experiment

    out = export_experiment(args.stimuli, args.out, scores=args.scores, units=args.units,
                            select=args.select, n=args.n, seed=args.seed,
                            overwrite=args.overwrite)
    print(f"experiment -> {out}")
    return 0


def register(commands) -> None:
    ex = add_command(commands, "export-experiment", export,
                     "a ready 2-AFC experiment (IMI per-task layout) for chosen units")
    ex.add_argument("--stimuli", required=True, help="a stimulus store (score --save-stimuli)")
    ex.add_argument("--out", required=True, help="experiment folder")
    ex.add_argument("--overwrite", action="store_true", help=overwrite_help("experiment"))
    ex.add_argument("--scores", help="scores.parquet, for --select uncertain|extreme")
    ex.add_argument("--units", nargs="*", help="units as MODEL/LAYER/CHANNEL (default: all)")
    ex.add_argument("--select", choices=SELECT_RULES,
                    help="pick -n units: most uncertain, most extreme scores, or at random")
    ex.add_argument("-n", type=POSITIVE_INT, default=10, help="how many units --select picks")
    ex.add_argument("--seed", type=SEED, default=0, help="seed of --select random")
