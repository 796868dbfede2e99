"""Leave one model out: train a head afresh without each model and predict that model's units,
the test of whether a metric ranks models it has never seen."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from ..evaluation.agreement import spearman
from ..evaluation.harness import predict_conditions
from ..metric.tasks import ConditionDataset, TaskTensors
from .lit import InterpScoreModule


def leave_one_model_out(tensors: TaskTensors, hparams: dict, epochs: int, batch_size: int = 32,
                        accelerator: str = "auto", seed: int = 0) -> dict:
    """Train the checkpoint's head (its hyperparameters, its data module's batch size) afresh
    without each model and predict that model's units."""
    units = tensors.conditions
    folds = {}
    for model in sorted(units["model"].unique()):
        held_out = np.flatnonzero(units["model"] == model).tolist()
        train = np.flatnonzero(units["model"] != model).tolist()
        L.seed_everything(seed, verbose=False)
        module = InterpScoreModule(**{k: v for k, v in hparams.items() if not k.startswith("_")})
        if module.fitted:  # fitted on the training units, no gradient steps
            module.head.fit(tensors, train)
            head = module.head.eval()
        else:
            dataset = ConditionDataset(tensors, train)
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                                 collate_fn=dataset.collate)
            L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                      accelerator=accelerator).fit(module, train_dataloaders=loader)
            head = module.head.eval()
        predicted = predict_conditions(head, tensors, held_out)
        measured = units["his"].to_numpy(float)[held_out]
        folds[model] = {"n_units": len(held_out), "spearman": float(spearman(predicted, measured)),
                        "measured": float(measured.mean()), "predicted": float(predicted.mean())}
    out = {"folds": folds, "epochs": epochs, "spearman_of_model_means": None}
    if len(folds) >= 3:
        out["spearman_of_model_means"] = float(spearman(
            np.array([f["predicted"] for f in folds.values()]),
            np.array([f["measured"] for f in folds.values()])))
    return out


