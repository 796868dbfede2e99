"""Readouts: how a layer's output becomes the activations of its units (features). A unit is
(model, layer, readout, index):

- `channel`: the layer's channels (IMI's units);
- `direction`: a matrix [C, k] (`.pt` or `.npy`), one column per feature: the projection of the
  channel vector at each position (token) on the column;
- `sae`: a sparse autoencoder's latents, from a file of `interpscore sae fit` or, in Python, any
  object with `encode` ((pre_codes, codes) as overcomplete returns, or codes as SAELens);
- `activations`: a precomputed matrix [n_images, n_units] (see `stimuli.matrix`).

Per-position feature activations are reduced over positions by a declared reduction (`mean` as
IMI, `max`, or `cls`: the first token of a ViT). A readout's identity (kind, sha256 of its
file, reduction) is recorded with every score so that scores of different tools line up.
Everything is checked before any work: bad input raises InputError naming the file or option.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

REDUCTIONS = ("mean", "max", "cls")
KINDS = ("channel", "direction", "sae", "activations")
SAE_FORMAT = "interpscore-sae"  # the `format` entry of a file `interpscore sae fit` writes


def unit_layer(layer: str, identity: dict | None = None) -> str:
    """The layer part of a unit's id and of its stimulus-store folder. Channels read with IMI's
    mean keep the layer's name, so the store stays IMI's `<model>/<layer>/channel_<c>/...`; any
    other readout appends its identity, `<layer>+<kind>[-<sha256[:8]>][-<reduction>]`, e.g.
    `layer2.0+sae-1a2b3c4d/channel_7`: feature 7 of that SAE file is never mistaken for channel
    7, and prepare and training read the folder back like a channel's."""
    identity = identity or {}
    kind, reduction = identity.get("readout"), identity.get("reduction")
    kind = kind if isinstance(kind, str) else "channel"  # a table's missing value is NaN
    if kind == "channel" and reduction in (None, "mean"):
        return layer
    sha = identity.get("readout_sha256")
    sha = sha if isinstance(sha, str) else None  # a table's missing value is NaN
    tag = "-".join([kind] + ([sha[:8]] if sha else []) + (
        [reduction] if isinstance(reduction, str) and reduction != "mean" else []))
    return f"{layer}+{tag}"


def for_store(items: list, identity: dict | None) -> list:
    """Exemplars or visualisations (anything with a `.unit`) renamed by `unit_layer`, as the
    stimulus store and the study name them."""
    from dataclasses import replace

    from .units import Unit

    return [replace(item, unit=Unit(unit_layer(item.unit.layer, identity), item.unit.channel))
            for item in items]


def score_unit_ids(scores) -> list[str]:
    """The store's unit id of each row of a scores table (tables without readout columns are
    of channels)."""
    from ..data.layouts import unit_id

    columns = [c for c in ("readout", "readout_sha256", "reduction") if c in scores]
    return [unit_id(row["model"], unit_layer(row["layer"], {c: row[c] for c in columns}),
                    row["channel"]) for _, row in scores.iterrows()]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_reduction(reduction: str, option: str = "--reduction") -> str:
    if reduction not in REDUCTIONS:
        raise InputError(f"{option} {reduction}: unknown reduction; give one of "
                         f"{', '.join(REDUCTIONS)}")
    return reduction


def codes_of(encoded):
    """An encoder's codes: overcomplete returns (pre_codes, codes), SAELens the codes."""
    return encoded[1] if isinstance(encoded, (tuple, list)) else encoded


