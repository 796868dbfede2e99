"""Lightning: the DataModule (prepared dataset + backbone -> cached task tensors) and the
LightningModule (a head, its likelihood, per-unit Spearman/Pearson/MAE). The module does no I/O."""

from __future__ import annotations


from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanAbsoluteError, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef

from ..errors import InputError
from ..metric.checkpoint import SEEN_KEY, load_checkpoint
from ..metric.heads import create_head, nll, unit_prediction
from ..metric.tasks import ConditionDataset, TaskTensors, dataset_info, load_task_tensors
from ..resources import (DEFAULT_BACKBONE, DEFAULT_BACKBONE_IMAGE_SIZE, DEFAULT_CACHE,
                         DEFAULT_DATA_ROOT)


class InterpScoreModule(L.LightningModule):
    """A proxy metric: `head` on frozen embeddings of dimension `embedding_dim`."""

    def __init__(self, head: str = "twoafc", embedding_dim: int = 0, rank: int | None = None,
                 hidden: int = 64, dropout: float = 0.1, reg: float = 1e-3, lr: float = 0.01,
                 weight_decay: float = 0.0, backbone: str = DEFAULT_BACKBONE,
                 image_size: int | None = DEFAULT_BACKBONE_IMAGE_SIZE, stage_dims: tuple = (),
                 shrink: float | None = None, shrink_learned: float | None = None,
                 init_from: str | None = None):
        """`backbone`, `image_size` and `stage_dims` are linked from the data module, so that a
        checkpoint alone says which embeddings its head reads.

        Args:
            head: the head (mis, stagemis, pooled, pooled_dims, pooled_lowrank, attention, twoafc,
                setreg)
            embedding_dim: linked from the data module's backbone
            rank: low-rank size of the twoafc and pooled_lowrank heads' metric (None: the head's
                default)
            hidden: hidden units of the setreg head
            dropout: dropout of the setreg head, in [0, 1)
            reg: weight of the heads' regularisation
            lr: AdamW learning rate of the heads trained by gradient steps
            weight_decay: AdamW weight decay
            backbone: linked from the data module
            image_size: linked from the data module
            stage_dims: linked from the data module
            shrink: strength of the shrinkage toward MIS (None: chosen on the training units)
            shrink_learned: strength of the pooled_lowrank head's prior on its learned space
                (None: chosen on the training units)
            init_from: a checkpoint to update with new answers: the head starts from it and
                its prior pulls toward it (not toward MIS), with a strength chosen on the new
                training units, so a handful of units moves it little and many move it much
        """
        super().__init__()
        if embedding_dim <= 0:
            raise InputError("embedding_dim must be positive (it is linked from the data module)")
        for option, value in (("lr", lr), ("hidden", hidden)):
            if value <= 0:
                raise InputError(f"--model.{option} {value}: must be positive")
        for option, value in (("reg", reg), ("weight_decay", weight_decay), ("shrink", shrink),
                              ("shrink_learned", shrink_learned)):
            if value is not None and value < 0:
                raise InputError(f"--model.{option} {value}: must be at least 0")
        if not 0 <= dropout < 1:
            raise InputError(f"--model.dropout {dropout}: must be in [0, 1)")
        self.save_hyperparameters()
        self.head = create_head(head, embedding_dim, **self.hparams)
        start = check_start(init_from, head, backbone, embedding_dim)
        if start is not None:
            try:
                self.head.load_state_dict(start.head.state_dict())
            except RuntimeError as err:  # another rank, another projection size, ...
                raise InputError(f"--model.init_from {init_from}: its head does not fit this "
                                 f"one ({str(err).splitlines()[-1].strip()}); pass the "
                                 "checkpoint's own head options") from None
        metrics = MetricCollection({"spearman": SpearmanCorrCoef(), "pearson": PearsonCorrCoef(),
                                    "mae": MeanAbsoluteError()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # Fitted heads (MIS, stage-weighted MIS, pooled) are fitted once on the training units
        # at the start; the others learn by gradient steps.
        self.fitted = getattr(self.head, "fitted", False)
        self.automatic_optimization = not self.fitted
        self.fit_info: dict = {}

    def forward(self, batch):
        """Predicted accuracy of each condition in the batch."""
        return unit_prediction(self.head(batch), batch)

    def setup(self, stage: str) -> None:
        # Updating a checkpoint: the head holds its state (see __init__), and its prior pulls
        # toward it.
        if stage == "fit" and self.hparams.init_from and hasattr(self.head, "set_anchor"):
            self.head.set_anchor()

    def on_train_start(self):
        if self.fitted:  # on the CPU, where the task tensors live; then back to the device
            data = self.trainer.datamodule
            rank_zero_info(f"{self.hparams.head}: fitted in closed form on the "
                           f"{len(data.split_ids['train'])} training conditions (no optimizer "
                           "and no gradient steps, by design)")
            self.fit_info = self.head.cpu().fit(data.tensors, data.split_ids["train"])
            self.head.to(self.device)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["head_fit"] = self.fit_info  # what the head learned, for a person to read
        data = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if data is not None and data.tensors is not None:  # what evaluation must leave out
            checkpoint[SEEN_KEY] = data.seen_record()

    def training_step(self, batch, _index):
        if self.fitted:
            return None
        loss = nll(self.head(batch), batch, self.head.level)
        self.log("train/nll", loss, batch_size=len(batch["condition"]))
        return loss + self.head.regularization()

    def _evaluate(self, batch, metrics, prefix):
        p_task = self.head(batch)
        target = batch["k"].sum(-1) / batch["n"].sum(-1)
        metrics.update(unit_prediction(p_task, batch), target)
        self.log(f"{prefix}/nll", nll(p_task, batch, "trial"), batch_size=len(target),
                 sync_dist=True)
        self.log_dict(metrics, batch_size=len(target))

    def validation_step(self, batch, _index):
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch, _index):
        self._evaluate(batch, self.test_metrics, "test")

    def configure_optimizers(self):
        if self.fitted:
            return None
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                 weight_decay=self.hparams.weight_decay)


