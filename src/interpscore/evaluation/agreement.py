"""How well do predictions agree with measured HIS? Unit- and model-level statistics with
bootstrap CIs over units, calibration, paired tests and noise ceilings. Plain numpy / scipy /
pandas: no torch, no Lightning (the leaderboard reads these without the training stack)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from ..correlation import (MIN_GROUP, group_labels, mean_of_groups, percentile_interval,
                           ranked_spearman, ranks, rows_corr, spearman, within_group_spearman)
from ..data.dataset import split_half_reliability
from ..errors import InputError


METRICS = {
    "spearman": lambda p, m: spearman(p, m),
    "pearson": lambda p, m: rows_corr(p, m),
    "kendall": lambda p, m: np.array([kendalltau(x, y)[0] for x, y in
                                      zip(np.atleast_2d(p), np.atleast_2d(m))]),
    "mae": lambda p, m: np.abs(p - m).mean(-1),
}


def unit_draws(unit_ids, n_boot: int, seed: int) -> list[np.ndarray]:
    """Bootstrap draws of rows that resample *units*: a unit's conditions (its difficulties and
    modes share its references) enter a draw together, so CIs do not count them as
    independent. Without unit ids every row is a unit of its own."""
    # Sorted, so that datasets with the same units draw the same units (paired bootstraps).
    codes, uniques = pd.factorize(pd.Series(np.asarray(unit_ids, dtype=object)), sort=True)
    rows_of = [np.flatnonzero(codes == u) for u in range(len(uniques))]
    draws = np.random.default_rng(seed).integers(0, len(uniques), (n_boot, len(uniques)))
    return [np.concatenate([rows_of[u] for u in draw]) for draw in draws]


def unit_metrics(predicted, measured, n_boot: int = 1000, seed: int = 0, name: str = "",
                 unit_ids=None) -> dict:
    """Spearman, Pearson, Kendall, MAE over units, each with a bootstrap 95 % CI that
    resamples units (`unit_ids`: the unit of each row; default: every row its own unit)."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    if np.isnan(predicted).any():
        raise InputError(f"predictor {name or '?'}: {int(np.isnan(predicted).sum())} of "
                         f"{len(predicted)} predictions are NaN")
    draws = unit_draws(np.arange(len(measured)) if unit_ids is None else unit_ids, n_boot, seed)
    out = {"n_units": int(len(measured))}
    for metric, fn in METRICS.items():
        out[metric] = float(fn(predicted[None], measured[None])[0])
        if metric == "kendall":  # slow, and its CI says nothing the Spearman CI does not
            continue
        boot = [fn(predicted[d][None], measured[d][None])[0] for d in draws]
        out[f"{metric}_ci"] = percentile_interval(boot)
    return out


