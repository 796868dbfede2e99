"""Read IMI human responses into one trial-level table.

Accepted inputs (the forms of the IMI release, Zenodo 8131197, and of the authors' analysis code):
- a trial-level CSV in the authors' schema (`responses_main.csv` or any CSV with those columns);
- the raw per-experiment form: `result_task_*.pkl` (pickled `RepeatedTaskResult` tuples of the
  authors' MTurk code) plus `structure.json` (which unit each trial showed);
- the sessions of a browser study (`interpscore study serve`'s RESULTS folder, or files the page
  saved in the browser; see `sessions`): one JSON file per session, or a single one;
- any of the above inside a folder or a zip (as `human_responses.zip` from Zenodo).

The output is a pandas DataFrame with normalised types: booleans as bool, `participant_id`
always present, `channel` left as given (catch trials carry non-numeric channels).
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import InputError
from .sessions import LeftOut, is_session_file, sessions_table

# Columns every trial table must carry (participant may be `participant_id` or `worker_id`).
REQUIRED_COLUMNS = ("task_id", "model", "layer", "channel", "mode", "correct")
# Boolean columns the analysis reads (others, e.g. `switched_queries`, are kept as they are).
# `correct` is read only where it is used: main and catch trials, not the practice block.
BOOL_COLUMNS = ("is_demo", "catch_trial", "passed_checks", "multi_participation", "correct")
LIST_COLUMNS = ("min_references", "max_references")
NUMBER_COLUMNS = ("time_elapsed", "rt")  # the exclusion criteria compute with them
_TRUE = {"true", "t", "1", "1.0", "yes", "y"}
_FALSE = {"false", "f", "0", "0.0", "no", "n", "", "nan", "none"}


class Answers(NamedTuple):
    """What `read_answers` found: the trial table, whether it came from study sessions, and
    the session files left out as not the study's (`sessions.not_of_study`)."""

    table: pd.DataFrame
    sessions: bool
    left_out: list[LeftOut]


def read_responses(path: str | Path, study: dict | None = None) -> pd.DataFrame:
    """Read responses from a CSV, a folder or a zip; return the normalised trial table (study
    sessions not of STUDY, a study.json, left out; `read_answers` says which)."""
    return read_answers(path, study).table


def read_answers(path: str | Path, study: dict | None = None) -> Answers:
    """`read_responses`, and which study session files were left out and why."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        found = _read_from_folder(path, study)
    elif zipfile.is_zipfile(path):
        found = _read_from_zip(path, study)
    elif path.suffix.lower() in (".zip",):
        raise InputError(f"{path}: not a readable zip file (truncated download? check its md5)")
    elif path.suffix.lower() == ".json":
        found = sessions_table({str(path): path.read_bytes()}, path, study)
    else:
        found = _read_csv(path, path.read_bytes())
    table, left_out = found if isinstance(found, tuple) else (found, None)
    return Answers(normalise_table(table, path), left_out is not None, left_out or [])


def _read_csv(path: Path | str, data: bytes) -> pd.DataFrame:
    try:
        table = pd.read_csv(io.BytesIO(data), low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path}: cannot be read as a CSV table ({err})") from err
    return table


def _choose_source(names: list[str], where) -> tuple[str, object]:
    """Prefer `responses_main.csv`, then the raw pickles, then a lone CSV table, then study
    session files."""
    csvs = sorted(n for n in names if n.lower().endswith(".csv"))
    main = [n for n in csvs if PurePosixPath(n).name == "responses_main.csv"]
    if len(main) > 1:
        raise InputError(f"{where}: several responses_main.csv files ({', '.join(main)}): "
                         "point --responses at one of them")
    if main:
        return "csv", main[0]
    pkls = sorted(n for n in names if re.fullmatch(r"result_task_.*\.pkl", PurePosixPath(n).name))
    structures = sorted(n for n in names if PurePosixPath(n).name == "structure.json")
    if pkls and structures:
        return "raw", (pkls, structures[0])
    if len(csvs) == 1:
        return "csv", csvs[0]
    sessions = sorted(n for n in names if is_session_file(n))
    if sessions and not csvs and not pkls:
        return "sessions", sessions
    raise InputError(f"{where}: found neither responses_main.csv (or a single CSV table) nor "
                     f"result_task_*.pkl with structure.json nor study session files (*.json); "
                     f"entries seen: {_few(names)}")


def _read_from_folder(folder: Path, study: dict | None):
    """The trial table, or for session files (table, left out)."""
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    kind, found = _choose_source(names, folder)
    if kind == "csv":
        return _read_csv(folder / found, (folder / found).read_bytes())
    if kind == "sessions":
        return sessions_table({str(folder / n): (folder / n).read_bytes() for n in found}, folder,
                              study)
    pkls, structure = found
    return parse_raw_results({n: (folder / n).read_bytes() for n in pkls},
                             (folder / structure).read_bytes(), folder / structure)


def _read_from_zip(path: Path, study: dict | None):
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            kind, found = _choose_source(names, path)
            if kind == "csv":
                return _read_csv(f"{path}!{found}", archive.read(found))
            if kind == "sessions":
                return sessions_table({f"{path}!{n}": archive.read(n) for n in found}, path,
                                      study)
            pkls, structure = found
            return parse_raw_results({n: archive.read(n) for n in pkls},
                                     archive.read(structure), f"{path}!{structure}")
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{path}: unreadable zip ({err})") from err


def _few(items, k: int = 8) -> str:
    items = list(items)
    more = f" ... ({len(items)} in all)" if len(items) > k else ""
    return ", ".join(map(str, items[:k])) + more or "(none)"


# --- the raw per-experiment form ---------------------------------------------------------------

RAW_RESULT_FIELDS = ("task_id", "raw_responses", "responses", "approved_responses",
                     "rejected_responses")


class _PickledRecord(tuple):
    """Stand-in for any class of the authors' code (e.g. `RepeatedTaskResult`, a namedtuple).

    Unpickling calls `cls(*fields)` (via `__new__`) and may set a state dict: both are kept.
    """

    def __new__(cls, *fields):
        return tuple.__new__(cls, fields)

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


class _ShimUnpickler(pickle.Unpickler):
    """Resolve classes of the authors' (uninstalled) code to `_PickledRecord`, never importing it."""

    SAFE_MODULES = ("builtins", "collections", "copyreg", "datetime", "numpy", "pandas",
                    "_codecs")

    def find_class(self, module, name):
        if module.split(".")[0] in self.SAFE_MODULES:
            return super().find_class(module, name)
        return _PickledRecord


