"""Load a trained metric from its checkpoint without Lightning: the head, its hyperparameters and
the backbone it reads. This is the inference door (`interpscore.load`), kept free of the training
stack."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..resources import DEFAULT_BACKBONE, DEFAULT_BACKBONE_IMAGE_SIZE
from .heads import HEADS, create_head


@dataclass
class LoadedMetric:
    head: "torch.nn.Module"
    hparams: dict
    data_hparams: dict
    path: Path
    seen: dict  # units trained and selected on, and the data's fingerprint (may be empty)
    built: object = field(default=None, repr=False)  # the backbone, where loading built it

    @property
    def seen_units(self) -> set[str]:
        units = self.seen.get("seen_units", {})
        return set(units.get("train", [])) | set(units.get("val", []))

    @property
    def backbone(self) -> str:
        return self.hparams["backbone"]

    @property
    def image_size(self):
        return self.hparams.get("image_size", self.data_hparams.get("image_size"))


SEEN_KEY = "interpscore_seen_units"  # where `python train.py` records the units it saw
BUILTIN_MIS = "mis"  # `--checkpoint mis`: the training-free metric, nothing to train first


def builtin_mis(backbone: str = DEFAULT_BACKBONE,
                image_size: int = DEFAULT_BACKBONE_IMAGE_SIZE) -> LoadedMetric:
    """MIS on the offline backbone with its default alpha (no data fitted): the metric a fresh
    clone can scan with before any training. Alpha sets the scale of the scores, not their
    order within a task set."""
    from .backbones import create_backbone

    built = create_backbone(backbone, image_size=image_size)  # kept: the scorer reads it
    hparams = dict(head="mis", embedding_dim=built.dim, backbone=backbone, image_size=image_size)
    return LoadedMetric(create_head("mis", built.dim).eval(), hparams, {}, Path(BUILTIN_MIS), {},
                        built)


def load_checkpoint(path: str | Path, option: str = "--checkpoint") -> LoadedMetric:
    """Read a checkpoint written by `python train.py`; clear errors (naming `option`) for
    anything else."""
    import torch

    path = Path(path)
    if str(path) == BUILTIN_MIS and not path.exists():
        return builtin_mis()
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file; give the best.ckpt that "
                         f"`python train.py` printed, or '{BUILTIN_MIS}' for training-free MIS")
    try:
        # Tensors and plain containers only: a checkpoint never runs code when it is read.
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle's own words ("Memo value not found") help nobody
        raise InputError(f"{option} {path}: not a readable checkpoint (a truncated or "
                         "other kind of file); give the best.ckpt that `python train.py` "
                         "printed") from err
    hparams = dict(data.get("hyper_parameters") or {}) if isinstance(data, dict) else {}
    if hparams.get("head") not in HEADS or "state_dict" not in data:
        raise InputError(f"{option} {path}: not an interpscore checkpoint (no head or "
                         "state_dict); give a file written by `python train.py`")
    head = create_head(hparams["head"], hparams["embedding_dim"], **hparams)
    state = {k[len("head."):]: v for k, v in data["state_dict"].items() if k.startswith("head.")}
    head.load_state_dict(state)
    hparams.setdefault("backbone", DEFAULT_BACKBONE)
    seen = data.get(SEEN_KEY)
    if not isinstance(seen, dict) or "seen_units" not in seen:  # the guard cannot be skipped
        raise InputError(f"{option} {path}: it records no units it was trained and selected "
                         "on (written by an older interpscore?), so evaluation could not leave "
                         "them out; retrain it with `python train.py`")
    return LoadedMetric(head.eval(), hparams, dict(data.get("datamodule_hyper_parameters") or {}),
                        path, seen)
