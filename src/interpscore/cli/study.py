"""The human study: `study build`, `study serve`, and `export-experiment` (IMI per-task image
folders, for a study run elsewhere)."""

from __future__ import annotations

from ..errors import InputError
from ..options import (PORT, POSITIVE_INT, SEED, add_fields, from_namespace,
                       overwrite_help)
from .common import FEATURES_HELP, REDUCTION_HELP, add_command, add_group, readout_arg

DEFAULT_N = 10


def _how_many(args) -> int:
    """-n, which only --select reads: given without it, the study would silently ask about
    every unit of the store (or --units), whatever -n said."""
    if args.n is not None and args.select is None:
        raise InputError(f"-n {args.n}: picks units only with --select (e.g. --select "
                         "uncertain); without --select the study asks about every unit of the "
                         "store, or of --units")
    return DEFAULT_N if args.n is None else args.n


def _choice_arguments(sub) -> None:
    """Which units a study asks about (the same for `study build` and `export-experiment`)."""
    from ..data.selection import RECOMMENDED_RULE, SELECTION_RULES

    sub.add_argument("--stimuli", required=True, help="a stimulus store (score --save-stimuli, "
                     "or `interpscore stimuli`)")
    sub.add_argument("--scores", help="scores.parquet of `interpscore score`, for the rules "
                     "that read scores")
    sub.add_argument("--units", nargs="*", help="units as MODEL/LAYER/CHANNEL (default: all)")
    sub.add_argument("--select", choices=SELECTION_RULES,
                     help="pick -n units: spread over models and predicted scores, at random, "
                     "the most uncertain, or the most extreme scores (see docs/study.md; "
                     f"{RECOMMENDED_RULE} measured best on simulated populations)")
    sub.add_argument("-n", type=POSITIVE_INT, help=f"how many units --select picks (default: "
                     f"{DEFAULT_N}; without --select every unit is asked about)")
    sub.add_argument("--seed", type=SEED, default=0, help="seed of the choice and the tasks")
    sub.add_argument("--features", help=f"only the store's units of these {FEATURES_HELP}")
    sub.add_argument("--layers", default="auto", help="the layer of a --features direction matrix")
    sub.add_argument("--reduction", help=f"of --features, as it was scored: {REDUCTION_HELP}")


def build(args) -> int:
    from ..study import build_study
    from ..study.build import StudySettings

    readout = readout_arg(args.features, args.layers, args.reduction)
    out = build_study(args.stimuli, args.out, units=args.units, scores=args.scores,
                      select=args.select, n=_how_many(args), seed=args.seed,
                      overwrite=args.overwrite, readout=readout,
                      **vars(from_namespace(args, StudySettings)))
    print(f"study -> {out}\nnext: interpscore study serve {out} --results DIR (or put the "
          "folder on any static host)")
    return 0


def serve(args) -> int:
    from ..study import serve_study

    serve_study(args.study, args.results, host=args.host, port=args.port,
                ready=lambda url: print(f"serving {args.study} at {url} (Ctrl-C stops; "
                                        f"sessions -> {args.results})", flush=True))
    return 0


def export(args) -> int:
    from ..stimuli.export import export_experiment

    readout = readout_arg(args.features, args.layers, args.reduction)
    out = export_experiment(args.stimuli, args.out, scores=args.scores, units=args.units,
                            select=args.select, n=_how_many(args), seed=args.seed,
                            overwrite=args.overwrite, readout=readout)
    print(f"experiment -> {out}")
    return 0


def register(commands) -> None:
    from ..study.build import StudySettings

    actions = add_group(commands, "study", "a browser 2-AFC study: build it, serve it")
    b = add_command(actions, "build", build, "a self-contained jsPsych study of chosen units "
                    "(runs offline, from any static host)")
    _choice_arguments(b)
    b.add_argument("--out", required=True, help="study folder")
    b.add_argument("--overwrite", action="store_true", help=overwrite_help("study"))
    add_fields(b, StudySettings)
    s = add_command(actions, "serve", serve, "serve a study and keep each finished session "
                    "of it (one file each, written whole; other studies' sessions are refused)")
    s.add_argument("study", help="a folder of `study build`")
    s.add_argument("--results", required=True,
                   help="folder for the sessions (never served; `prepare --responses` reads it)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (0.0.0.0 to let other machines in)")
    s.add_argument("--port", type=PORT, default=8000,
                   help="port (0: any free one); a busy port is refused before anything is made")

    ex = add_command(commands, "export-experiment", export,
                     "a ready 2-AFC experiment (IMI per-task image folders) for chosen units")
    _choice_arguments(ex)
    ex.add_argument("--out", required=True, help="experiment folder")
    ex.add_argument("--overwrite", action="store_true", help=overwrite_help("experiment"))
