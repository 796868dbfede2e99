"""Leave one model out: train a head afresh without each model and predict that model's units,
the test of whether a metric ranks models it has never seen. The folds and each fold's score are
the ones the heads choose their priors by (`metric.fitting`)."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from ..correlation import MIN_GROUP, spearman
from ..evaluation.predict import predict_conditions
from ..metric.fitting import left_out_score, model_folds
from ..metric.tasks import ConditionDataset, TaskTensors
from .lit import InterpScoreModule


def leave_one_model_out(tensors: TaskTensors, hparams: dict, epochs: int, batch_size: int = 32,
                        accelerator: str = "auto", seed: int = 0) -> dict:
    """Train the checkpoint's head (its hyperparameters, its data module's batch size) afresh
    without each model and predict that model's units. A fold's `spearman` is the left-out
    model's within-difficulty Spearman (`metric.fitting.left_out_score`)."""
    units = tensors.conditions
    folds = {}
    for model, train, held_out in model_folds(units, range(len(units))):
        L.seed_everything(seed, verbose=False)
        module = InterpScoreModule(**{k: v for k, v in hparams.items() if not k.startswith("_")})
        if module.fitted:  # fitted on the training units, no gradient steps
            module.head.fit(tensors, train)
        else:
            dataset = ConditionDataset(tensors, train)
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                                 collate_fn=dataset.collate)
            L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                      accelerator=accelerator).fit(module, train_dataloaders=loader)
        predicted = predict_conditions(module.head.eval(), tensors, held_out)
        held = units.iloc[held_out]
        folds[model] = {"n_units": len(held_out), "spearman": left_out_score(predicted, held),
                        "measured": float(held["his"].mean()), "predicted": float(predicted.mean())}
    out = {"folds": folds, "epochs": epochs, "spearman_of_model_means": None}
    if len(folds) >= MIN_GROUP:
        out["spearman_of_model_means"] = float(spearman(
            np.array([f["predicted"] for f in folds.values()]),
            np.array([f["measured"] for f in folds.values()])))
    return out
