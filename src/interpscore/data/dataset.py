"""Turn a trial table into the prepared dataset: valid trials, per-unit HIS, splits, a card.

Output: a folder with `README.md` (the dataset card) and a
`datasets.DatasetDict` saved with `save_to_disk`, holding two tables: `trials` (one row per valid
main trial) and `units` (one row per unit x mode x difficulty).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_folder, check_output_folder
from ..errors import InputError
from ..options import FRACTION, SEED, option
from .exclusion import ExclusionCriteria, ExclusionReport, apply_exclusions
from .layouts import (ImageIndex, MissingImages, describe_trial, missing_files, resolve_trial,
                      split_difficulty, unit_id)
from .responses import read_answers
from .sessions import read_study

log = logging.getLogger(__name__)  # progress lines; the CLI shows them

TRUTH_FILE = "unit_truth.csv"  # written by the simulator: each unit's true expected accuracy
STATS_FILE = "unit_activation_stats.csv"  # activation statistics, where activations were seen
SPLITS_FILE = "unit_splits.csv"  # a split fixed by the simulator, shared by all its audiences
UNIT_KEYS = ["unit_id", "model", "layer", "channel", "mode", "difficulty"]
CONDITION_KEYS = ["unit_id", "mode", "difficulty"]  # what names one condition (a unit shown one way)
IMI_DEPTHS_FILE = "imi_layer_depths.json"  # package data, made by stimuli.networks


def imi_layer_depths(model_label: str, layers) -> dict[str, float]:
    """Relative depth of each layer of an IMI model (NaN where the model or layer is unknown),
    from a table shipped with the package: preparing data builds no network."""
    from importlib.resources import files

    table = json.loads(files(__package__).joinpath(IMI_DEPTHS_FILE).read_text())
    depths = table.get(split_difficulty(model_label)[0], {})
    # CLIP units are stored as visual_<layer>
    return {layer: depths.get(re.sub(r"^visual[._]", "", layer), np.nan) for layer in layers}


@dataclass
class Prepared:
    out: Path
    trials: pd.DataFrame
    units: pd.DataFrame
    report: ExclusionReport
    source: str


def wilson_interval(n_correct: np.ndarray, n: np.ndarray, z: float = 1.959964):
    """95 % Wilson score interval of a binomial proportion (vectorised)."""
    n_correct, n = np.asarray(n_correct, float), np.asarray(n, float)
    p = n_correct / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def split_half_reliability(n: np.ndarray, k: np.ndarray, repeats: int = 200, seed: int = 0
                           ) -> float:
    """Reliability of per-unit HIS: split each unit's trials in random halves, correlate the
    half-HIS across units (Spearman) and correct to full length with Spearman-Brown."""
    from scipy.stats import rankdata

    n, k = np.asarray(n, int), np.asarray(k, int)
    rng = np.random.default_rng(seed)
    half = np.maximum(n // 2, 1)
    a = rng.hypergeometric(np.broadcast_to(k, (repeats, len(k))),
                           np.broadcast_to(n - k, (repeats, len(k))),
                           np.broadcast_to(half, (repeats, len(k))))
    x, y = rankdata(a / half, axis=-1), rankdata((k - a) / np.maximum(n - half, 1), axis=-1)
    x, y = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.nanmean((x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum(-1)))
    return float(max(2 * r / (1 + r), 0.0))


def _channel_as_int(values: pd.Series, source) -> pd.Series:
    numbers = pd.to_numeric(values.astype(str).str.replace("channel_", "", regex=False),
                            errors="coerce")
    if numbers.isna().any():
        bad = [f"line {i + 2}: {values[i]!r}" for i in values.index[numbers.isna()][:5]]
        raise InputError(f"{source}: column 'channel' of main trials must be an integer "
                         f"({', '.join(bad)}{', ...' if numbers.isna().sum() > 5 else ''})")
    return numbers.astype(int)


def build_trials(valid: pd.DataFrame, source) -> pd.DataFrame:
    """The `trials` table in its documented columns (image paths as given by the table)."""
    bases, difficulties = zip(*valid["model"].map(split_difficulty))
    trials = pd.DataFrame({
        "model": list(bases),
        "layer": valid["layer"].to_numpy(),
        "channel": _channel_as_int(valid["channel"], source).to_numpy(),
        "mode": valid["mode"].to_numpy(),
        "difficulty": list(difficulties),
        "batch": pd.to_numeric(valid.get("batch", pd.Series(-1, index=valid.index)),
                               errors="coerce").fillna(-1).astype(int).to_numpy(),
        "participant_id": valid["participant_id"].to_numpy(),
        "task_id": valid["task_id"].to_numpy(),
        "correct": valid["correct"].to_numpy(bool),
        "confidence": pd.to_numeric(valid.get("confidence", np.nan), errors="coerce"),
        "rt_ms": pd.to_numeric(valid.get("rt", np.nan), errors="coerce"),
        "model_label": valid["model"].to_numpy(),
    })
    trials.insert(0, "unit_id", [unit_id(m, l, c) for m, l, c in
                                 zip(trials["model"], trials["layer"], trials["channel"])])
    for column in ("max_query", "min_query", "query_path", "layer_depth"):
        if column in valid:
            trials[column] = valid[column].to_numpy()
    for column in ("max_references", "min_references"):
        trials[column] = valid[column].to_list() if column in valid else [[]] * len(valid)
    return trials.reset_index(drop=True)


def resolve_images(trials: pd.DataFrame, images: Path | None, allow_missing: bool,
                   report: ExclusionReport) -> pd.DataFrame:
    """Fill `query_max`, `query_min`, `refs_max`, `refs_min` (paths relative to the images root)."""
    trials = trials.copy()
    if images is None:
        trials["query_max"] = trials.get("max_query", pd.Series("", index=trials.index)).fillna("")
        trials["query_min"] = trials.get("min_query", pd.Series("", index=trials.index)).fillna("")
        trials["refs_max"] = trials["max_references"]
        trials["refs_min"] = trials["min_references"]
        report.notes.append("Images not resolved (no --images given): paths are as in the table.")
        return trials
    index = ImageIndex(images)
    cache, resolved, missing = {}, [], []
    for row in trials.to_dict("records"):
        key = (row.get("max_query"), row.get("query_path"), row["model_label"], row["layer"],
               row["channel"], row["batch"], row["mode"], tuple(row["max_references"]))
        if key not in cache:
            cache[key] = resolve_trial(index, row)
            if cache[key] is None:
                missing.append(_where_missing(index, row, images))
        resolved.append(cache[key])
    if missing and not allow_missing:
        raise MissingImages(missing, Path(images))
    found = np.array([r is not None for r in resolved])
    if missing:
        report.add("images missing (--allow-missing)", "-", int((~found).sum()))
    trials = trials[found].reset_index(drop=True)
    resolved = [r for r in resolved if r is not None]
    trials["query_max"] = [r.query_max for r in resolved]
    trials["query_min"] = [r.query_min for r in resolved]
    trials["refs_max"] = [r.refs_max for r in resolved]
    trials["refs_min"] = [r.refs_min for r in resolved]
    return trials


def _where_missing(index: ImageIndex, row: dict, images: Path) -> str:
    """A missing trial as the local files looked for (the table's URLs mean nothing here)."""
    files = missing_files(index, row)
    if not files:
        return f"{describe_trial(row)}: its folder is missing or incomplete"
    more = f" (and {len(files) - 1} more of its files)" if len(files) > 1 else ""
    return f"{images}/.../{files[0]}{more}"


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for flag, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            raise InputError(f"{flag} {value}: must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise InputError(f"--val-fraction {val_fraction} + --test-fraction {test_fraction}: "
                         "leave no units for training; make their sum less than 1")


def assign_splits(units: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float
                  ) -> pd.Series:
    """Split by unit (all its modes and difficulties together), stratified by model and the set
    of conditions the unit was shown in; seeded and independent of row order."""
    conditions = (units.groupby("unit_id")[["mode", "difficulty"]]
                  .apply(lambda g: "+".join(sorted(set(g["mode"] + ":" + g["difficulty"])))))
    per_unit = pd.DataFrame({"conditions": conditions})
    per_unit["model"] = units.groupby("unit_id")["model"].first()
    rng = np.random.default_rng(seed)
    split = {}
    for _, stratum in per_unit.sort_index().groupby(["model", "conditions"], sort=True):
        ids = rng.permutation(stratum.index.to_numpy())
        n_test = int(round(len(ids) * test_fraction))
        n_val = int(round(len(ids) * val_fraction))
        for i, unit in enumerate(ids):
            split[unit] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return units["unit_id"].map(split)


def unit_table(trials: pd.DataFrame, truth: pd.DataFrame | None, stats: pd.DataFrame | None,
               seed: int, val_fraction: float, test_fraction: float,
               splits: pd.DataFrame | None = None) -> pd.DataFrame:
    units = (trials.groupby(UNIT_KEYS, sort=True)
             .agg(n_trials=("correct", "size"), n_correct=("correct", "sum"),
                  model_label=("model_label", "first"))
             .reset_index())
    units["his"] = units["n_correct"] / units["n_trials"]
    units["his_ci_low"], units["his_ci_high"] = wilson_interval(units["n_correct"],
                                                                units["n_trials"])
    if "layer_depth" in trials:
        depth = trials.groupby(["model", "layer"])["layer_depth"].first()
        units["layer_depth"] = [depth[(m, l)] for m, l in zip(units["model"], units["layer"])]
    else:
        units["layer_depth"] = np.nan
        for model, group in units.groupby("model"):
            depths = imi_layer_depths(model, sorted(set(group["layer"])))
            units.loc[group.index, "layer_depth"] = group["layer"].map(depths)
    if truth is not None:
        units = units.merge(truth, on=["model_label", "layer", "channel", "mode"], how="left")
    if stats is not None:
        units = units.merge(stats, on=["model", "layer", "channel"], how="left")
    if splits is not None:  # fixed by whoever made the data (the simulator)
        units = units.merge(splits[["unit_id", "split", "fold"]], on="unit_id", how="left")
        if units["split"].isna().any():
            raise InputError(f"{SPLITS_FILE}: no split for units such as "
                             f"{units.loc[units['split'].isna(), 'unit_id'].iloc[0]}")
        units["fold"] = units["fold"].astype(int)
        return units.drop(columns="model_label")
    units["split"] = assign_splits(units, seed, val_fraction, test_fraction)
    models = sorted(units["model"].unique())
    units["fold"] = units["model"].map({m: i for i, m in enumerate(models)})
    return units.drop(columns="model_label")


def read_side_table(responses: Path, name: str, needed: set) -> pd.DataFrame | None:
    """A per-unit table the simulator writes beside responses_main.csv (absent for human data)."""
    folder = responses if responses.is_dir() else responses.parent
    path = folder / name
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    if not needed <= set(table.columns):
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(needed - set(table)))}")
    return table


