"""What a user gives the scorer, checked with messages written for them, around the modules
that build it (`networks`, `pools`, `selection`):

- `check_model_spec`: an unknown name is answered with the names the user most likely meant
  (`resnet81` -> resnet18, not the alphabetically first names that contain `resnet`);
- `load_model`: pretrained weights are looked for in the local caches first, so a machine
  without network fails in a second, saying what is true of it (HF_HUB_OFFLINE set, or the hub
  out of reach), instead of after the hub's retries (~55 s); a local weight file
  (`NAME@/path`) is read by `weights` (a state dict or a Lightning .ckpt, any classifier size);
- `check_pool`: a folder of files that are not images is said to hold no images.

The simulator calls those modules directly; their code (messages included) is part of every
release's key (SIMULATOR_MODULES), so the wording for users lives here, where mending it does
not re-key the releases.
"""

from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError
from .model_spec import OPEN_CLIP, PRETRAINED, RANDOM, parse_model_spec

PROBE_TIMEOUT_S = 5  # one look at the hub before a download, instead of its retries


def likely_meant(name: str, names, n: int = 3) -> list[str]:
    """The names a user most likely meant by the unknown `name`: the closest (difflib) among
    the names of its stem (the part before its first digit: `resnet` of `resnet81`), else
    among all names."""
    def stem(text: str) -> str:
        return re.match(r"\D*", text).group()

    names = list(names)
    same_stem = [m for m in names if stem(m) == stem(name)]
    return (difflib.get_close_matches(name, same_stem, n, cutoff=0.5)
            or difflib.get_close_matches(name, names, n, cutoff=0.6))


def check_model_spec(spec: str, option: str = "--model") -> None:
    """`networks.check_model_spec` (the rule), with the names a user likely meant."""
    from .networks import LITE_PACKAGES, check_model_spec as check

    try:
        check(spec, option)
    except InputError as err:
        if "unknown model" not in str(err):  # networks' wording; else a weight file is missing
            raise
        import timm

        name = parse_model_spec(spec, option).name
        meant = [spec.replace(name, m, 1)
                 for m in likely_meant(name, [*LITE_PACKAGES, *timm.list_models()])]
        like = (f"did you mean {' or '.join(meant)}?" if meant
                else "no timm model has a similar name")
        raise InputError(f"{option} {spec}: unknown model; {like} (timm.list_models() lists "
                         f"the names; offline: {', '.join(LITE_PACKAGES)}, NAME@random, or "
                         "open_clip:NAME:TAG)") from None


def _from_hub(spec: str) -> bool:
    """Whether the spec's weights come from a hub (not untrained, not a local file)."""
    from .networks import LITE_PACKAGES

    parsed = parse_model_spec(spec)
    if parsed.library == OPEN_CLIP:
        return parsed.weights != RANDOM and not Path(parsed.weights).is_file()
    return parsed.weights == PRETRAINED and parsed.name not in LITE_PACKAGES


@contextmanager
def _hub_cache_only():
    """The Hugging Face hub's files from its local cache only, as HF_HUB_OFFLINE does."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _not_cached(err: BaseException) -> bool:
    """Whether loading failed only because the hub's files are not in the local cache."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    while err is not None:
        if isinstance(err, LocalEntryNotFoundError):
            return True
        err = err.__cause__ or err.__context__
    return False


def hub_unreachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached (one request, through the environment's proxies), or None
    when it answers at all."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as err:
        return str(getattr(err, "reason", err))
    return None


def load_model(spec: str, image_size: int | None = None):
    """`networks.load_model` for a user's spec: the name checked (with the names meant), and
    hub weights from the local cache first; only when they are not cached, and the environment
    allows it, is the hub asked (once, quickly) and then downloaded from."""
    from huggingface_hub import constants

    from . import networks

    check_model_spec(spec)
    parsed = parse_model_spec(spec)
    if parsed.library != OPEN_CLIP and parsed.weights not in (PRETRAINED, RANDOM):
        return _with_weight_file(spec, parsed, image_size)
    if not _from_hub(spec):
        return networks.load_model(spec, image_size=image_size)
    offline = constants.HF_HUB_OFFLINE  # read from HF_HUB_OFFLINE when the hub was imported
    try:
        with _hub_cache_only():
            return networks.load_model(spec, image_size=image_size)
    except InputError as err:
        if not _not_cached(err):
            raise
    name = parse_model_spec(spec).name
    other = (f"{name}@random (untrained), or a local weight file: {name}@/path/to/weights"
             if parse_model_spec(spec).library != OPEN_CLIP
             else f"open_clip:{name}:random (untrained), or a local file as the tag")
    missing = (f"{spec}: its pretrained weights are not in the local cache "
               f"({constants.HF_HUB_CACHE})")
    if offline:
        raise InputError(f"{missing} and HF_HUB_OFFLINE is set, so they are not downloaded: "
                         "unset it on a machine with network access to download them once, or "
                         f"use {other}")
    problem = hub_unreachable(constants.ENDPOINT)
    if problem:
        raise InputError(f"{missing} and {constants.ENDPOINT} cannot be reached ({problem}): "
                         f"download them once with network access, or use {other}")
    return networks.load_model(spec, image_size=image_size)  # downloads them, once


def _with_weight_file(spec: str, parsed, image_size: int | None):
    """`NAME@/path`: the architecture untrained, then the file by `weights.load_weight_file`
    (a state dict or a Lightning checkpoint, a classifier of any size)."""
    from dataclasses import replace

    from . import networks
    from .weights import load_weight_file

    loaded = networks.load_model(f"{parsed.name}@{RANDOM}", image_size=image_size)
    load_weight_file(loaded.module, Path(parsed.weights))
    return replace(loaded, label=networks.model_label(spec))


def _readable(pool, index: int) -> bool:
    try:
        pool.pil(index)
    except InputError:
        return False
    return True


def check_pool(pool, n_refs: int, n_batches: int, difficulties) -> None:
    """`selection.check_request` for the pool, and for a folder pool what the folder holds: a
    folder with no readable image (files named like images that are not, or other files) is
    said to hold no images; one too small counts the other files in it."""
    from ..data.layouts import IMAGE_SUFFIXES
    from .pools import FolderPool
    from .selection import check_request

    if not isinstance(pool, FolderPool):
        return check_request(n_refs, n_batches, difficulties, len(pool))
    accepted = ", ".join(IMAGE_SUFFIXES)
    # Stops at the first readable image: one file is read for a folder of images.
    if not any(_readable(pool, i) for i in range(len(pool))):
        raise InputError(f"--images {pool.folder}: holds no images: none of its {len(pool)} "
                         f"file(s) named like one is a readable image (accepted: {accepted}); "
                         "give a folder of images")
    try:
        check_request(n_refs, n_batches, difficulties, len(pool))
    except InputError as err:
        others = sum(1 for p in pool.folder.rglob("*") if p.is_file()) - len(pool)
        if not others:
            raise
        raise InputError(f"{err} ({pool.folder} holds {len(pool)} image file(s) and {others} "
                         f"other file(s); images are {accepted})") from None
