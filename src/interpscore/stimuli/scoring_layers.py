"""The layers `auto` scores: IMI's layers of interest (`networks.layers_of_interest`) and, for
ViTs, the residual stream after each transformer block (`blocks.N`, `resblocks.N`: the block's
output, where vision SAEs are trained). The simulator samples IMI's list alone, so the simulated
release does not move; scoring, scans, `layers`, `visualize` and `sae fit` read this one."""

from __future__ import annotations

import re

from .networks import _is_vit, layers_of_interest

_BLOCK = re.compile(r"(^|\.)(blocks|resblocks)\.\d+$")


def residual_stream(module) -> list[str]:
    """A ViT's block outputs in order ([] for other networks)."""
    if not _is_vit(module):
        return []
    return [name for name, _ in module.named_modules() if _BLOCK.search(name)]


def scoring_layers(module) -> list[str]:
    """IMI's layers of interest plus the residual stream, in the network's module order."""
    chosen = set(layers_of_interest(module)) | set(residual_stream(module))
    return [name for name, _ in module.named_modules() if name in chosen]


def named_layers(module, layers) -> list[str]:
    """`auto` (None) as `scoring_layers`, one name, or a list of names."""
    if layers in (None, "auto"):
        return scoring_layers(module)
    return [layers] if isinstance(layers, str) else list(layers)
