"""How well does a predictor agree with humans? Unit and model level, with uncertainty, against
baselines and against the noise ceiling of the human data.

A predictor is any callable that maps a batch of conditions (`tasks.gather`: embeddings of each
task's queries and references, plus `condition` ids) to P(correct) per task (B, T) or to one
prediction per condition (B,). Trained heads, MIS, the metadata baselines and outside methods all
go through `predict_conditions`, so they are compared on exactly the same units.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau, rankdata

from .errors import InputError
from .heads import MISHead, unit_prediction
from .tasks import TaskTensors, gather

Predictor = Callable[[dict], torch.Tensor]


@torch.no_grad()
def predict_conditions(predictor: Predictor, tensors: TaskTensors, ids,
                       batch_size: int = 256) -> np.ndarray:
    """Predicted accuracy of each condition in `ids` (mean P(correct) over its tasks)."""
    ids = list(ids)
    out = []
    for start in range(0, len(ids), batch_size):
        batch = gather(tensors, ids[start:start + batch_size])
        p = torch.as_tensor(predictor(batch), dtype=torch.float32)
        out.append(unit_prediction(p, batch) if p.dim() == 2 else p)
    return torch.cat(out).numpy().astype(float) if out else np.empty(0)


# --- statistics ---------------------------------------------------------------------------------

def _rows_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows (NaN for a constant row)."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def spearman(a, b) -> np.ndarray:
    """Spearman correlation of matching rows of a and b (ties get average ranks)."""
    return _rows_corr(rankdata(a, axis=-1), rankdata(b, axis=-1))


METRICS = {
    "spearman": lambda p, m: spearman(p, m),
    "pearson": lambda p, m: _rows_corr(p, m),
    "kendall": lambda p, m: np.array([kendalltau(x, y)[0] for x, y in
                                      zip(np.atleast_2d(p), np.atleast_2d(m))]),
    "mae": lambda p, m: np.abs(p - m).mean(-1),
}


def bootstrap_samples(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def unit_metrics(predicted, measured, n_boot: int = 1000, seed: int = 0, name: str = "") -> dict:
    """Spearman, Pearson, Kendall, MAE over units, each with a bootstrap 95 % CI over units."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    if np.isnan(predicted).any():
        raise InputError(f"predictor {name or '?'}: {int(np.isnan(predicted).sum())} of "
                         f"{len(predicted)} predictions are NaN")
    samples = bootstrap_samples(len(measured), n_boot, seed)
    out = {"n_units": int(len(measured))}
    for metric, fn in METRICS.items():
        out[metric] = float(fn(predicted[None], measured[None])[0])
        boot = fn(predicted[samples], measured[samples])
        low, high = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan,) * 2
        out[f"{metric}_ci"] = [float(low), float(high)]
    return out