def check_start(init_from, head: str, backbone: str, embedding_dim: int):
    """The checkpoint `--model.init_from` names, checked before any work: it must hold the same
    head reading the same embeddings."""
    if init_from is None:
        return None
    start = load_checkpoint(init_from, option="--model.init_from")
    found = (start.hparams["head"], start.backbone, start.hparams["embedding_dim"])
    if found != (head, backbone, embedding_dim):
        raise InputError(f"--model.init_from {init_from}: it holds a {found[0]} head on "
                         f"{found[1]} ({found[2]} dims), not {head} on {backbone} "
                         f"({embedding_dim} dims); pass --model.head {found[0]} --data.backbone "
                         f"{found[1]}, or start from another checkpoint")
    return start


def seen_units(conditions, split_ids: dict, data_dir, fold) -> dict:
    """The record a checkpoint keeps of its data: unit ids it trained and selected on, and a
    fingerprint of the dataset's unit table and the fold."""
    import hashlib

    table = conditions[["unit_id", "mode", "difficulty", "split", "his"]].to_csv(index=False)
    fingerprint = hashlib.sha1(f"{table}|fold={fold}".encode()).hexdigest()[:16]
    ids = {s: sorted(set(conditions["unit_id"].iloc[split_ids[s]])) for s in ("train", "val")}
    return {"seen_units": ids, "data_fingerprint": fingerprint, "data_dir": str(data_dir),
            "fold": fold}


