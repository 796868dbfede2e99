"""How well do predictions agree with measured HIS? Unit- and model-level statistics with
bootstrap CIs over units, calibration, paired tests and noise ceilings. Plain numpy / scipy /
pandas: no torch, no Lightning (the leaderboard reads these without the training stack)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

from ..errors import InputError


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
