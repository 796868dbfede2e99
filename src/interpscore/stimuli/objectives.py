"""What feature visualisation optimises: a unit's channel maps, read by forward hooks that stop
the pass after the deepest layer needed, and lucent's diversity measure (the cosine similarity
of the Gram matrices of a layer's activations across images)."""

from __future__ import annotations

import math

import torch

from .networks import channel_maps

# A layer that applies a clipping activation inside itself (timm's BatchNormAct2d: `.act`, a
# ReLU6) has no gradient where a unit is silent, so an image that starts silent never moves. Such
# a layer is read before its activation, and each direction optimises it clipped only on the side
# it moves towards, MARGIN past the bound: max images min(x, 6 + MARGIN), which has a gradient
# below 0, min images max(x, 0 - MARGIN). The margin keeps positions past the bound under the
# next step's jitter (without it, min images of a ReLU unit hover just above 0), and the clip
# keeps a few far-out positions from standing in for the rest. The images are measured at the
# layer's output itself.
MARGIN = 1.0  # in units of the pre-activation, which a norm layer puts at unit scale


def activation_bounds(module) -> tuple[float, float] | None:
    """(lower, upper) of a layer's built-in clipping activation, None for other layers."""
    act = getattr(module, "act", None)
    if isinstance(act, torch.nn.Hardtanh):
        return float(act.min_val), float(act.max_val)
    if isinstance(act, torch.nn.ReLU):
        return 0.0, math.inf
    return None


def clip_for_side(maps: torch.Tensor, bounds, sign: float) -> torch.Tensor:
    """The maps a direction optimises (see BOUNDED_ACTIVATIONS); `bounds` None: as they are."""
    if bounds is None:
        return maps
    return maps.clamp(max=bounds[1] + MARGIN) if sign > 0 else maps.clamp(min=bounds[0] - MARGIN)


def clip_both(maps: torch.Tensor, bounds) -> torch.Tensor:
    """The layer's output from maps read before its clipping activation."""
    return maps if bounds is None else maps.clamp(bounds[0], bounds[1])


class StopForward(Exception):
    """Raised by the last hook a pass needs: deeper layers are not computed."""


class LayerTaps:
    """Forward hooks on some layers: each keeps its layer's (B, C, S) maps, and the last one a pass
    needs stops it. With `before_activation`, a layer with a built-in clipping activation is read
    at that activation's input (`bounds[layer]` then holds the activation's bounds)."""

    def __init__(self, module, layers, before_activation: bool):
        self.maps: dict[str, torch.Tensor] = {}
        self.needed: set[str] = set()
        self.bounds: dict[str, tuple[float, float] | None] = {}
        self.handles = []
        modules = dict(module.named_modules())
        for layer in layers:
            layer_module = modules[layer]
            bounds = activation_bounds(layer_module) if before_activation else None
            self.bounds[layer] = bounds
            if bounds is None:
                self.handles.append(layer_module.register_forward_hook(
                    lambda m, _inputs, output, layer=layer: self._keep(layer, m, output)))
            else:  # before the activation runs: it works in place
                self.handles.append(layer_module.act.register_forward_pre_hook(
                    lambda _m, inputs, layer=layer, m=layer_module: self._keep(layer, m, inputs[0])))

    def _keep(self, layer, layer_module, output):
        if layer in self.needed and layer not in self.maps:
            # a copy: in-place ops after the hook (a ReLU) cannot change it
            self.maps[layer] = channel_maps(layer_module, output).float().clone()
            if self.needed <= self.maps.keys():
                raise StopForward

    def run(self, module, x, layers) -> dict[str, torch.Tensor]:
        """One pass of `x`, as far as the deepest of `layers`; their maps."""
        self.maps, self.needed = {}, set(layers)
        try:
            module(x)
        except StopForward:
            pass
        missing = self.needed - self.maps.keys()
        if missing:
            raise RuntimeError(f"layers {sorted(missing)} did not run in the forward pass")
        return self.maps

    def close(self):
        for handle in self.handles:
            handle.remove()


def gram_cosines(maps: torch.Tensor) -> torch.Tensor:
    """(m, C, S) channel maps -> (m, m) cosine similarities of the images' Gram matrices
    (lucent's diversity measure). With more channels than positions, <G_i, G_j> is computed
    as ||A_i^T A_j||^2 from S x S products instead of C x C Gram matrices: the same number."""
    _, c, s = maps.shape
    if c <= s:
        grams = torch.nn.functional.normalize((maps @ maps.transpose(1, 2)).flatten(1), dim=1)
        return grams @ grams.T
    inner = torch.einsum("ics,jct->ijst", maps, maps).pow(2).sum((2, 3))
    norm = inner.diagonal().clamp_min(1e-12).sqrt()
    return inner / (norm[:, None] * norm[None, :])


def mean_pairwise(cosines: torch.Tensor) -> torch.Tensor:
    """Per image, the mean cosine similarity to the other images of its group (0 alone)."""
    m = cosines.shape[0]
    if m < 2:
        return cosines.new_zeros(m)
    return (cosines.sum(1) - cosines.diagonal()) / (m - 1)


def diversity(maps: torch.Tensor) -> float:
    """lucent's diversity of a set of images: minus their mean pairwise Gram cosine similarity
    (-1: alike; towards 0 and above: different)."""
    return float(-mean_pairwise(gram_cosines(maps)).mean())
