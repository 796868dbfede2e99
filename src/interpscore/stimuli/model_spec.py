"""The grammar of a model spec, read in this one place by the studied networks (`load_model`),
the metric's backbones (`create_backbone`), the simulator (`is_pretrained`) and the checks:

- `NAME`: a timm model (or an offline EfficientNet-Lite) with its pretrained weights;
- `NAME@random`: the same network untrained; `NAME@/path/weights`: a local weight file;
- `open_clip:NAME:TAG`: open_clip's visual tower, TAG a pretrained tag, a local file or `random`;
- `timm:NAME` (and `timm:NAME@...`): NAME, written as backbones ask for hub models.
No torch here: configs are checked before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

TIMM, OPEN_CLIP = "timm", "open_clip"
TIMM_PREFIX, OPEN_CLIP_PREFIX = "timm:", "open_clip:"
PRETRAINED, RANDOM = "pretrained", "random"


@dataclass(frozen=True)
class ModelSpec:
    library: str  # TIMM or OPEN_CLIP
    name: str  # the architecture (timm: with its `.tag`, e.g. `vit_base_patch16_224.dino`)
    weights: str  # PRETRAINED (the library's default), RANDOM, a weight file or an open_clip tag
    prefixed: bool = False  # written with its library's prefix (`timm:`, `open_clip:`)

    @property
    def pretrained(self) -> bool:
        """Trained weights of any origin; only an untrained network is not pretrained."""
        return self.weights != RANDOM

    @property
    def unprefixed(self) -> str:
        """The spec as `load_model` takes it (`timm:` dropped, `open_clip:` kept)."""
        if self.library == OPEN_CLIP:
            return f"{OPEN_CLIP_PREFIX}{self.name}:{self.weights}"
        return self.name if self.weights == PRETRAINED else f"{self.name}@{self.weights}"


def parse_model_spec(text: str, option: str = "") -> ModelSpec:
    """The parts of a model spec; only a malformed open_clip spec is refused here (whether a
    timm name or a weight file exists is `networks.check_model_spec`'s question)."""
    if text.startswith(OPEN_CLIP_PREFIX):
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise InputError(f"{option} {text}".strip() + ": open_clip models are written "
                             "open_clip:NAME:TAG")
        return ModelSpec(OPEN_CLIP, parts[1], parts[2], prefixed=True)
    name, _, weights = text.removeprefix(TIMM_PREFIX).partition("@")
    return ModelSpec(TIMM, name, weights or PRETRAINED, prefixed=text.startswith(TIMM_PREFIX))
