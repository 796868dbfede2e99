"""Leaderboard entries and tracks: one file per entry, a schema that a machine checks, fixed
and versioned test units per track. Everything here reads and writes files; nothing trains,
embeds or simulates (predictions come from the evaluation harness, through the CLI).

    <root>/tracks.yaml                    benchmarks: dataset and fixed, versioned test units
    <root>/tracks/<track>.csv             unit_id, mode, difficulty
    <root>/submissions/<id>.yaml          metadata written by the submitter
    <root>/submissions/<id>.<track>.csv   predictions: unit_id, mode, difficulty, predicted
    <root>/results/<id>.json              measured by `interpscore leaderboard score`
    <root>/README.md, index.html          rendered by `interpscore leaderboard render`

The entry schema ships with the package (`interpscore/leaderboard/schema.json`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..atomic import write_text
from ..data.dataset import CONDITION_KEYS
from ..errors import InputError
from ..resources import DEFAULT_LEADERBOARD, package_file

ROOT = Path(DEFAULT_LEADERBOARD)
KEYS = CONDITION_KEYS  # an entry predicts conditions
PREDICTION_COLUMNS = KEYS + ["predicted"]


def check_root(root: Path) -> Path:
    """A leaderboard folder must hold tracks.yaml: anything else is a mistake worth saying."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--root {root}: no such folder; pass --root with the folder that holds "
                         "tracks.yaml and submissions/")
    if not (root / "tracks.yaml").is_file():
        raise InputError(f"--root {root}: not a leaderboard folder (no tracks.yaml); pass --root "
                         "with the folder that holds tracks.yaml and submissions/")
    return root


def schema() -> dict:
    return json.loads(package_file("leaderboard", "schema.json").read_text())


@dataclass
class Problems:
    """Every problem found, each with its file and (where known) line."""

    items: list[str] = field(default_factory=list)

    def add(self, path, message, line=None):
        where = f"{path}:{line}" if line is not None else str(path)
        self.items.append(f"{where}: {message}")

    def __bool__(self):
        return bool(self.items)


# --- tracks ------------------------------------------------------------------------------------

def load_tracks(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "tracks.yaml").read_text())["tracks"]


def track_units(root: Path, name: str, track: dict) -> pd.DataFrame | None:
    path = root / track["units"]
    return pd.read_csv(path, dtype={"unit_id": str}) if path.is_file() else None


def fix_track_units(name: str, dataset, root: Path = ROOT) -> Path:
    """Freeze a track's test units from a prepared dataset's test split (once, then versioned)."""
    from ..data.dataset import load_prepared

    tracks = load_tracks(root)
    if name not in tracks:
        raise InputError(f"--track {name}: unknown; tracks: {', '.join(tracks)}")
    out = root / tracks[name]["units"]
    if out.exists():
        raise InputError(f"{out}: the track's units are already fixed; a new list is a new track "
                         "version (add e.g. imi-v2 to tracks.yaml)")
    units = load_prepared(dataset)["units"].to_pandas()
    test = units[units["split"] == "test"][KEYS].sort_values(KEYS)
    if test.empty:
        raise InputError(f"{dataset}: no units in the 'test' split")
    write_text(out, test.to_csv(index=False))
    return out


# --- validation --------------------------------------------------------------------------------

def _line_of(node, path) -> int | None:
    """1-based line of a JSON-Schema error path inside a composed YAML node."""
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == key]
            if not match:
                break
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
    return node.start_mark.line + 1 if node is not None else None