def read_truth(responses: Path) -> pd.DataFrame | None:
    truth = read_side_table(responses, TRUTH_FILE,
                            {"model", "layer", "channel", "mode", "true_accuracy"})
    if truth is None:
        return None
    return truth.rename(columns={"model": "model_label"})[
        ["model_label", "layer", "channel", "mode", "true_accuracy"]]


def read_splits(responses: Path) -> pd.DataFrame | None:
    return read_side_table(responses, SPLITS_FILE, {"unit_id", "split", "fold"})


def read_stats(responses: Path) -> pd.DataFrame | None:
    return read_side_table(responses, STATS_FILE,
                           {"model", "layer", "channel", "act_sparsity", "act_spatial_contrast"})


def _counts_table(trials: pd.DataFrame, units: pd.DataFrame) -> str:
    per = (trials.groupby(["model", "mode", "difficulty"])
           .agg(units=("unit_id", "nunique"), trials=("correct", "size"),
                participants=("participant_id", "nunique"), his=("correct", "mean")))
    lines = ["| model | mode | difficulty | units | trials | participants | mean HIS |",
             "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {mode} | {d} | {int(r.units)} | {int(r.trials)} | {int(r.participants)} "
              f"| {r.his:.3f} |" for (m, mode, d), r in per.iterrows()]
    splits = units.drop_duplicates("unit_id")["split"].value_counts()
    lines += ["", "Units per split: " + ", ".join(f"{s} {splits.get(s, 0)}"
                                                   for s in ("train", "val", "test"))]
    return "\n".join(lines)


