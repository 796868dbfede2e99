"""Scoring entries: the harness writes the numbers (never the submitter), from the predictions
files and a track's prepared dataset, with the evaluation's own statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from ..atomic import write_text
from ..errors import InputError
from .entries import KEYS, PREDICTION_COLUMNS, ROOT, load_tracks, track_units, validate_all


def score_track(predictions: pd.DataFrame, tables: list[pd.DataFrame], n_boot: int = 1000,
                measure: str = "overall") -> dict:
    """The evaluation's numbers for predictions of a track's units, on each of the track's
    datasets (`tables`: the rows of each prepared dataset's units table). `measure` ranks by
    the `overall` Spearman, or by the mean over datasets of the Spearman `within` model x
    difficulty groups (CIs resample units)."""
    from ..evaluation.agreement import (average_reports, ceiling_used, ceilings, grouped_report,
                                        predictor_report)

    merged = [t.merge(predictions[PREDICTION_COLUMNS], on=KEYS, how="left", validate="1:1")
              for t in tables]
    first = merged[0]
    ceiling = ceilings(first)
    report = predictor_report(first["predicted"].astype(float), first, ceiling,
                              n_boot=n_boot, name="entry")
    grouped = [grouped_report({"entry": m["predicted"].astype(float).to_numpy()}, m, n_boot,
                              reference=None) for m in merged]
    average = average_reports([g[0] for g in grouped], [g[1] for g in grouped], "mis")
    entry, avg_ceiling = average["predictors"]["entry"], average["ceiling"]
    result = {
        "n_units": report["n_units"], "mae": float(sum(
            (m["predicted"].astype(float) - m["his"]).abs().mean() for m in merged) / len(merged)),
        "pearson": report["pearson"],
        "within_spearman": entry["within"], "within_spearman_ci": entry["within_ci"],
        "within_ceiling": avg_ceiling["within"],
        "overall_spearman": report["spearman"], "overall_spearman_ci": report["spearman_ci"],
        "model_rank_correlation": report["model_level"].get("spearman_of_model_means"),
        "models": {m: {"measured": r["measured"], "predicted": r["predicted"],
                       "n_units": r["n_units"]} for m, r in report["model_level"]["models"].items()},
        "units": [[round(float(m), 4), round(float(p), 4), model] for m, p, model in
                  zip(first["his"], first["predicted"], first["model"])],
    }
    if measure == "within":
        result.update(measure="within-group Spearman", spearman=entry["within"],
                      spearman_ci=entry["within_ci"], ceiling=avg_ceiling["within"],
                      fraction_of_ceiling=entry["within_of_ceiling"])
    else:
        result.update(measure="Spearman", spearman=report["spearman"],
                      spearman_ci=report["spearman_ci"], ceiling=ceiling_used(ceiling),
                      fraction_of_ceiling=report["fraction_of_ceiling"])
    return _finite(result)


def _finite(value):
    """NaN (e.g. the Spearman of a constant predictor) becomes null: valid JSON, shown as '-'."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def track_table(dataset: Path, units: pd.DataFrame) -> pd.DataFrame:
    from ..data.dataset import load_prepared

    table = load_prepared(dataset)["units"].to_pandas()
    chosen = table.merge(units[KEYS], on=KEYS, how="inner")
    if len(chosen) != len(units):
        raise InputError(f"{dataset}: holds {len(chosen)} of the track's {len(units)} units "
                         "(a different dataset version?)")
    return chosen


def score_entries(datasets: dict[str, list[Path] | None], ids=None, root: Path = ROOT,
                  n_boot: int = 1000) -> list[Path]:
    """Write results/<id>.json for every entry (or `ids`). `datasets` maps each track to its
    prepared datasets (None: not at hand here, the track stays 'not yet scored'). Retired
    tracks keep the results they had."""
    problems = validate_all([root / "submissions" / f"{i}.yaml" for i in ids] if ids else None,
                            root)
    if problems:
        raise InputError("fix these before scoring:\n" + "\n".join(problems.items))
    tracks = load_tracks(root)
    written = []
    for meta_path in sorted((root / "submissions").glob("*.yaml")):
        meta = yaml.safe_load(meta_path.read_text())
        if ids and meta["id"] not in ids:
            continue
        previous = root / "results" / f"{meta['id']}.json"
        results = json.loads(previous.read_text()) if previous.is_file() else {}
        for track, file in meta["predictions"].items():
            if tracks[track].get("status") == "retired":
                continue
            units = track_units(root, track, tracks[track])
            paths = datasets.get(track)
            if units is None or not paths:
                results[track] = {"status": "not yet scored"}
                continue
            predictions = pd.read_csv(meta_path.parent / file, dtype={"unit_id": str})
            results[track] = score_track(predictions, [track_table(p, units) for p in paths],
                                         n_boot, tracks[track].get("measure", "overall"))
        written.append(write_text(root / "results" / f"{meta['id']}.json",
                                  json.dumps(results, indent=1, sort_keys=True) + "\n"))
    return written