def grouped_report(predictions: dict[str, np.ndarray], units: pd.DataFrame, n_boot: int = 1000,
                   seed: int = 0, reference: str | None = "mis") -> tuple[dict, dict]:
    """Within-group (model x difficulty) and overall Spearman of every predictor, each with a
    CI that resamples units, against the ceilings of the same groups (the recorded truth on
    simulated data, else split-half), and each predictor's paired within-group difference to
    `reference`. All predictors share the same draws. Returns (report, the bootstrap arrays of
    within-group and overall Spearman per predictor, for averaging over datasets with the same
    units)."""
    measured = units["his"].to_numpy(float)
    groups = group_labels(units)
    draws = unit_draws(units["unit_id"].to_numpy(), n_boot, seed)
    if "true_accuracy" in units and units["true_accuracy"].notna().all():
        truth = units["true_accuracy"].to_numpy(float)
        ceiling = {"within": within_group_spearman(truth, measured, groups),
                   "overall": float(spearman(truth, measured)), "kind": "true vs measured"}
    else:
        ceiling = {"within": float("nan"), "kind": "split-half",
                   "overall": split_half_ceiling(units["n_trials"], units["n_correct"])}
    boots, report = {}, {"ceiling": ceiling, "n_conditions": int(len(units)),
                         "n_units": int(units["unit_id"].nunique()),
                         "groups": sorted(set(groups)), "predictors": {}}
    # The rows of each group in each draw, and the measured ranks there, shared by predictors.
    codes = pd.factorize(pd.Series(groups))[0]
    cells = []
    for d in draws:
        d = d[np.argsort(codes[d], kind="stable")]
        cuts = np.flatnonzero(np.diff(codes[d])) + 1
        cells.append([rows for rows in np.split(d, cuts) if len(rows) >= MIN_GROUP])
    measured_ranks = [[ranks(measured[rows]) for rows in draw] for draw in cells]
    for name, predicted in predictions.items():
        predicted = np.asarray(predicted, float)
        within = [mean_of_groups(ranked_spearman(ranks(predicted[rows]), m)
                                 for rows, m in zip(draw, draw_ranks))
                  for draw, draw_ranks in zip(cells, measured_ranks)]
        # The draws by the groups' rule too: a draw where the prediction is constant scores 0.
        overall = [ranked_spearman(ranks(predicted[d]), ranks(measured[d])) for d in draws]
        boots[name] = {"within": np.array(within), "overall": np.array(overall)}
        row = {"within": within_group_spearman(predicted, measured, groups),
               "within_ci": percentile_interval(within),
               "overall": float(spearman(predicted, measured)),
               "overall_ci": percentile_interval(overall)}
        row["within_of_ceiling"] = of_ceiling(row["within"], ceiling["within"])
        row["overall_of_ceiling"] = of_ceiling(row["overall"], ceiling["overall"])
        report["predictors"][name] = row
    if reference in predictions:
        for name, row in report["predictors"].items():
            if name == reference:
                continue
            diff = boots[name]["within"] - boots[reference]["within"]
            ok = diff[np.isfinite(diff)]
            row[f"within_minus_{reference}"] = row["within"] - report["predictors"][reference]["within"]
            row[f"within_minus_{reference}_ci"] = percentile_interval(ok)
    return report, boots


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


def paired_bootstrap(pred_a, pred_b, measured, n_boot: int = 1000, seed: int = 0,
                     unit_ids=None) -> dict:
    """Does A beat B on the same units? Spearman(A) - Spearman(B) with a bootstrap CI that
    resamples units (`unit_ids`, as `unit_draws`), and the one-sided bootstrap p-value of 'A is
    no better than B'."""
    pred_a, pred_b, measured = (np.asarray(x, float) for x in (pred_a, pred_b, measured))
    draws = unit_draws(np.arange(len(measured)) if unit_ids is None else unit_ids, n_boot, seed)
    diff = np.array([float(spearman(pred_a[d], measured[d]) - spearman(pred_b[d], measured[d]))
                     for d in draws])
    diff = diff[np.isfinite(diff)]
    point = float(spearman(pred_a, measured) - spearman(pred_b, measured))
    return {"spearman_difference": point, "ci": percentile_interval(diff),
            "p_value": float((np.sum(diff <= 0) + 1) / (len(diff) + 1))}


def split_half_ceiling(n: np.ndarray, k: np.ndarray, repeats: int = 200, seed: int = 0) -> float:
    """The split-half reliability (Spearman-Brown corrected) is the correlation of two
    measurements; a perfect predictor correlates with one measurement by its square root."""
    return float(np.sqrt(split_half_reliability(n, k, repeats, seed)))