def dataset_card(source: str, responses: Path, images: Path | None, trials: pd.DataFrame,
                 units: pd.DataFrame, report: ExclusionReport, seed: int) -> str:
    kind = "Simulated IMI (not human data)" if source == "simulated" else "IMI human responses"
    return f"""---
source: {source}
---
# {kind}: prepared 2-AFC interpretability dataset

- source: {source}
- responses: `{responses}`
- images root: `{images if images is not None else 'not resolved'}`
- valid main trials: {len(trials)}; units (unit x mode x difficulty rows): {len(units)};
  distinct units: {units['unit_id'].nunique()}; participants: {trials['participant_id'].nunique()}
- split seed: {seed} (split by unit, stratified by model and condition; `fold` = leave-one-model-out)

Load with `datasets.load_from_disk(DIR)`: tables `trials` and `units`. HIS = mean `correct` over
valid main trials; `his_ci_low/high` is the 95 % Wilson interval.

## Filters applied
Criteria: `{json.dumps(report.criteria)}`

{report.table()}

## Counts per model and condition
{_counts_table(trials, units)}
"""


def write_dataset(out: Path, trials: pd.DataFrame, units: pd.DataFrame, card: str,
                  extra: dict, overwrite: bool) -> None:
    """Write the dataset folder whole or not at all."""
    import datasets

    datasets.disable_progress_bars()
    with atomic_folder(out, overwrite) as tmp:
        keep = [c for c in trials.columns if c not in ("max_references", "min_references",
                                                       "model_label")]
        data = datasets.DatasetDict({
            "trials": datasets.Dataset.from_pandas(trials[keep], preserve_index=False),
            "units": datasets.Dataset.from_pandas(units, preserve_index=False),
        })
        data.save_to_disk(str(tmp))
        (tmp / "README.md").write_text(card)
        (tmp / "prepare_info.json").write_text(json.dumps(extra, indent=2, default=str))


