"""Baselines every predictor is compared with, fitted on the training units only: MIS with its
temperature, and linear fits on unit metadata (layer depth, activation statistics)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..metric.heads import MISHead, StageMISHead
from ..metric.tasks import TaskTensors

Predictor = Callable[[dict], torch.Tensor]


def fit_mis(tensors: TaskTensors, train_ids, batch_size: int = 256) -> MISHead:
    """MIS with its temperature fitted on the training units (maximum likelihood)."""
    mis = MISHead(tensors.dim)
    mis.fit(tensors, train_ids, batch_size)
    return mis


def fit_stage_mis(tensors: TaskTensors, train_ids) -> StageMISHead:
    """Stage-weighted MIS (one weight per backbone stage, a bias, a lapse) fitted on the
    training units by maximum likelihood."""
    head = StageMISHead(tensors.dim, tensors.stage_dims)
    head.fit(tensors, train_ids)
    return head


class ConditionBaseline:
    """A predictor from what is known of a condition (its model, difficulty, layer depth, ...),
    not from its images: a function of the conditions table, fitted on training units."""

    def __init__(self, predict):
        self.predict = predict

    def __call__(self, conditions) -> np.ndarray:
        return np.asarray(self.predict(conditions), float)


METADATA_COLUMNS = ("layer_depth", "act_sparsity", "act_spatial_contrast")


def metadata_baselines(tensors: TaskTensors, train_ids) -> dict[str, ConditionBaseline]:
    """Baselines from unit metadata alone, fitted on the training units: the training mean;
    model identity (the training units' mean HIS of the condition's model and difficulty:
    everything a metric could get right between models without looking at a unit); and a linear
    fit of HIS on each per-unit quantity the dataset has (layer depth; activation sparsity and
    spatial contrast where activations were seen, as in the simulated data)."""
    train = tensors.conditions.iloc[list(train_ids)]
    mean = float(train["his"].mean())
    by_condition = train.groupby(["model", "difficulty"])["his"].mean().to_dict()
    by_model = train.groupby("model")["his"].mean().to_dict()
    baselines = {
        "constant": ConditionBaseline(lambda c: np.full(len(c), mean)),
        "model_identity": ConditionBaseline(lambda c: [
            by_condition.get((m, d), by_model.get(m, mean))
            for m, d in zip(c["model"], c["difficulty"])]),
    }
    for column in METADATA_COLUMNS:
        if column not in train:
            continue
        x = train[column].to_numpy(float)
        ok = np.isfinite(x)
        if ok.sum() < 3 or np.ptp(x[ok]) == 0:
            continue
        slope, intercept = np.polyfit(x[ok], train["his"].to_numpy()[ok], 1)
        fill = float(np.nanmean(x))
        baselines[column] = ConditionBaseline(
            lambda c, col=column, a=slope, b=intercept, f=fill:
            b + a * (c[col].fillna(f).to_numpy(float) if col in c else np.full(len(c), f)))
    return baselines