def _as_task_results(obj, source) -> list[dict]:
    """Turn one unpickled object into a list of {task_id, raw_responses} dicts."""
    if isinstance(obj, dict) and "raw_responses" in obj:
        return [obj]
    if isinstance(obj, tuple) and len(obj) >= 2 and isinstance(obj[1], list):
        return [dict(zip(RAW_RESULT_FIELDS, obj))]
    if isinstance(obj, list) and obj:
        return [r for item in obj for r in _as_task_results(item, source)]
    raise InputError(f"{source}: pickle of unknown shape: expected a RepeatedTaskResult "
                     f"(task_id, raw_responses, ...) or a list of them, found {type(obj).__name__}")


def _structure_trials(raw: bytes, source) -> dict[int, list[dict]]:
    """structure.json: {"tasks": [{"index": k, "trials": [{"queries": PATH, "mode": M}, ...]}]}."""
    try:
        tasks = json.loads(raw)["tasks"]
        structure = {int(item["index"]): item["trials"] for item in tasks}
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{source}: expected {{'tasks': [{{'index': k, 'trials': [...]}}]}} "
                         f"({err!r})") from err
    parsed = {}
    for index, trials in structure.items():
        rows = []
        for trial in trials:
            query_path = str(trial["queries"]).rstrip("/")
            parts = query_path.split("/")
            if trial["mode"] == "catch_trial":
                rows.append(dict(mode="catch_trial", model="catch/manual", layer=parts[-3],
                                 channel=parts[-2].split("_")[-1], batch=-1,
                                 query_path=query_path))
            else:
                rows.append(dict(mode=trial["mode"], model=parts[-5], layer=parts[-4],
                                 channel=parts[-3].split("_")[-1],
                                 batch=int(parts[-1].split("_")[-1]), query_path=query_path))
        parsed[index] = rows
    return parsed


def parse_raw_results(pickles: dict[str, bytes], structure_json: bytes, structure_source
                      ) -> pd.DataFrame:
    """Build the trial table from `result_task_*.pkl` contents and `structure.json`."""
    structure = _structure_trials(structure_json, structure_source)
    frames = []
    for name, data in pickles.items():
        try:
            obj = _ShimUnpickler(io.BytesIO(data)).load()
        except Exception as err:  # any unpickling failure is a bad file, said plainly
            raise InputError(f"{name}: cannot be unpickled ({err!r})") from err
        for task in _as_task_results(obj, name):
            task_id = str(task["task_id"])
            task_number = int(task_id.split("-")[-1])
            if task_number not in structure:
                raise InputError(f"{name}: task {task_id} is not in {structure_source}")
            for response_index, response in enumerate(task["raw_responses"] or []):
                if not isinstance(response, dict) or response.get("main_data") is None:
                    continue  # a timed-out assignment has no data
                frame = pd.DataFrame(response["main_data"])
                frame["participant_id"] = response.get("worker_id")
                frame["response_index"] = response_index
                frame["task_id"] = task_id
                frame["task_number"] = task_number
                frame["passed_checks"] = response.get("passed_checks")
                for check, value in (response.get("check_results") or {}).items():
                    frame[f"{check}_result"] = value[0] if isinstance(value, (list, tuple)) else value
                is_demo = frame["is_demo"].astype(bool)
                frame["corrected_trial_index"] = (
                    frame["trial_index"] - frame.loc[~is_demo, "trial_index"].min())
                trials = structure[task_number]
                info = [trials[int(i)] if not demo and 0 <= i < len(trials) else {}
                        for i, demo in zip(frame["corrected_trial_index"], is_demo)]
                if any(not demo and not row for row, demo in zip(info, is_demo)):
                    raise InputError(f"{name}: task {task_id} has more trials than "
                                     f"{structure_source} lists for it")
                frame = pd.concat([frame, pd.DataFrame(info, index=frame.index)], axis=1)
                frames.append(frame)
    if not frames:
        raise InputError(f"{structure_source}: the result pickles hold no responses")
    return pd.concat(frames, ignore_index=True)