def calibration(predicted, measured, bins: int = 10) -> dict:
    """Binned (quantiles of the prediction) mean predicted vs mean measured, and their
    weighted mean absolute gap (expected calibration error)."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = [dict(predicted=float(predicted[which == b].mean()),
                 measured=float(measured[which == b].mean()), n=int((which == b).sum()))
            for b in np.unique(which)]
    ece = sum(r["n"] * abs(r["predicted"] - r["measured"]) for r in rows) / len(predicted)
    return {"bins": rows, "ece": float(ece)}


def paired_bootstrap(pred_a, pred_b, measured, n_boot: int = 1000, seed: int = 0) -> dict:
    """Does A beat B on the same units? Spearman(A) - Spearman(B) with a bootstrap CI and the
    one-sided bootstrap p-value of 'A is no better than B'."""
    pred_a, pred_b, measured = (np.asarray(x, float) for x in (pred_a, pred_b, measured))
    samples = bootstrap_samples(len(measured), n_boot, seed)
    diff = spearman(pred_a[samples], measured[samples]) - spearman(pred_b[samples], measured[samples])
    diff = diff[np.isfinite(diff)]
    point = float(spearman(pred_a, measured) - spearman(pred_b, measured))
    low, high = np.percentile(diff, [2.5, 97.5])
    return {"spearman_difference": point, "ci": [float(low), float(high)],
            "p_value": float((np.sum(diff <= 0) + 1) / (len(diff) + 1))}


def split_half_ceiling(n: np.ndarray, k: np.ndarray, repeats: int = 200, seed: int = 0) -> float:
    """Split each unit's trials in random halves, correlate the half-HIS across units (Spearman)
    and correct to full length with Spearman-Brown: that is the reliability, the correlation of
    two measurements. A perfect predictor correlates with one measurement by its square root."""
    n, k = np.asarray(n, int), np.asarray(k, int)
    rng = np.random.default_rng(seed)
    half = n // 2
    a = rng.hypergeometric(np.broadcast_to(k, (repeats, len(k))),
                           np.broadcast_to(n - k, (repeats, len(k))),
                           np.broadcast_to(np.maximum(half, 1), (repeats, len(k))))
    r = np.nanmean(spearman(a / np.maximum(half, 1), (k - a) / np.maximum(n - half, 1)))
    return float(np.sqrt(max(2 * r / (1 + r), 0.0)))


def binomial_ceiling(n: np.ndarray, k: np.ndarray, repeats: int = 200, seed: int = 0) -> float:
    """Expected Spearman of the true accuracies with a ~n-response measurement of them.
    True accuracies are drawn from their empirical-Bayes (beta) posteriors given the data."""
    n, k = np.asarray(n, float), np.asarray(k, float)
    his = k / n
    mean = his.mean()
    true_var = max(his.var() - np.mean(his * (1 - his) / n), 1e-6)
    concentration = max(mean * (1 - mean) / true_var - 1, 1e-3)
    a, b = mean * concentration, (1 - mean) * concentration
    rng = np.random.default_rng(seed)
    p = rng.beta(a + k, b + n - k, size=(repeats, len(n)))
    measured = rng.binomial(n.astype(int), p) / n
    return float(np.nanmean(spearman(p, measured)))


def model_level(predicted, measured, models, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per model: mean predicted and measured HIS with bootstrap CIs over its units; across
    models: the rank correlation of predicted with measured model means."""
    frame = pd.DataFrame({"p": predicted, "m": measured, "model": models})
    rng = np.random.default_rng(seed)
    rows = {}
    for model, group in frame.groupby("model", sort=True):
        samples = rng.integers(0, len(group), (n_boot, len(group)))
        row = {"n_units": int(len(group))}
        for key, column in (("predicted", "p"), ("measured", "m")):
            values = group[column].to_numpy()
            row[key] = float(values.mean())
            row[f"{key}_ci"] = [float(x) for x in np.percentile(values[samples].mean(1), [2.5, 97.5])]
        if len(group) >= 3:
            row["spearman_within"] = float(spearman(group["p"].to_numpy(), group["m"].to_numpy()))
        rows[model] = row
    out = {"models": rows}
    means = np.array([r["predicted"] for r in rows.values()])
    if len(rows) >= 3 and np.ptp(means) > 1e-9:  # equal means (a constant) have no ranking
        out["spearman_of_model_means"] = float(spearman(
            means, np.array([r["measured"] for r in rows.values()])))
    return out


def breakdowns(predicted, units: pd.DataFrame) -> dict:
    """Spearman and means by condition (mode), by difficulty, and the trend with layer depth."""
    frame = units.assign(predicted=predicted)
    out = {}
    for column in ("mode", "difficulty"):
        out[column] = {
            str(value): {"n_units": int(len(g)), "measured": float(g["his"].mean()),
                         "predicted": float(g["predicted"].mean()),
                         "spearman": float(spearman(g["predicted"].to_numpy(), g["his"].to_numpy()))
                         if len(g) >= 3 else None}
            for value, g in frame.groupby(column, sort=True)}
    depth = frame["layer_depth"].to_numpy(float)
    ok = np.isfinite(depth)
    if ok.sum() >= 3:
        out["layer_depth"] = {
            "spearman_depth_vs_measured": float(spearman(depth[ok], frame["his"].to_numpy()[ok])),
            "spearman_depth_vs_predicted": float(spearman(depth[ok], frame["predicted"].to_numpy()[ok])),
        }
    return out


# --- baselines ---------------------------------------------------------------------------------

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


# --- the whole evaluation ----------------------------------------------------------------------

def ceilings(units: pd.DataFrame) -> dict:
    """Noise ceilings of the units' measured HIS (and the recorded truth on simulated data)."""
    n, k = units["n_trials"].to_numpy(), units["n_correct"].to_numpy()
    ceiling = {"split_half_spearman_brown": split_half_ceiling(n, k),
               "binomial_simulation": binomial_ceiling(n, k)}
    if "true_accuracy" in units and units["true_accuracy"].notna().all():
        ceiling["true_vs_measured"] = float(spearman(units["true_accuracy"].to_numpy(float),
                                                     units["his"].to_numpy(float)))
    return ceiling


def ceiling_used(ceiling: dict) -> float:
    """The recorded truth where it exists, else the binomial simulation."""
    return ceiling.get("true_vs_measured", ceiling["binomial_simulation"])