class IMIDataModule(L.LightningDataModule):
    """Prepared dataset (real or simulated) + backbone -> cached embeddings -> task tensors.

    `data_dir: null` means the embedded default: the simulated IMI release, generated (once, and
    cached under `data/`) with `simulation` overriding fields of `SimulationConfig`.

    Args:
        data_dir: a prepared dataset (`interpscore prepare`); null: the embedded simulated default
        images_dir: the images root (default: as recorded by prepare)
        backbone: the embedding backbone (efficientnet_lite0, efficientnet_lite1, ...)
        image_size: pixels the backbone sees
        cache_dir: where embeddings are cached by image content
        batch_size: conditions per training batch
        fold: leave-one-model-out: the model with this fold index is the test set
        simulation: fields of SimulationConfig for the embedded default
        data_root: where the simulated default is generated and cached
        train_units: train on only this many of the training units (a seeded draw of units,
            all of a unit's conditions together): budget curves, or a small study
        train_units_seed: the seed of that draw
    """

    def __init__(self, data_dir: str | None = None, images_dir: str | None = None,
                 backbone: str = DEFAULT_BACKBONE,
                 image_size: int | None = DEFAULT_BACKBONE_IMAGE_SIZE,
                 cache_dir: str = DEFAULT_CACHE, batch_size: int = 32,
                 fold: int | None = None, simulation: dict | None = None,
                 data_root: str = DEFAULT_DATA_ROOT, train_units: int | None = None,
                 train_units_seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        for option, value in (("batch_size", batch_size), ("train_units", train_units)):
            if value is not None and value <= 0:
                raise InputError(f"--data.{option} {value}: must be positive")
        self.train_units, self.train_units_seed = train_units, train_units_seed
        if data_dir is not None and not (Path(data_dir) / "dataset_dict.json").is_file():
            raise InputError(f"--data.data_dir {data_dir}: not a prepared dataset (no "
                             "dataset_dict.json); run `interpscore prepare` first, or leave it "
                             "out for the embedded simulated default")
        if images_dir is not None and not Path(images_dir).is_dir():
            raise InputError(f"--data.images_dir {images_dir}: no such folder")
        self.backbone_name, self.image_size = backbone, image_size
        self.cache_dir, self.batch_size, self.fold = cache_dir, batch_size, fold
        self.images_dir = images_dir
        self.simulation = simulation
        self.simulated = data_dir is None
        if self.simulated:
            from ..simulate.release import simulated_dataset_dir

            data_dir = str(simulated_dataset_dir(simulation, data_root))
        self.data_root = data_root
        self.data_dir = data_dir
        self.hparams["data_dir"] = data_dir  # the checkpoint records the resolved dataset
        self._backbone = None
        self.tensors: TaskTensors | None = None

    # -- building (rank 0 only, through prepare_data) --
    def ensure_dataset(self) -> None:
        if self.simulated:
            from ..simulate.release import ensure_simulated

            ensure_simulated(self.simulation, self.data_root)

    @property
    def backbone(self):
        if self._backbone is None:
            from ..metric.backbones import create_backbone

            self._backbone = create_backbone(self.backbone_name, image_size=self.image_size)
        return self._backbone

    @property
    def embedding_dim(self) -> int:
        return self.backbone.dim

    @property
    def stage_dims(self) -> tuple:
        return tuple(self.backbone.stage_dims)

    def dataset_info(self) -> dict:
        return dataset_info(self.data_dir)

    def build_tensors(self) -> TaskTensors:
        return load_task_tensors(self.data_dir, self.backbone, self.cache_dir, self.images_dir)

    def prepare_data(self):
        self.ensure_dataset()
        # Fills the embedding cache once, before other ranks read it (they build in setup).
        self.tensors = self.build_tensors()

    def setup(self, stage=None):
        if self.tensors is None:
            self.tensors = self.build_tensors()
        units = self.tensors.conditions
        if self.fold is None:
            split = units["split"].to_numpy()
        else:
            if self.fold not in set(units["fold"]):
                raise InputError(f"fold {self.fold} not in the dataset (folds: "
                                 f"{sorted(set(units['fold']))})")
            split = np.where(units["fold"] == self.fold, "test",
                             np.where(units["split"] == "val", "val", "train"))
        self.split_ids = {s: np.flatnonzero(split == s).tolist() for s in ("train", "val", "test")}
        if self.train_units is not None:
            self.split_ids["train"] = self.some_training_units(units, self.split_ids["train"])
        for name, ids in self.split_ids.items():
            if not ids and (name != "test" or stage == "test"):
                raise InputError(f"{self.data_dir}: the {name} split holds no units")

    def some_training_units(self, units, train: list[int]) -> list[int]:
        """The conditions of `train_units` training units, a seeded draw of units."""
        from ..data.selection import choose

        ids = units["unit_id"].iloc[train]
        if self.train_units > ids.nunique():
            raise InputError(f"--data.train_units {self.train_units}: the training split holds "
                             f"only {ids.nunique()} units")
        keep = set(choose(pd.DataFrame({"unit_id": ids}), "random", self.train_units,
                          self.train_units_seed))
        return [i for i, unit in zip(train, ids) if unit in keep]

    def seen_record(self) -> dict:
        """Saved in every checkpoint (under `SEEN_KEY`): which units the head was trained and
        selected on, and a fingerprint of the data and fold, so evaluation can refuse or drop
        what it has seen."""
        return seen_units(self.tensors.conditions, self.split_ids, self.data_dir, self.fold)

    def _loader(self, split: str, shuffle: bool):
        dataset = ConditionDataset(self.tensors, self.split_ids[split])
        return torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle,
                                           collate_fn=dataset.collate)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)
