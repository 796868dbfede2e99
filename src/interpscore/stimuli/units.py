"""Which units are studied: a unit is (layer, channel) of a network; IMI samples them by drawing a
layer uniformly, then a channel in it. `choose_units` is the one door from a model and a request
(`N`, `all`, or explicit `layer:channel`s) to units."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .networks import LoadedModel, channel_maps, check_layers, layers_of_interest, module_depths


@dataclass(frozen=True, order=True)
class Unit:
    layer: str
    channel: int



def layer_channels(model: LoadedModel, layers: list[str], image_size: int) -> dict[str, int]:
    """Number of channels (units) of each layer, from one forward pass of a dummy image."""
    import torch

    check_layers(model.module, layers)
    modules = dict(model.module.named_modules())
    sizes, hooks = {}, []
    for layer in layers:
        def hook(module, _inputs, output, layer=layer):
            sizes[layer] = int(channel_maps(module, output).shape[1])
        hooks.append(modules[layer].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.module(torch.zeros(1, 3, image_size, image_size, device=model.device))
    finally:
        for handle in hooks:
            handle.remove()
    return {layer: sizes[layer] for layer in layers}


def sample_units(channels: dict[str, int], n_units: int | None, seed: int) -> list[Unit]:
    """IMI sampling: a layer uniformly, then a channel uniformly in it; no duplicates.
    `n_units=None` takes every channel of every layer."""
    if n_units is None:
        return [Unit(layer, c) for layer, n in channels.items() for c in range(n)]
    total = sum(channels.values())
    if n_units > total:
        raise InputError(f"--units {n_units}: the layers hold only {total} units")
    rng = np.random.default_rng(seed)
    layers = list(channels)
    chosen: dict[Unit, None] = {}
    while len(chosen) < n_units:
        layer = layers[rng.integers(len(layers))]
        chosen.setdefault(Unit(layer, int(rng.integers(channels[layer]))))
    return list(chosen)


def unit_seed(seed: int, unit: Unit) -> int:
    """A per-unit seed: a unit's exemplars do not depend on which other units are scored."""
    return zlib.crc32(f"{seed}:{unit.layer}:{unit.channel}".encode())



def parse_units(spec, channels: dict[str, int], seed: int) -> list[Unit]:
    """`all`, a number N (IMI sampling), or explicit units (`layer:channel` strings or Units)."""
    spec = check_units_spec(spec)
    if spec == "all":
        return sample_units(channels, None, seed)
    if isinstance(spec, int):
        return sample_units(channels, spec, seed)
    if isinstance(spec, PerLayer):
        return sample_per_layer(channels, spec.n, seed)
    for unit in spec:
        if unit.layer not in channels or not 0 <= unit.channel < channels[unit.layer]:
            raise InputError(f"--units {unit.layer}:{unit.channel}: not among the layers scored "
                             f"({', '.join(f'{k} ({v})' for k, v in channels.items())})")
    return spec


@dataclass(frozen=True)
class PerLayer:
    """A units request of N channels of every layer (all of a narrower layer)."""

    n: int


def sample_per_layer(channels: dict[str, int], n: int, seed: int) -> list[Unit]:
    """N channels of each layer, seeded per layer: a layer's sample does not depend on which
    other layers are scanned."""
    units = []
    for layer, width in channels.items():
        rng = np.random.default_rng(zlib.crc32(f"{seed}:{layer}".encode()))
        units += [Unit(layer, int(c)) for c in sorted(rng.choice(width, min(n, width), replace=False))]
    return units


def check_units_spec(spec) -> int | str | PerLayer | list[Unit]:
    """A units request in its one form, checked before any model is built: 'all', N >= 1,
    N/layer, or a list of Units (from `LAYER:CHANNEL` strings)."""
    if spec in (None, "all"):
        return "all"
    if isinstance(spec, PerLayer):
        return spec
    if isinstance(spec, str) and spec.endswith("/layer"):
        n = spec.removesuffix("/layer")
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"--units {spec}: write N/layer with N >= 1, e.g. 20/layer")
        return PerLayer(int(n))
    if isinstance(spec, str) and spec.lstrip("-").isdigit():
        spec = int(spec)
    if isinstance(spec, (int, np.integer)):
        if spec < 1:
            raise InputError(f"--units {spec}: must be at least 1, 'all', or LAYER:CHANNEL,...")
        return int(spec)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [item if isinstance(item, Unit) else _parse_unit(str(item).strip()) for item in items]


def _parse_unit(text: str) -> Unit:
    layer, _, channel = text.rpartition(":")
    if not layer or not channel.isdigit():
        raise InputError(f"--units {text}: write a number N, 'all', or units as LAYER:CHANNEL "
                         "(e.g. layer1.0.conv1:3)")
    return Unit(layer, int(channel))


def choose_units(model: LoadedModel, layers="auto", units=20, image_size: int | None = None,
                 seed: int = 0) -> list[Unit]:
    """The units of `model` a request names: `layers` is `auto` (the layers of interest) or a
    list of layer names; `units` is N (IMI sampling), `all`, or explicit units."""
    names = (layers_of_interest(model.module) if layers in (None, "auto")
             else [layers] if isinstance(layers, str) else list(layers))
    check_layers(model.module, names)
    return parse_units(units, layer_channels(model, names, image_size or model.input_size), seed)


def unit_depths(model: LoadedModel, units: list[Unit]) -> dict[Unit, float]:
    depths = module_depths(model.module)
    return {u: depths[u.layer] for u in units}
