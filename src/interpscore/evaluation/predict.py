"""The one door from a predictor to predictions: any callable that maps a batch of conditions
(`metric.tasks.gather`) to P(correct) per task (B, T) or to one prediction per condition (B,),
or a baseline on the conditions table. Trained heads, MIS, the metadata baselines and outside
methods all go through `predict_conditions`."""

from __future__ import annotations

import numpy as np
import torch

from ..metric.heads import unit_prediction
from ..metric.tasks import TaskTensors, gather
from .baselines import ConditionBaseline, Predictor


@torch.no_grad()
def predict_conditions(predictor: Predictor, tensors: TaskTensors, ids,
                       batch_size: int = 256) -> np.ndarray:
    """Predicted accuracy of each condition in `ids` (mean P(correct) over its tasks)."""
    ids = list(ids)
    if isinstance(predictor, ConditionBaseline):
        return predictor(tensors.conditions.iloc[ids])
    out = []
    for start in range(0, len(ids), batch_size):
        batch = gather(tensors, ids[start:start + batch_size])
        p = torch.as_tensor(predictor(batch), dtype=torch.float32)
        out.append(unit_prediction(p, batch) if p.dim() == 2 else p)
    return torch.cat(out).numpy().astype(float) if out else np.empty(0)
