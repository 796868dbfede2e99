"""Vision models whose units are studied: the IMI models by label, any timm model, open_clip.

Layers are addressed by `named_modules()` names, never by integer index.
"""

from __future__ import annotations

import math
import re

# IMI model labels (DESIGN.md section 1) -> (library, architecture) for layer names and depth.
IMI_ARCHITECTURES = {
    "googlenet": ("torchvision", "googlenet"),
    "resnet50": ("torchvision", "resnet50"),
    "resnet50-l2": ("torchvision", "resnet50"),
    "resnet50-linf": ("torchvision", "resnet50"),
    "clip-resnet50": ("open_clip", "RN50"),
    "wide_resnet50": ("torchvision", "wide_resnet50_2"),
    "densenet_201": ("torchvision", "densenet201"),
    "convnext_b": ("timm", "convnext_base"),
    "clip-vit_b32": ("open_clip", "ViT-B-32"),
    "in1k-vit_b32": ("timm", "vit_base_patch32_224"),
}
DIFFICULTY_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<difficulty>hard\d+)$")


def split_difficulty(model_label: str) -> tuple[str, str]:
    """`resnet50_hard95` -> (`resnet50`, `hard95`); no suffix means the default `easy` condition."""
    match = DIFFICULTY_SUFFIX.match(model_label)
    return (match["base"], match["difficulty"]) if match else (model_label, "easy")


def module_depths(model) -> dict[str, float]:
    """Relative depth 0..1 of every named module, a container placed at its last descendant."""
    names = [name for name, _ in model.named_modules() if name]
    position = {}
    for index, name in enumerate(names):
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            position[".".join(parts[:end])] = index
    last = max(len(names) - 1, 1)
    return {name: index / last for name, index in position.items()}


def _architecture_on_meta(library: str, architecture: str):
    """Build an architecture without weights or memory (meta device): only its structure."""
    import torch

    with torch.device("meta"):
        if library == "torchvision":
            import torchvision

            kwargs = {"aux_logits": False, "init_weights": False} if architecture == "googlenet" else {}
            return torchvision.models.get_model(architecture, weights=None, **kwargs)
        if library == "timm":
            import timm

            return timm.create_model(architecture, pretrained=False)
        import open_clip

        return open_clip.create_model(architecture, pretrained=None).visual


def imi_layer_depths(model_label: str, layers) -> dict[str, float]:
    """Depth of each layer of an IMI model (NaN where the model or layer is unknown)."""
    base, _ = split_difficulty(model_label)
    if base not in IMI_ARCHITECTURES:
        return {layer: math.nan for layer in layers}
    try:
        depths = module_depths(_architecture_on_meta(*IMI_ARCHITECTURES[base]))
    except Exception:  # an architecture that cannot be built here leaves depth unknown
        return {layer: math.nan for layer in layers}
    out = {}
    for layer in layers:
        name = re.sub(r"^visual[._]", "", layer)  # CLIP units are stored as visual_<layer>
        out[layer] = depths.get(name, math.nan)
    return out