def binomial_ceiling(n: np.ndarray, k: np.ndarray, repeats: int = 200, seed: int = 0) -> float:
    """Expected Spearman of the true accuracies with a ~n-response measurement of them.
    True accuracies are drawn from their empirical-Bayes (beta) posteriors given the data."""
    n, k = np.asarray(n, float), np.asarray(k, float)
    his = k / n
    mean = his.mean()
    if not 0 < mean < 1:  # every answer right (or wrong): no posterior spread, nothing to rank
        return float("nan")
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
            row[f"{key}_ci"] = percentile_interval(values[samples].mean(1))
        if len(group) >= MIN_GROUP:
            row["spearman_within"] = float(spearman(group["p"].to_numpy(), group["m"].to_numpy()))
        rows[model] = row
    out = {"models": rows}
    means = np.array([r["predicted"] for r in rows.values()])
    if len(rows) >= MIN_GROUP and np.ptp(means) > 1e-9:  # equal means (a constant) have no ranking
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
                         if len(g) >= MIN_GROUP else None}
            for value, g in frame.groupby(column, sort=True)}
    depth = frame["layer_depth"].to_numpy(float)
    ok = np.isfinite(depth)
    if ok.sum() >= MIN_GROUP:
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


def of_ceiling(value: float, ceiling: float) -> float:
    """A correlation as a fraction of the noise ceiling; undefined (NaN) where the ceiling is not
    positive (a handful of units: a fraction of a ceiling at or below zero means nothing)."""
    return float(value) / ceiling if np.isfinite(ceiling) and ceiling > 0 else float("nan")


def ceiling_used(ceiling: dict) -> float:
    """The recorded truth where it exists, else the binomial simulation."""
    return ceiling.get("true_vs_measured", ceiling["binomial_simulation"])


def predictor_report(predicted, units: pd.DataFrame, ceiling: dict, n_boot: int = 1000,
                     seed: int = 0, name: str = "") -> dict:
    """Every unit- and model-level measure of one predictor's predictions for these units."""
    predicted = np.asarray(predicted, float)
    measured = units["his"].to_numpy(float)
    report = unit_metrics(predicted, measured, n_boot, seed, name, units.get("unit_id"))
    report["within_group_spearman"] = within_group_spearman(predicted, measured,
                                                            group_labels(units))
    if "true_vs_measured" in ceiling:
        report["spearman_vs_true_accuracy"] = float(
            spearman(predicted, units["true_accuracy"].to_numpy(float)))
    report["fraction_of_ceiling"] = of_ceiling(report["spearman"], ceiling_used(ceiling))
    report["calibration"] = calibration(predicted, measured)
    report["model_level"] = model_level(predicted, measured, units["model"], n_boot, seed)
    report["breakdowns"] = breakdowns(predicted, units)
    return report


def average_reports(reports: list[dict], boots: list[dict], reference: str) -> dict:
    """The mean over datasets of each measure; CIs from the mean of paired bootstrap draws."""
    names = list(reports[0]["predictors"])
    ceiling_within = float(np.mean([r["ceiling"]["within"] for r in reports]))
    ceiling_overall = float(np.mean([r["ceiling"]["overall"] for r in reports]))
    out = {"ceiling": {"within": ceiling_within, "overall": ceiling_overall}, "predictors": {}}
    with warnings.catch_warnings():  # a predictor constant within groups has no within draws
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_boot = {(n, m): np.nanmean([b[n][m] for b in boots], axis=0)
                     for n in names for m in ("within", "overall")}
    for name in names:
        rows = [r["predictors"][name] for r in reports]
        row = {key: float(np.nanmean([r[key] for r in rows])) if any(np.isfinite(r[key]) for r in rows)
               else float("nan") for key in ("within", "overall")}
        row["within_ci"] = percentile_interval(mean_boot[name, "within"])
        row["overall_ci"] = percentile_interval(mean_boot[name, "overall"])
        row["within_of_ceiling"] = of_ceiling(row["within"], ceiling_within)
        row["overall_of_ceiling"] = of_ceiling(row["overall"], ceiling_overall)
        if name != reference and reference in names:
            diff = mean_boot[name, "within"] - mean_boot[reference, "within"]
            row[f"within_minus_{reference}"] = row["within"] - float(np.nanmean(
                [r["predictors"][reference]["within"] for r in reports]))
            row[f"within_minus_{reference}_ci"] = percentile_interval(diff)
        out["predictors"][name] = row
    return out