def predictor_report(predicted, units: pd.DataFrame, ceiling: dict, n_boot: int = 1000,
                     seed: int = 0, name: str = "") -> dict:
    """Every unit- and model-level measure of one predictor's predictions for these units."""
    predicted = np.asarray(predicted, float)
    measured = units["his"].to_numpy(float)
    report = unit_metrics(predicted, measured, n_boot, seed, name)
    if "true_vs_measured" in ceiling:
        report["spearman_vs_true_accuracy"] = float(
            spearman(predicted, units["true_accuracy"].to_numpy(float)))
    report["fraction_of_ceiling"] = report["spearman"] / ceiling_used(ceiling)
    report["calibration"] = calibration(predicted, measured)
    report["model_level"] = model_level(predicted, measured, units["model"], n_boot, seed)
    report["breakdowns"] = breakdowns(predicted, units)
    return report


def evaluate_predictors(predictors: dict[str, Predictor], tensors: TaskTensors, ids,
                        reference: str | None = None, n_boot: int = 1000, seed: int = 0
                        ) -> tuple[dict, pd.DataFrame]:
    """Every measure for every predictor on the conditions `ids`. Returns (metrics, per-unit
    predictions). `reference` (default: the first predictor) is tested against the others."""
    ids = list(ids)
    if len(ids) < 3:
        raise InputError(f"only {len(ids)} units to evaluate: too few for correlations")
    units = tensors.conditions.iloc[ids].reset_index(drop=True)
    measured = units["his"].to_numpy(float)
    table = units.copy()
    ceiling = ceilings(units)
    results = {}
    for name, predictor in predictors.items():
        table[f"pred_{name}"] = predict_conditions(predictor, tensors, ids)
        results[name] = predictor_report(table[f"pred_{name}"], units, ceiling, n_boot, seed,
                                         name)
    reference = reference or next(iter(predictors))
    tests = {f"{reference} vs {other}": paired_bootstrap(table[f"pred_{reference}"],
                                                         table[f"pred_{other}"], measured,
                                                         n_boot, seed)
             for other in predictors if other != reference
             and np.ptp(table[f"pred_{other}"]) > 0}
    measured_level = {"models": model_level(measured, measured, units["model"], n_boot, seed)["models"],
                      "breakdowns": breakdowns(measured, units)}
    metrics = {"predictors": results, "ceiling": ceiling, "ceiling_used": ceiling_used(ceiling),
               "paired_tests": tests, "measured": measured_level, "n_units": len(ids),
               "notes": [] if "act_sparsity" in units else [
                   "Activation-statistics baselines (sparsity, spatial contrast) need the units' "
                   "activations, which this dataset does not record (human IMI data)."]}
    return metrics, table


def evaluate_run(datamodule, checkpoint: str | None, module=None, n_boot: int = 1000) -> dict:
    """End of `python train.py`: the best checkpoint and MIS on the test units."""
    from .checkpoint import load_checkpoint

    if datamodule.tensors is None:
        datamodule.setup("test")
    head = load_checkpoint(checkpoint).head if checkpoint else module.head.eval()
    hparams = module.hparams if module is not None else {}
    tensors, split = datamodule.tensors, datamodule.split_ids
    mis = fit_mis(tensors, split["train"])
    metrics, _ = evaluate_predictors({"trained": head, "mis": mis}, tensors, split["test"],
                                     n_boot=n_boot)
    trained, baseline = metrics["predictors"]["trained"], metrics["predictors"]["mis"]
    keep = ("spearman", "spearman_ci", "pearson", "pearson_ci", "kendall", "mae", "n_units",
            "fraction_of_ceiling")
    return {
        "test": {k: trained[k] for k in keep},
        "baselines": {"mis": {**{k: baseline[k] for k in keep}, "alpha": float(mis.alpha)}},
        "ceiling": metrics["ceiling"],
        "trained_vs_mis": metrics["paired_tests"]["trained vs mis"],
        "head": hparams.get("head"), "backbone": datamodule.backbone_name,
        "checkpoint": checkpoint,
        "data": {"source": datamodule.dataset_info().get("source", "unknown"),
                 "path": str(datamodule.data_dir), "fold": datamodule.fold},
    }