# --- normalisation ------------------------------------------------------------------------------

def parse_bool(values: pd.Series, column: str, source, used: pd.Series | None = None
               ) -> pd.Series:
    """Booleans arrive as bools, 'True'/'False' strings or 0/1; missing means False. Only the
    `used` rows are checked (the others read as False); every unreadable value is reported with
    its row (the table's line number, header = line 1) and column."""
    if values.dtype == bool:
        return values
    text = values.astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if used is not None:
        bad &= used
    if bad.any():
        rows = ", ".join(f"line {i + 2}: {values[i]!r}" for i in values.index[bad][:5])
        raise InputError(f"{source}: column '{column}' has {int(bad.sum())} non-boolean "
                         f"value(s) ({rows}{', ...' if bad.sum() > 5 else ''}); write "
                         "True/False or 1/0")
    parsed = text.isin(_TRUE)
    return parsed if used is None else parsed & used


def _number(value) -> float:
    """A number, or NaN for an empty cell."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return float("nan")
    return float(value)


def _per_row(values: pd.Series, parse, column: str, source, expected: str,
             dtype=object) -> pd.Series:
    """Parse every cell; every cell that cannot be read is reported with its line."""
    out, bad = [], []
    for i, value in values.items():
        try:
            out.append(parse(value))
        except (ValueError, SyntaxError, TypeError):
            out.append(None)
            bad.append(f"line {i + 2}: {value!r}")
    if bad:
        raise InputError(f"{source}: column '{column}' has {len(bad)} value(s) that are not "
                         f"{expected} ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})")
    return pd.Series(out, index=values.index, dtype=dtype)


def parse_list(value) -> list:
    """Reference lists arrive as lists or as their string form ("['a.png', 'b.png']")."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return []
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        parsed = ast.literal_eval(value)
    return list(parsed)


def normalise_table(table: pd.DataFrame, source) -> pd.DataFrame:
    """Check required columns and bring types into one form."""
    if table.empty:
        raise InputError(f"{source}: the trial table is empty")
    table = table.copy()
    if "participant_id" not in table and "worker_id" in table:
        table["participant_id"] = table["worker_id"]
    missing = [c for c in REQUIRED_COLUMNS + ("participant_id",) if c not in table]
    if missing:
        hint = " (or 'worker_id')" if "participant_id" in missing else ""
        raise InputError(f"{source}: missing required column(s): {', '.join(missing)}{hint}; "
                         f"columns found: {_few(table.columns, 30)}")
    table = table.reset_index(drop=True)  # row i is line i + 2 of a CSV
    for column in BOOL_COLUMNS:
        if column == "correct":
            table[column] = parse_bool(table[column], column, source, used=~table["is_demo"])
        elif column in table:
            if column == "passed_checks" and table[column].isna().all():
                table = table.drop(columns=column)  # present but empty: compute the checks
                continue
            table[column] = parse_bool(table[column], column, source)
        elif column in ("is_demo", "catch_trial"):
            table[column] = False
    table["catch_trial"] = table["catch_trial"] | (table["mode"].astype(str) == "catch_trial")
    main_rows = ~table["is_demo"] & ~table["catch_trial"]
    for column in LIST_COLUMNS:  # only main trials' images are resolved
        if column in table:
            table[column] = _per_row(table[column].where(main_rows, ""), parse_list, column,
                                     source, "a list of image paths, e.g. ['a.png', 'b.png']")
    for column in NUMBER_COLUMNS:
        if column in table:
            table[column] = _per_row(table[column], _number, column, source, "a number",
                                     dtype=float)
    for column in ("task_id", "participant_id", "model", "layer", "mode"):
        table[column] = table[column].astype(str)
    return table
