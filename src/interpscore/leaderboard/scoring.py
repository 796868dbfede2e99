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


def score_track(predictions: pd.DataFrame, units: pd.DataFrame, n_boot: int = 1000) -> dict:
    """The evaluation harness's numbers for predictions of a track's units (`units`: the rows of
    the prepared dataset's units table, with his, n_trials, n_correct, model, ...)."""
    from ..evaluation.agreement import ceiling_used, ceilings, predictor_report

    merged = units.merge(predictions[PREDICTION_COLUMNS], on=KEYS, how="left", validate="1:1")
    ceiling = ceilings(merged)
    report = predictor_report(merged["predicted"].astype(float), merged, ceiling,
                              n_boot=n_boot, name="entry")
    return _finite({
        "n_units": report["n_units"], "spearman": report["spearman"],
        "spearman_ci": report["spearman_ci"], "mae": report["mae"], "pearson": report["pearson"],
        "ceiling": ceiling_used(ceiling), "fraction_of_ceiling": report["fraction_of_ceiling"],
        "model_rank_correlation": report["model_level"].get("spearman_of_model_means"),
        "models": {m: {"measured": r["measured"], "predicted": r["predicted"],
                       "n_units": r["n_units"]} for m, r in report["model_level"]["models"].items()},
        "units": [[round(float(m), 4), round(float(p), 4), model] for m, p, model in
                  zip(merged["his"], merged["predicted"], merged["model"])],
    })


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


def score_entries(datasets: dict[str, Path | None], ids=None, root: Path = ROOT,
                  n_boot: int = 1000) -> list[Path]:
    """Write results/<id>.json for every entry (or `ids`). `datasets` maps each track to its
    prepared dataset (None: not at hand here, the track stays 'not yet scored')."""
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
        results = {}
        for track, file in meta["predictions"].items():
            units = track_units(root, track, tracks[track])
            dataset = datasets.get(track)
            if units is None or dataset is None:
                results[track] = {"status": "not yet scored"}
                continue
            predictions = pd.read_csv(meta_path.parent / file, dtype={"unit_id": str})
            results[track] = score_track(predictions, track_table(dataset, units), n_boot)
        written.append(write_text(root / "results" / f"{meta['id']}.json",
                                  json.dumps(results, indent=1, sort_keys=True) + "\n"))
    return written