def format_summary(metrics: dict) -> str:
    rows = [(f"trained {metrics['head']}", metrics["test"]),
            ("MIS (baseline)", metrics["baselines"]["mis"])]
    lines = [f"test units: {metrics['test']['n_units']} ({metrics['data']['source']} data)",
             f"{'predictor':22s} {'spearman':>20s} {'pearson':>8s} {'mae':>7s} {'of ceiling':>10s}"]
    for name, m in rows:
        ci = f"[{m['spearman_ci'][0]:.2f}, {m['spearman_ci'][1]:.2f}]"
        lines.append(f"{name:22s} {m['spearman']:7.3f} {ci:>12s} {m['pearson']:8.3f} "
                     f"{m['mae']:7.3f} {m['fraction_of_ceiling']:10.2f}")
    ceiling = metrics["ceiling"]
    lines.append("noise ceiling: " + ", ".join(f"{k} {v:.3f}" for k, v in ceiling.items()))
    test = metrics["trained_vs_mis"]
    lines.append(f"trained - MIS Spearman: {test['spearman_difference']:+.3f} "
                 f"[{test['ci'][0]:+.3f}, {test['ci'][1]:+.3f}], p = {test['p_value']:.3f}")
    return "\n".join(lines)


# --- the `interpscore evaluate` command --------------------------------------------------------

SPLITS = ("test", "val", "all")


def split_ids(units: pd.DataFrame, split: str, source) -> list[int]:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    ids = list(range(len(units))) if split == "all" else np.flatnonzero(units["split"] == split).tolist()
    if not ids:
        raise InputError(f"{source}: no units in the '{split}' split")
    return ids


def leave_one_model_out(tensors: TaskTensors, hparams: dict, epochs: int, seed: int = 0) -> dict:
    """Train the checkpoint's head afresh without each model and predict that model's units."""
    import lightning as L

    from .lit import InterpScoreModule
    from .tasks import ConditionDataset

    units = tensors.conditions
    folds = {}
    for model in sorted(units["model"].unique()):
        held_out = np.flatnonzero(units["model"] == model).tolist()
        train = np.flatnonzero(units["model"] != model).tolist()
        L.seed_everything(seed, verbose=False)
        if hparams["head"] == "mis":
            head = fit_mis(tensors, train)
        else:
            module = InterpScoreModule(**{k: v for k, v in hparams.items() if not k.startswith("_")})
            dataset = ConditionDataset(tensors, train)
            loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True,
                                                 collate_fn=dataset.collate)
            L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                      accelerator="cpu").fit(module, train_dataloaders=loader)
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


def run_evaluation(checkpoint, out, data_dir=None, split: str = "test", folds: str | None = None,
                   backbone: str | None = None, images_dir=None,
                   cache_dir: str = ".cache/interpscore", lomo_epochs: int = 60,
                   n_boot: int = 1000) -> dict:
    """Evaluate a checkpoint, MIS and the metadata baselines on one split; write the report."""
    from .backbones import create_backbone
    from .checkpoint import load_checkpoint
    from .tasks import dataset_info, load_task_tensors

    metric = load_checkpoint(checkpoint)
    if backbone and backbone != metric.backbone:
        raise InputError(f"{checkpoint}: the checkpoint reads {metric.backbone!r} embeddings, "
                         f"not {backbone!r}; a head only works with the backbone it was trained on")
    data_dir = data_dir or metric.data_hparams.get("data_dir")
    if not data_dir:
        raise InputError(f"{checkpoint}: it records no dataset; pass --data DIR")
    tensors = load_task_tensors(data_dir, create_backbone(metric.backbone, metric.image_size),
                                cache_dir, images_dir)
    if tensors.dim != metric.hparams["embedding_dim"]:
        raise InputError(f"{checkpoint}: the head expects {metric.hparams['embedding_dim']}-dim "
                         f"embeddings, backbone {metric.backbone!r} gives {tensors.dim}")
    units = tensors.conditions
    ids = split_ids(units, split, data_dir)
    train = np.flatnonzero(units["split"] == "train").tolist()
    predictors = {"trained": metric.head, "mis": fit_mis(tensors, train),
                  **metadata_baselines(tensors, train)}
    metrics, table = evaluate_predictors(predictors, tensors, ids, reference="trained",
                                         n_boot=n_boot)
    metrics.update(split=split, checkpoint=str(checkpoint), head=metric.hparams["head"],
                   backbone=metric.backbone,
                   data={"source": dataset_info(data_dir).get("source", "unknown"),
                         "path": str(data_dir)})
    if folds == "lomo":
        metrics["lomo"] = leave_one_model_out(tensors, dict(metric.hparams), lomo_epochs)
    elif folds is not None:
        raise InputError(f"unknown --folds {folds!r}; valid: lomo")
    from .report import write_report

    write_report(metrics, table, out, "trained")
    return metrics