@dataclass
class Readout:
    kind: str
    reduction: str = "mean"
    source: str | None = None  # the file (or a description of an in-memory object)
    sha256: str | None = None
    layer: str | None = None  # the one layer it reads (None: any layer, for channels)
    width: int | None = None  # C, the channels it expects
    n_features: int | None = None
    model: str | None = None  # the model spec an SAE was fitted on
    encoder: object = field(default=None, repr=False)  # (N, C) -> codes (N, K)
    weights: object = field(default=None, repr=False)  # direction matrix (C, k), torch

    def identity(self) -> dict:
        return dict(readout=self.kind, readout_sha256=self.sha256, reduction=self.reduction,
                    readout_file=Path(self.source).name if self.source else None)

    def features(self, maps, index):
        """Per-position activations (B, U, S) of features `index` from channel maps (B, C, S)."""
        import torch

        if self.kind == "channel":
            return maps[:, index].float()
        if self.kind == "direction":
            weights = self.weights.to(maps.device)[:, index].float()
            return torch.einsum("bcs,cu->bus", maps.float(), weights)
        b, c, s = maps.shape
        flat = maps.transpose(1, 2).reshape(b * s, c).float()
        codes = codes_of(self.encoder.encode(flat))
        return codes[:, index].float().reshape(b, s, -1).transpose(1, 2)

    def reduce(self, features):
        """(B, U, S) -> (B, U) by the declared reduction."""
        if self.reduction == "mean":
            return features.mean(2)
        if self.reduction == "max":
            return features.amax(2)
        return features[:, :, 0]  # cls: the class token comes first in timm and open_clip

    def activations(self, maps, index):
        return self.reduce(self.features(maps, index))


def channel_readout(reduction: str = "mean") -> Readout:
    return Readout("channel", check_reduction(reduction))


def direction_readout(matrix, layer: str, reduction: str = "mean", source: str | None = None,
                      option: str = "--features") -> Readout:
    """A direction matrix [C, k] (a tensor, an array, or a `.pt` / `.npy` file)."""
    import numpy as np
    import torch

    check_reduction(reduction)
    name, sha = source, None
    if isinstance(matrix, (str, Path)):
        name, sha = str(matrix), file_sha256(matrix)
        matrix = _read_tensor(Path(matrix), option)
    weights = torch.as_tensor(np.asarray(matrix) if not torch.is_tensor(matrix) else matrix)
    where = f"{option} {name}" if name else option
    if weights.dim() != 2 or 0 in weights.shape:
        raise InputError(f"{where}: a direction matrix must be 2-D [channels, features], got "
                         f"shape {tuple(weights.shape)}")
    if not torch.isfinite(weights).all():
        raise InputError(f"{where}: holds NaN or infinite values; fix the matrix")
    if sha is None:  # in memory: the hash of its values
        sha = hashlib.sha256(weights.double().contiguous().numpy().tobytes()).hexdigest()
    return Readout("direction", reduction, name, sha, layer, int(weights.shape[0]),
                   int(weights.shape[1]), weights=weights.double())


def _read_tensor(path: Path, option: str):
    import numpy as np
    import torch

    if not path.is_file():
        raise InputError(f"{option} {path}: no such file")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(f"{option} {path}: not a readable .npy/.pt tensor ({err})") from err
    if isinstance(data, dict) and data.get("format") == SAE_FORMAT:
        return data
    if not torch.is_tensor(data):
        raise InputError(f"{option} {path}: holds a {type(data).__name__}, not a tensor "
                         "[channels, features] or an SAE file of `interpscore sae fit`")
    return data