def validate_entry(meta_path: Path, root: Path = ROOT) -> Problems:
    """Schema, id = file name, prediction files: columns, numbers in [0, 1], duplicates, and
    missing or extra units against each track's fixed unit list. All problems at once."""
    import jsonschema

    problems = Problems()
    text = meta_path.read_text()
    try:
        meta = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problems.add(meta_path, f"not valid YAML ({err})", mark.line + 1 if mark else None)
        return problems
    validator = jsonschema.Draft202012Validator(schema())
    for error in sorted(validator.iter_errors(meta), key=lambda e: list(e.path)):
        location = "/".join(map(str, error.path)) or "(top level)"
        problems.add(meta_path, f"{location}: {error.message}", _line_of(node, error.path))
    if not isinstance(meta, dict):
        return problems
    if meta.get("id") != meta_path.stem:
        problems.add(meta_path, f"id {meta.get('id')!r} must equal the file name "
                     f"{meta_path.stem!r}", _line_of(node, ["id"]))
    tracks = load_tracks(root)
    for track, file in (meta.get("predictions") or {}).items():
        line = _line_of(node, ["predictions", track])
        if track not in tracks:
            problems.add(meta_path, f"unknown track {track!r}; tracks: {', '.join(tracks)}", line)
            continue
        if not isinstance(file, str):
            continue
        path = meta_path.parent / file
        if not path.is_file():
            problems.add(meta_path, f"predictions file {file} does not exist", line)
            continue
        validate_predictions(path, track_units(root, track, tracks[track]), problems)
    return problems


def validate_predictions(path: Path, units: pd.DataFrame | None, problems: Problems) -> None:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        problems.add(path, f"not a readable CSV ({err})")
        return
    if list(table.columns) != PREDICTION_COLUMNS:
        problems.add(path, f"columns must be {', '.join(PREDICTION_COLUMNS)}; found "
                     f"{', '.join(table.columns)}", 1)
        return
    for i, value in enumerate(table["predicted"]):
        try:
            number = float(value)
        except ValueError:
            problems.add(path, f"predicted {value!r} is not a number", i + 2)
            continue
        if not 0.0 <= number <= 1.0 or math.isnan(number):
            problems.add(path, f"predicted {value} is outside [0, 1]", i + 2)
    keys = list(map(tuple, table[KEYS].to_numpy()))
    seen = {}
    for i, key in enumerate(keys):
        if key in seen:
            problems.add(path, f"duplicate unit {'/'.join(key)} (first on line {seen[key]})", i + 2)
        seen.setdefault(key, i + 2)
    if units is not None:
        expected = set(map(tuple, units[KEYS].astype(str).to_numpy()))
        missing, extra = expected - set(keys), set(keys) - expected
        if missing:
            problems.add(path, f"{len(missing)} test unit(s) missing, e.g. "
                         f"{', '.join('/'.join(k) for k in sorted(missing)[:3])}")
        for key in sorted(extra):
            problems.add(path, f"unit {'/'.join(key)} is not a test unit of this track", seen[key])


def validate_all(paths=None, root: Path = ROOT) -> Problems:
    paths = [Path(p) for p in paths] if paths else sorted((root / "submissions").glob("*.yaml"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{', '.join(missing)}: no such entry file; name the entry's YAML "
                         "(submissions/ID.yaml)")
    if not paths:
        raise InputError(f"--root {root}: no entries in submissions/ to validate")
    problems = Problems()
    for path in paths:
        problems.items += validate_entry(path, root).items
    return problems


# --- making entries ----------------------------------------------------------------------------

def write_entry(meta: dict, predictions: dict[str, pd.DataFrame], root: Path = ROOT) -> Path:
    """An entry: one predictions CSV per track (columns unit_id, mode, difficulty, predicted)
    and the metadata YAML naming them. Predictions come from the evaluation harness."""
    if not isinstance(meta, dict) or "id" not in meta:
        raise InputError("an entry's metadata needs at least an id")
    if not predictions:
        raise InputError("no track's dataset is at hand to predict")
    # An entry keeps its predictions for tracks not predicted now (a retired track's, say).
    existing = root / "submissions" / f"{meta['id']}.yaml"
    files = dict((yaml.safe_load(existing.read_text()) or {}).get("predictions") or {}) \
        if existing.is_file() else {}
    for track, frame in predictions.items():
        name = f"{meta['id']}.{track}.csv"
        write_text(root / "submissions" / name, frame[PREDICTION_COLUMNS].to_csv(index=False))
        files[track] = name
    meta = {**meta, "predictions": files}
    return write_text(root / "submissions" / f"{meta['id']}.yaml",
                      yaml.safe_dump(meta, sort_keys=False))
