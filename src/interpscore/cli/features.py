"""Features beyond channels: `sae fit`."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..options import MODEL_HELP, POSITIVE_INT, add_fields, from_namespace
from ..resources import DEFAULT_CACHE
from .common import add_command, add_group


def check_output_file(out: str, overwrite: bool, option: str = "--out") -> None:
    """Before any work: OUT is a new file in a writable folder, or replaced only with
    --overwrite."""
    from ..atomic import check_output_folder

    path = Path(out)
    if path.is_dir():
        raise InputError(f"{option} {out}: is a folder; name a file, e.g. {out}/layer.sae.pt")
    if path.exists() and not overwrite:
        raise InputError(f"{option} {out}: already exists; pass --overwrite to replace it, or "
                         "name another file")
    check_output_folder(path.parent, overwrite=True, option=option)


def sae_fit(args) -> int:
    from dataclasses import asdict

    from ..stimuli.options import SAEFitOptions
    from ..stimuli.pools import open_pool
    from ..stimuli.sae import (collect_vectors, fit_sae, overcomplete_sae,
                               reconstruction_stats, sae_record, write_sae)
    from ..stimuli.user_input import load_model

    o = from_namespace(args, SAEFitOptions)
    if o.top_k > args.latents:
        raise InputError(f"--top-k {o.top_k}: at most --latents ({args.latents})")
    check_output_file(args.out, args.overwrite)
    overcomplete_sae()  # installed and importable, before the activation pass
    model = load_model(args.model, image_size=o.image_size)
    if args.layer not in dict(model.module.named_modules()):
        raise InputError(f"--layer {args.layer}: not a layer of {args.model}; see "
                         f"`interpscore layers --model {args.model}`")
    pool = open_pool(o.images, size=o.image_size, n_images=o.pool_size, seed=o.seed,
                     cache_dir=Path(args.cache_dir) / "pools")
    vectors = collect_vectors(model, args.layer, pool, o.positions_per_image, 64, o.seed)
    sae = fit_sae(vectors, args.latents, o.top_k, o.epochs, o.batch_size, o.lr, o.seed)
    r2, dead = reconstruction_stats(sae, vectors)
    training = dict(asdict(o), pool_images=len(pool), vectors=int(len(vectors)))
    write_sae(args.out, sae_record(sae, args.model, args.layer, o.top_k, o.reduction, r2,
                                   dead, training))
    print(f"SAE of {args.model} {args.layer}: {vectors.shape[1]} channels -> {args.latents} "
          f"latents (top {o.top_k}); reconstruction R^2 {r2:.3f}, dead latents "
          f"{100 * dead:.1f}% -> {args.out}")
    return 0


def register(commands) -> None:
    from ..stimuli.options import SAEFitOptions

    actions = add_group(commands, "sae", "sparse autoencoders of a layer (features to score)")
    fit = add_command(actions, "fit", sae_fit, "fit a TopK SAE (overcomplete) on a layer's "
                      "per-position activations over an image pool")
    fit.add_argument("--model", required=True, help=MODEL_HELP)
    fit.add_argument("--layer", required=True, help="the layer (`interpscore layers`)")
    fit.add_argument("--latents", required=True, type=POSITIVE_INT, help="SAE latents")
    add_fields(fit, SAEFitOptions)
    fit.add_argument("--cache-dir", default=DEFAULT_CACHE, help="pool cache")
    fit.add_argument("--out", required=True, help="the SAE file to write (e.g. layer.sae.pt)")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