def encoder_readout(encoder, layer: str, reduction: str = "mean", width: int | None = None,
                    source: str | None = None) -> Readout:
    """Any object with `encode(x [N, C])` (overcomplete's SAEs, SAELens's, your own)."""
    if not callable(getattr(encoder, "encode", None)):
        raise InputError(f"features {type(encoder).__name__}: needs an `encode` method "
                         "(N, C) -> codes or (pre_codes, codes)")
    sha = None
    state = getattr(encoder, "state_dict", None)
    if callable(state):  # a module: the hash of its parameters
        digest = hashlib.sha256()
        for key, value in sorted(state().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        sha = digest.hexdigest()
    return Readout("sae", check_reduction(reduction), source or type(encoder).__name__, sha,
                   layer, width, encoder=encoder)


def load_sae(path: str | Path, reduction: str | None = None, option: str = "--features"
             ) -> Readout:
    """An SAE file written by `interpscore sae fit`."""
    from .sae import build_sae

    data = _read_tensor(Path(path), option)
    if not isinstance(data, dict):
        raise InputError(f"{option} {path}: not an SAE file of `interpscore sae fit`")
    sae = build_sae(data, f"{option} {path}")
    readout = encoder_readout(sae, data["layer"], reduction or data["reduction"],
                              data["channels"], str(path))
    readout.sha256, readout.n_features, readout.model = (file_sha256(path), data["latents"],
                                                         data["model"])
    return readout


def open_features(features, layer: str | None = None, reduction: str | None = None,
                  option: str = "--features") -> Readout:
    """The readout a `--features` value names: an SAE file (its layer recorded in it), a
    direction tensor or array (with `layer`), or an object with `encode` (with `layer`)."""
    if reduction is not None:
        check_reduction(reduction)
    if isinstance(features, Readout):
        return features
    if isinstance(features, (str, Path)):
        path = Path(features)
        data = _read_tensor(path, option)
        if isinstance(data, dict):
            readout = load_sae(path, reduction, option)
            if layer not in (None, readout.layer):
                raise InputError(f"--layers {layer}: {path} is an SAE of layer {readout.layer}; "
                                 "leave --layers out or give that layer")
            return readout
    if layer is None:
        raise InputError(f"{option}: a direction matrix or encoder needs its layer: give "
                         "--layers LAYER (one layer)")
    if isinstance(features, (str, Path)):
        return direction_readout(features, layer, reduction or "mean", option=option)
    if hasattr(features, "encode"):
        return encoder_readout(features, layer, reduction or "mean")
    return direction_readout(features, layer, reduction or "mean", option=option)


def layer_names(text) -> str | list[str]:
    """`--layers`: "auto", or comma-separated `named_modules()` names (a list is kept)."""
    if text in (None, "auto") or isinstance(text, list):
        return text or "auto"
    return [name.strip() for name in str(text).split(",")]


def readout_from_options(features, layers="auto", reduction: str | None = None):
    """The readout that `--features`, `--layers` and `--reduction` name, checked before any
    work: None for channels as IMI reads them (the spatial mean), channels under another
    reduction, or the features of an SAE file / a direction matrix of one layer."""
    if reduction is not None:
        check_reduction(reduction)
    if features is None:
        return None if reduction in (None, "mean") else channel_readout(reduction)
    names = layer_names(layers)
    if names != "auto" and len(names) != 1:
        raise InputError(f"--layers {','.join(names)}: --features reads one layer; give one")
    return open_features(features, None if names == "auto" else names[0], reduction)


def check_readout(readout: Readout, model, spec: str, image_size: int, layers=(),
                  option: str = "--features") -> None:
    """Before the activation pass: the readout fits this model's layers (its model spec, its
    channels, tokens for `cls`), from one forward pass of a dummy image. `layers` are those a
    channel readout reads (a feature readout reads its own)."""
    import torch

    from .model_spec import parse_model_spec
    from .networks import channel_maps, check_layers

    where = f"{option} {readout.source}" if readout.source else option
    if readout.model is not None and (parse_model_spec(readout.model).unprefixed
                                      != parse_model_spec(spec).unprefixed):
        raise InputError(f"{where}: an SAE of model {readout.model}, not {spec}; fit one for "
                         f"this model (`interpscore sae fit --model {spec}`)")
    layers = [readout.layer] if readout.layer is not None else list(layers)
    check_layers(model.module, layers)
    modules, shapes, hooks = dict(model.module.named_modules()), {}, []
    for layer in layers:
        def hook(module, _inputs, out, layer=layer):
            dims = (out[0] if isinstance(out, (tuple, list)) else out).dim()
            shapes[layer] = (int(channel_maps(module, out).shape[1]), dims)
        hooks.append(modules[layer].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.module(torch.zeros(1, 3, image_size, image_size, device=model.device))
    finally:
        for handle in hooks:
            handle.remove()
    flat = [layer for layer, (_, dims) in shapes.items() if dims != 3]
    if readout.reduction == "cls" and flat:
        raise InputError(f"--reduction cls: layer {flat[0]} has no tokens (its output has "
                         f"{shapes[flat[0]][1]} dimensions); use mean or max")
    if readout.layer is None:
        return
    channels = shapes[readout.layer][0]
    if readout.width is not None and readout.width != channels:
        raise InputError(f"{where}: reads {readout.width} channels, but layer {readout.layer} "
                         f"of {spec} has {channels}; use a matrix [{channels}, k] or the "
                         "layer it was made for")
    readout.width = channels
    if readout.encoder is not None and hasattr(readout.encoder, "to"):
        readout.encoder = readout.encoder.to(model.device)  # where the layer's output is
    if readout.n_features is None:  # an encoder: its width from one code
        with torch.no_grad():
            codes = codes_of(readout.encoder.encode(torch.zeros(1, channels,
                                                                device=model.device)))
        readout.n_features = int(codes.shape[-1])
