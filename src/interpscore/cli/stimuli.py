"""Units and their stimuli: `layers`, `stimuli`, `visualize`."""

from __future__ import annotations

from pathlib import Path

from ..atomic import check_output_folder
from ..options import (IMAGES_HELP, MODEL_HELP, POSITIVE_INT, add_fields, from_namespace,
                       overwrite_help)
from ..protocol import EMBEDDED, IMI
from .common import FEATURES_HELP, REDUCTION_HELP, add_command, layers_arg, readout_arg

# ScoringOptions fields the `stimuli` command shares (it takes several difficulties at once).
STIMULI_OPTIONS = ("n_refs", "n_batches", "image_size", "max_refs_per_source", "batch_size",
                   "seed")


def layers(args) -> int:
    from ..stimuli.networks import module_depths
    from ..stimuli.scoring_layers import scoring_layers
    from ..stimuli.units import layer_channels
    from ..stimuli.user_input import load_model

    model = load_model(args.model, image_size=args.image_size)
    names = scoring_layers(model.module)
    channels = layer_channels(model, names, args.image_size or model.input_size)
    depths = module_depths(model.module)
    print(f"{'layer':48s} {'units':>6s} {'depth':>6s}")
    for layer in names:
        print(f"{layer:48s} {channels[layer]:6d} {depths[layer]:6.3f}")
    return 0


def stimuli(args) -> int:
    from ..atomic import atomic_folder
    from ..stimuli.pools import open_pool
    from ..metric.jobs import without_too_sparse
    from ..stimuli.activations import collect_rankings
    from ..stimuli.selection import check_request, keep_for, select_all
    from ..stimuli.store import write_store
    from ..stimuli.units import check_units_spec, choose_units
    from ..stimuli.user_input import check_pool, load_model

    difficulties = args.difficulties.split(",")
    check_request(args.n_refs, args.n_batches, difficulties, difficulty_option="--difficulties")
    check_units_spec(args.units)
    check_output_folder(args.out, args.overwrite)
    model = load_model(args.model, image_size=args.image_size)
    units = choose_units(model, layers_arg(args.layers), args.units, args.image_size, args.seed)
    pool = open_pool(args.images, size=args.image_size, seed=args.seed)
    check_pool(pool, args.n_refs, args.n_batches, difficulties)
    rankings = collect_rankings(model, pool, units, keep_for(args.n_refs, args.n_batches),
                                batch_size=args.batch_size, seed=args.seed)
    exemplars, dropped = without_too_sparse(rankings, *select_all(
        rankings, pool.sources, units, args.n_refs, args.n_batches, difficulties,
        args.max_refs_per_source, args.seed))
    with atomic_folder(args.out, args.overwrite) as tmp:
        write_store(tmp, model.label, exemplars, pool, progress=True)
    print(f"{len(exemplars)} units -> {args.out}/{model.label}/ (stimulus store layout); "
          f"{len(dropped)} units dropped (constant over the pool, too sparse for a max side, "
          "or non-finite)")
    return 0


def visualize(args) -> int:
    from ..stimuli.pools import open_pool
    from ..stimuli.readouts import check_readout, for_store
    from ..stimuli.scoring_layers import named_layers
    from ..stimuli.units import check_units_spec, choose_units, parse_units
    from ..stimuli.user_input import load_model
    from ..stimuli.visual_store import plot_visualizations, write_visualizations
    from ..stimuli.visualize import (VisualizationOptions, check_options, natural_rankings,
                                     visualize_units)

    options = from_namespace(args, VisualizationOptions)
    check_options(options)
    check_units_spec(args.units)
    readout = readout_arg(args.features, args.layers, args.reduction)
    model = load_model(args.model, image_size=options.size)
    if readout is None:
        units = choose_units(model, named_layers(model.module, layers_arg(args.layers)),
                             args.units, options.size, options.seed)
    else:  # the readout's features of its layer are the units
        check_readout(readout, model, args.model, options.size)
        units = parse_units(args.units, {readout.layer: readout.n_features}, options.seed)
    pool = open_pool(args.images, size=options.size, n_images=args.pool_size, seed=options.seed)
    natural = natural_rankings(model, pool, units, keep=options.n_images, seed=options.seed,
                               progress=True, readout=readout)
    made = visualize_units(model, units, options, natural, readout)
    identity = readout.identity() if readout is not None else None
    stored = for_store(made, identity)  # a feature's folder names its readout
    table = write_visualizations(args.out, model.label, stored, overwrite=args.overwrite)
    figure = plot_visualizations(Path(args.out) / model.label / "visualizations.png", made, pool,
                                 natural, title=f"{model.label}: feature visualisations beside "
                                 "natural exemplars")
    for side in ("max", "min"):
        beats = [v.beats_natural(side) for v in made]
        print(f"{side}: the weakest visualisation beats the pool's most extreme natural "
              f"exemplar for {sum(b is True for b in beats)} of {len(beats)} units")
    print(f"{len(made)} units -> {args.out}/{model.label}/<layer>/channel_<c>/optimized_images/ "
          f"(table {table}, figure {figure})")
    return 0


def register(commands) -> None:
    from ..stimuli.options import ScoringOptions
    from ..stimuli.options import VisualizationOptions

    lay = add_command(commands, "layers", layers, "list a model's layers of interest")
    lay.add_argument("model", help=MODEL_HELP)
    lay.add_argument("--image-size", type=POSITIVE_INT, default=None,
                     help="input pixels (default: the model's)")

    stim = add_command(commands, "stimuli", stimuli, "build IMI stimuli for units of a model")
    stim.add_argument("--model", required=True, help=MODEL_HELP)
    stim.add_argument("--images", default="default", help=IMAGES_HELP)
    stim.add_argument("--out", required=True, help="stimulus store folder")
    stim.add_argument("--overwrite", action="store_true", help=overwrite_help("model's stimulus"))
    stim.add_argument("--layers", default="auto", help="auto or L1,L2,...")
    stim.add_argument("--units", default="20", help="N (IMI sampling), all, or layer:channel,...")
    stim.add_argument("--difficulties", default="easy", help="e.g. easy,hard85,hard95,hard99")
    # no metric here to take a size from: IMI's
    add_fields(stim, ScoringOptions, only=STIMULI_OPTIONS, defaults={"image_size": IMI.image_size})

    vis = add_command(commands, "visualize", visualize, "feature visualisations (IMI's synthetic "
                      "references) for units of a model, into a stimulus store")
    vis.add_argument("--model", required=True, help=MODEL_HELP)
    vis.add_argument("--units", default="8", help="N (IMI sampling), N/layer, or layer:channel,...")
    vis.add_argument("--layers", default="auto", help="auto or L1,L2,...")
    vis.add_argument("--features", help=f"visualise {FEATURES_HELP}")
    vis.add_argument("--reduction", help=REDUCTION_HELP)
    vis.add_argument("--images", default="default", help=f"{IMAGES_HELP}: the natural "
                     "exemplars the visualisations are checked against")
    vis.add_argument("--pool-size", type=POSITIVE_INT, default=EMBEDDED.pool_size,
                     help="images of the default pool")
    vis.add_argument("--out", required=True, help="stimulus store folder (may hold natural stimuli)")
    vis.add_argument("--overwrite", action="store_true",
                     help="replace visualisations of these units that the store already holds")
    add_fields(vis, VisualizationOptions)
