"""Agreement of predicted with measured interpretability, for any predictor.

A predictor is anything that maps a batch of conditions (`tasks.gather`) to P(correct) per task:
trained heads, MIS and outside methods share this one path.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from .heads import MISHead, unit_prediction
from .tasks import TaskTensors, gather


@torch.no_grad()
def predict_conditions(predictor, tensors: TaskTensors, ids, batch_size: int = 256) -> np.ndarray:
    """Predicted accuracy of each condition in `ids` (mean P(correct) over its tasks)."""
    ids = list(ids)
    out = []
    for start in range(0, len(ids), batch_size):
        batch = gather(tensors, ids[start:start + batch_size])
        out.append(unit_prediction(predictor(batch), batch))
    return torch.cat(out).numpy() if out else np.empty(0)


def unit_metrics(predicted, measured, n_boot: int = 1000, seed: int = 0) -> dict:
    """Spearman, Pearson, MAE over units, each with a bootstrap 95 % interval over units."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    if np.isnan(predicted).any():
        raise ValueError(f"{int(np.isnan(predicted).sum())} predictions are NaN")
    stats = {"spearman": lambda p, m: spearmanr(p, m)[0],
             "pearson": lambda p, m: pearsonr(p, m)[0],
             "mae": lambda p, m: float(np.mean(np.abs(p - m)))}
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, len(measured), len(measured)) for _ in range(n_boot)]
    out = {"n_units": int(len(measured))}
    for name, fn in stats.items():
        value = float(fn(predicted, measured))
        boot = np.array([fn(predicted[s], measured[s]) for s in samples], float)
        low, high = np.nanpercentile(boot, [2.5, 97.5])
        out[name], out[f"{name}_ci"] = value, [float(low), float(high)]
    return out


def fit_mis(tensors: TaskTensors, train_ids, batch_size: int = 256) -> MISHead:
    mis = MISHead(tensors.dim)
    ids = list(train_ids)
    mis.fit_alpha(gather(tensors, ids[s:s + batch_size]) for s in range(0, len(ids), batch_size))
    return mis


def evaluate_run(datamodule, checkpoint: str | None, module=None) -> dict:
    """Test-unit metrics of a trained checkpoint and of MIS (alpha fitted on the train units),
    plus the noise ceiling where the data records true accuracies (simulated data)."""
    from .lit import InterpScoreModule

    if datamodule.tensors is None:
        datamodule.setup("test")
    tensors = datamodule.tensors
    if checkpoint:
        module = InterpScoreModule.load_from_checkpoint(checkpoint, map_location="cpu")
    module.eval()
    test, train = datamodule.split_ids["test"], datamodule.split_ids["train"]
    units = tensors.conditions.iloc[test]
    measured = units["his"].to_numpy()
    predicted = predict_conditions(module.head, tensors, test)
    mis = fit_mis(tensors, train)
    info = datamodule.dataset_info()
    metrics = {
        "test": unit_metrics(predicted, measured),
        "baselines": {"mis": {**unit_metrics(predict_conditions(mis, tensors, test), measured),
                              "alpha": float(mis.alpha)}},
        "head": module.hparams.head,
        "backbone": datamodule.backbone_name,
        "checkpoint": checkpoint,
        "data": {"source": info.get("source", "unknown"), "path": str(datamodule.data_dir),
                 "fold": datamodule.fold},
    }
    if "true_accuracy" in units and units["true_accuracy"].notna().all():
        truth = units["true_accuracy"].to_numpy()
        ceiling = float(spearmanr(truth, measured)[0])
        metrics["ceiling"] = {"spearman_true_vs_measured": ceiling,
                              "spearman_pred_vs_true": float(spearmanr(predicted, truth)[0])}
        metrics["test"]["fraction_of_ceiling"] = metrics["test"]["spearman"] / ceiling
        mis_s = metrics["baselines"]["mis"]["spearman"]
        metrics["baselines"]["mis"]["fraction_of_ceiling"] = mis_s / ceiling
    return metrics


def format_summary(metrics: dict) -> str:
    rows = [("trained " + metrics["head"], metrics["test"]),
            ("MIS (baseline)", metrics["baselines"]["mis"])]
    lines = [f"test units: {metrics['test']['n_units']} ({metrics['data']['source']} data)",
             f"{'predictor':22s} {'spearman':>20s} {'pearson':>8s} {'mae':>7s} {'of ceiling':>10s}"]
    for name, m in rows:
        ci = f"[{m['spearman_ci'][0]:.2f}, {m['spearman_ci'][1]:.2f}]"
        frac = f"{m['fraction_of_ceiling']:.2f}" if "fraction_of_ceiling" in m else "-"
        lines.append(f"{name:22s} {m['spearman']:7.3f} {ci:>12s} {m['pearson']:8.3f} "
                     f"{m['mae']:7.3f} {frac:>10s}")
    if "ceiling" in metrics:
        lines.append(f"noise ceiling (true vs measured HIS): "
                     f"{metrics['ceiling']['spearman_true_vs_measured']:.3f}")
    return "\n".join(lines)
