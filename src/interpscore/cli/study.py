"""The human study: `study build`, `study serve`, and `export-experiment` (IMI per-task image
folders, for a study run elsewhere)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..options import (IMAGES_HELP, PORT, POSITIVE_INT, SEED, add_fields, from_namespace,
                       overwrite_help)
from ..resources import DEFAULT_CACHE
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


# How `score --activations` makes a matrix's exemplars: the options `study build --activations`
# takes with it (its --seed is the study's), so the two make the same ones.
MATRIX_OPTIONS = ("difficulty", "n_refs", "n_batches", "image_size", "pool_size",
                  "max_refs_per_source", "batch_size")


def _choice_arguments(sub, store_required: bool = True) -> None:
    """Which units a study asks about (the same for `study build` and `export-experiment`)."""
    from ..data.selection import RECOMMENDED_RULE, SELECTION_RULES

    sub.add_argument("--stimuli", required=store_required, help="a stimulus store (score "
                     "--save-stimuli, or `interpscore stimuli`)" + ("" if store_required else
                                                                    "; or --activations"))
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

    settings = vars(from_namespace(args, StudySettings))
    request = dict(units=args.units, scores=args.scores, select=args.select, n=_how_many(args),
                   seed=args.seed, overwrite=args.overwrite)
    if args.activations is not None:
        out = _build_from_matrix(args, request, settings)
    else:
        _store_given(args)
        out = build_study(args.stimuli, args.out, **request, **settings,
                          readout=readout_arg(args.features, args.layers, args.reduction))
    print(f"study -> {out}\nnext: interpscore study serve {out} --results DIR (or put the "
          "folder on any static host)")
    return 0


def _store_given(args) -> None:
    """Without --activations: a store, and none of the options that only make a matrix's."""
    if args.stimuli is None:
        raise InputError("--stimuli: required (a stimulus store), unless --activations MATRIX "
                         "--images DIR gives the units")
    from ..stimuli.options import ScoringOptions

    defaults = ScoringOptions()
    for name in MATRIX_OPTIONS + ("images", "model"):
        if args[name] != getattr(defaults, name, None):
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag}: only with --activations (a stimulus store's exemplars "
                             "are made already)")


def _build_from_matrix(args, request: dict, settings: dict) -> Path:
    """A study of a matrix's units, from the stimulus store `score --activations
    --save-stimuli` writes for it (the same exemplars, hence the same units and tasks), made
    beside OUT and removed once the study is built. Everything is checked first."""
    import shutil
    import tempfile

    from ..data.layouts import unit_id
    from ..metric.jobs import MatrixJob
    from ..resources import DEFAULT_BACKBONE_IMAGE_SIZE
    from ..stimuli.export import choose_units
    from ..stimuli.options import ScoringOptions
    from ..stimuli.readouts import unit_layer
    from ..study import build_study
    from ..study.build import check_study

    for flag, given in (("--stimuli", args.stimuli), ("--features", args.features)):
        if given is not None:
            raise InputError(f"{flag}: give either {flag} or --activations")
    if args.reduction is not None:
        raise InputError("--reduction: precomputed --activations are already reduced")
    check_study(args.out, args.overwrite, args.scores, **settings)
    options = ScoringOptions.from_kwargs(
        {name: args[name] for name in MATRIX_OPTIONS} | dict(seed=args.seed))
    options.image_size = options.image_size or DEFAULT_BACKBONE_IMAGE_SIZE  # `score`'s, for MIS
    job = MatrixJob(args.activations, args.images or "default", "all",
                    args.model or "activations", options, Path(args.cache_dir))
    ids = [unit_id(job.label, unit_layer(u.layer, job.identity), u.channel) for u in job.units]
    scores = None
    if args.scores is not None:
        import pandas as pd

        scores = pd.read_parquet(args.scores)
    choose_units(ids, scores, args.units, args.select, args.n, args.seed)  # --units, --select
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp(prefix=f".{out.name}.stimuli.", dir=out.parent))
    try:
        dropped = job.write_store(store)
        for reason in sorted({r.partition(":")[0] for r in dropped.values()}):
            left = [u for u, r in dropped.items() if r.partition(":")[0] == reason]
            detail = dropped[left[0]].partition(": ")[2]
            print(f"{len(left)} unit(s) of the matrix left out: {reason}"
                  + (f" (e.g. {left[0].channel}: {detail})" if detail else ""))
        return build_study(store, out, **request, **settings)
    finally:
        shutil.rmtree(store, ignore_errors=True)


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
    from ..stimuli.options import ScoringOptions
    from ..study.build import StudySettings

    actions = add_group(commands, "study", "a browser 2-AFC study: build it, serve it")
    b = add_command(actions, "build", build, "a self-contained jsPsych study of chosen units "
                    "(runs offline, from any static host)")
    _choice_arguments(b, store_required=False)
    b.add_argument("--activations", help="instead of --stimuli: a matrix [n_images, n_units] "
                   "over --images (as `score --activations` takes it); its units' exemplars are "
                   "made as `score --activations --save-stimuli` makes them, with the options "
                   f"{', '.join('--' + o.replace('_', '-') for o in MATRIX_OPTIONS)}")
    b.add_argument("--images", help=f"with --activations: {IMAGES_HELP} (default: default)")
    b.add_argument("--model", help="with --activations: the label of its units, as `score "
                   "--model` gave it (default: activations)")
    add_fields(b, ScoringOptions, only=MATRIX_OPTIONS)
    b.add_argument("--cache-dir", default=DEFAULT_CACHE, help="pool cache (with --activations)")
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
