"""Baselines every predictor is compared with, fitted on the training units only: MIS with its
temperature, and linear fits on unit metadata (layer depth, activation statistics)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..metric.heads import MISHead
from ..metric.tasks import TaskTensors, gather

Predictor = Callable[[dict], torch.Tensor]


def fit_mis(tensors: TaskTensors, train_ids, batch_size: int = 256) -> MISHead:
    """MIS with its temperature fitted on the training units (maximum likelihood)."""
    mis = MISHead(tensors.dim)
    ids = list(train_ids)
    mis.fit_alpha(gather(tensors, ids[s:s + batch_size]) for s in range(0, len(ids), batch_size))
    return mis


METADATA_COLUMNS = ("layer_depth", "act_sparsity", "act_spatial_contrast")


def metadata_baselines(tensors: TaskTensors, train_ids) -> dict[str, Predictor]:
    """Baselines from unit metadata alone: the training mean, and a linear fit of HIS on each
    per-unit quantity the dataset has (layer depth; activation sparsity and spatial contrast
    where the units' activations were seen, as in the simulated data)."""
    units = tensors.conditions
    train = units.iloc[list(train_ids)]
    mean = float(train["his"].mean())
    baselines = {"constant": lambda batch: torch.full((len(batch["condition"]),), mean)}
    for column in METADATA_COLUMNS:
        if column not in units:
            continue
        x = train[column].to_numpy(float)
        ok = np.isfinite(x)
        if ok.sum() < 3 or np.ptp(x[ok]) == 0:
            continue
        slope, intercept = np.polyfit(x[ok], train["his"].to_numpy()[ok], 1)
        values = units[column].fillna(float(np.nanmean(x))).to_numpy(float)
        baselines[column] = lambda batch, v=values, a=slope, b=intercept: torch.as_tensor(
            b + a * v[batch["condition"].numpy()], dtype=torch.float32)
    return baselines