@dataclass
class SplitOptions:
    """How `prepare` splits units (each an option of `interpscore prepare`)."""

    seed: int = option(0, "seed of the unit split", SEED)
    val_fraction: float = option(0.15, "fraction of units for validation", FRACTION)
    test_fraction: float = option(0.15, "fraction of units for the test split", FRACTION)


def prepare(responses: str | Path, out: str | Path, images: str | Path | None = None,
            criteria: ExclusionCriteria | None = None, allow_missing: bool = False,
            splits: SplitOptions | None = None, overwrite: bool = False) -> Prepared:
    """Read responses, exclude, resolve images, score units, split, and write the dataset."""
    responses, out = Path(responses), Path(out)
    splits = splits or SplitOptions()
    seed, val_fraction, test_fraction = splits.seed, splits.val_fraction, splits.test_fraction
    images = Path(images) if images is not None else None
    # Everything that can be wrong with the request is found before any work.
    if not responses.exists():
        raise InputError(f"--responses {responses}: no such file or folder")
    if images is not None and not images.is_dir():
        raise InputError(f"--images {images}: no such folder; give the images root "
                         "(the unzipped image_data)")
    check_fractions(val_fraction, test_fraction)
    check_output_folder(out, overwrite)
    study = read_study(images) if images is not None else None  # sessions are checked against it
    log.info("prepare: reading %s", responses)
    table, sessions, left_out = read_answers(responses, study)
    if sessions and study is None:
        raise InputError(f"--images {images or '(none)'}: --responses {responses} holds sessions "
                         "of a browser study, and only that study's own sessions count; give "
                         "its folder (the one `study build` wrote) as --images")
    source = "human"
    if "source" in table:
        source = str(table["source"].dropna().iloc[0]) if table["source"].notna().any() else source
    valid, report = apply_exclusions(table, criteria)
    if left_out:  # counted nowhere else: no participant of this study sent them
        report.rows.insert(0, dict(criterion="sessions not of this study (left out)",
                                   responses=len(left_out),
                                   main_trials=sum(o.main_trials for o in left_out)))
        report.notes.append(f"Left out {len(left_out)} session file(s) that are not sessions of "
                            f"study {study['study_id']} (--images): " + "; ".join(
                                f"{o.file}: {', '.join(o.problems[:2])}" for o in left_out))
    if valid.empty:
        raise InputError(f"{responses}: no valid main trials are left after the exclusions:\n"
                         f"{report.table()}")
    log.info("prepare: %d valid main trials; resolving their images", len(valid))
    trials = resolve_images(build_trials(valid, responses), images, allow_missing, report)
    units = unit_table(trials, read_truth(responses), read_stats(responses), seed,
                       val_fraction, test_fraction, read_splits(responses))
    card = dataset_card(source, responses, images, trials, units, report, seed)
    extra = dict(source=source, responses=str(responses.resolve()),
                 images=str(images.resolve()) if images is not None else None, seed=seed,
                 criteria=report.criteria, exclusions=report.rows, notes=report.notes)
    log.info("prepare: writing %s", out)
    write_dataset(out, trials, units, card, extra, overwrite)
    return Prepared(out, trials, units, report, source)


def load_prepared(folder: str | Path):
    """The prepared `DatasetDict` (`trials`, `units`), with a clear error for a wrong folder."""
    import datasets

    folder = Path(folder)
    if not (folder / "dataset_dict.json").is_file():
        raise InputError(f"{folder}: not a prepared dataset (no dataset_dict.json); "
                         "run `interpscore prepare` first")
    return datasets.load_from_disk(str(folder))
