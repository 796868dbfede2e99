"""Sessions of a browser study (`interpscore.study`): one JSON object per participant session, as
the study page sends it to the study server or saves it in the browser:

    {"format": "interpscore-session/1", "study_id", "session_id", "participant_id", "id_source",
     "task_id": "task_<k>", "simulated", "completed", "started_at", "finished_at",
     "trials": [every jsPsych trial's data, in order]}

The IMI answers are the trials of type `imi-2afc`; the other trials (consent, instructions,
messages) tell how long the instructions were read. `session_problems` is the one rule of what
the page sends, and `not_of_study` the one rule of which sessions belong to a study (its study id,
one of its tasks, that task's trials and the practice trials as the study lists them): the
server refuses anything else, and `prepare` leaves it out and says so. `sessions_table` turns
session files into the trial table `responses.normalise_table` and the exclusion criteria read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from ..errors import InputError
from ..protocol import IMI

SESSION_FORMAT = "interpscore-session/1"
TRIAL_TYPE = "imi-2afc"
INSTRUCTION_PHASE = "instructions"  # consent and instruction pages: their reading time counts
PARTICIPANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
TASK_ID = re.compile(r"task_([0-9]{1,6})")
SESSION_ID = re.compile(r"[0-9a-f]{8,64}")
# Fields of every answer and their types (bool is not an int here).
_ANSWER_FIELDS = {
    "trial_index": int, "time_elapsed": (int, float), "rt": (int, float),
    "button_pressed": int, "switched_queries": bool, "confidence": int, "choice": str,
    "correct": bool, "is_demo": bool, "catch_trial": bool, "min_query": str, "max_query": str,
    "min_references": list, "max_references": list, "model": str, "layer": str, "channel": int,
    "batch": int, "mode": str,
}
# Columns of the trial table taken from each answer as they are.
_ANSWER_COLUMNS = tuple(_ANSWER_FIELDS) + ("query_path", "demo_attempt")
# What an answer records of the trial it showed, as study.json lists that trial.
SHOWN_FIELDS = ("min_query", "max_query", "min_references", "max_references", "catch_trial",
                "mode", "model", "layer", "channel", "batch", "query_path")


def _is(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def _answer_problems(i: int, trial: dict) -> list[str]:
    problems = [f"trials[{i}].{key}: missing or not {getattr(kind, '__name__', 'a number')}"
                for key, kind in _ANSWER_FIELDS.items() if not _is(trial.get(key), kind)]
    if problems:
        return problems
    button, switched = trial["button_pressed"], trial["switched_queries"]
    if not 0 <= button < IMI.n_buttons:
        return [f"trials[{i}].button_pressed: {button} is not 0-{IMI.n_buttons - 1}"]
    choice = IMI.choice(button, switched)
    if (trial["choice"], trial["correct"], trial["confidence"]) != \
            (choice, choice == "b", IMI.confidence(button)):
        return [f"trials[{i}]: choice, correct and confidence do not follow from "
                "button_pressed and switched_queries"]
    if not all(isinstance(p, str) for p in trial["min_references"] + trial["max_references"]):
        return [f"trials[{i}]: references must be image paths"]
    return []


def session_problems(session) -> list[str]:
    """What keeps SESSION from being one the study page sends (empty when nothing does)."""
    if not isinstance(session, dict):
        return [f"a session is a JSON object, not {type(session).__name__}"]
    if session.get("format") != SESSION_FORMAT:
        return [f"format: {session.get('format')!r}, expected {SESSION_FORMAT!r}"]
    problems = []
    for key, pattern in (("participant_id", PARTICIPANT_ID), ("task_id", TASK_ID),
                         ("session_id", SESSION_ID)):
        value = session.get(key)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            problems.append(f"{key}: {str(value)[:80]!r} does not match {pattern.pattern}")
    for key in ("simulated", "completed"):
        if not isinstance(session.get(key), bool):
            problems.append(f"{key}: missing or not true/false")
    trials = session.get("trials")
    if not isinstance(trials, list) or not all(isinstance(t, dict) for t in trials):
        return problems + ["trials: missing or not a list of objects"]
    for i, trial in enumerate(trials):
        if trial.get("trial_type") == TRIAL_TYPE:
            problems += _answer_problems(i, trial)
        if len(problems) > 10:
            break
    if not any(t.get("trial_type") == TRIAL_TYPE for t in trials):
        problems.append(f"trials: none of type {TRIAL_TYPE!r}")
    return problems


def read_study(folder, option: str = "--images") -> dict | None:
    """The study.json of a folder of `study build` (checked for what `not_of_study` reads), or
    None where FOLDER holds no study.json (a stimulus store, IMI's per-task layout)."""
    path = Path(folder) / "study.json"
    if not path.is_file():
        return None
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{option} {folder}: study.json is not JSON ({err}); build the study "
                         "again with `interpscore study build`") from err
    tasks = study.get("tasks") if isinstance(study, dict) else None
    if not (isinstance(study, dict) and isinstance(study.get("study_id"), str)
            and isinstance(study.get("demo"), list) and isinstance(tasks, list)
            and all(isinstance(t, dict) and isinstance(t.get("task_id"), str)
                    and isinstance(t.get("trials"), list) for t in tasks)):
        raise InputError(f"{option} {folder}: study.json is not one of `interpscore study "
                         "build` (it needs study_id, demo and tasks with their trials); build "
                         "the study again")
    return study


def _shown_problems(i: int, answer: dict, shown: dict, what: str) -> list[str]:
    differ = [key for key in SHOWN_FIELDS if answer.get(key) != shown.get(key)]
    return [f"trials[{i}]: is not {what} (differs in {', '.join(differ)})"] if differ else []


def not_of_study(session: dict, study: dict) -> list[str]:
    """Why SESSION (one that `session_problems` accepts) is not one of STUDY's sessions; empty
    when it is. STUDY is its study.json (`read_study`). A session of the study carries its
    study id and one of its tasks, and every answer shows what the page showed in its place:
    the k-th practice answer the practice trial k (the block repeats, at most
    `max_demo_attempts` times), the k-th main answer the task's trial k; a completed session
    answers all of its task's trials. The server refuses any other session, `prepare` leaves
    it out: one rule for both."""
    if session.get("study_id") != study["study_id"]:
        return [f"study_id: {str(session.get('study_id'))[:80]!r} is not this study's "
                f"({study['study_id']!r}): another study's page (or an older build) sent it"]
    tasks = {t["task_id"]: t["trials"] for t in study["tasks"]}
    task_id = session["task_id"]
    if task_id not in tasks:
        return [f"task_id: {task_id} is not a task of this study (it has task_1 to "
                f"task_{len(tasks)})"]
    task, demo = tasks[task_id], study["demo"]
    answers = [(i, t) for i, t in enumerate(session["trials"]) if t.get("trial_type") == TRIAL_TYPE]
    practice = [(i, t) for i, t in answers if t["is_demo"]]
    main = [(i, t) for i, t in answers if not t["is_demo"]]
    problems = []
    # a study built before study.json carried its protocol ran IMI's
    attempts = (study.get("protocol") or {}).get("max_demo_attempts", IMI.max_demo_attempts)
    if practice and (not demo or isinstance(attempts, int) and
                     len(practice) > len(demo) * attempts):
        problems.append(f"trials: {len(practice)} practice answers, more than this study's "
                        f"{len(demo)} practice trials allow")
    else:
        for k, (i, answer) in enumerate(practice):
            problems += _shown_problems(i, answer, demo[k % len(demo)],
                                        f"practice trial {k % len(demo) + 1} of this study")
    if len(main) > len(task):
        problems.append(f"trials: {len(main)} main answers, but {task_id} has {len(task)} trials")
    for k, ((i, answer), shown) in enumerate(zip(main, task)):
        problems += _shown_problems(i, answer, shown, f"trial {k + 1} of {task_id}")
        if len(problems) > 10:
            break
    if session["completed"] and len(main) < len(task):
        problems.append(f"completed: true, but {len(main)} of the {len(task)} trials of "
                        f"{task_id} are answered")
    return problems


@dataclass(frozen=True)
class LeftOut:
    """A session file left out because it is not one of the study's sessions, and why."""

    file: str
    problems: list[str] = field(default_factory=list)
    main_trials: int = 0  # its main answers (neither practice nor catch), as the report counts


def session_file_name(session: dict) -> str:
    """The file of a checked session: unique per participant, task and session."""
    return f"{session['participant_id']}_{session['task_id']}_{session['session_id']}.json"


def is_session_file(name: str) -> bool:
    """A session file among others: a visible `.json` file (temporary files start with '.')."""
    path = PurePosixPath(name)
    return path.suffix.lower() == ".json" and not any(p.startswith(".") for p in path.parts) \
        and path.name not in ("structure.json", "index.json", "study.json")


def _session_rows(session: dict) -> list[dict]:
    trials = session["trials"]
    answers = [t for t in trials if t.get("trial_type") == TRIAL_TYPE]
    demo = [t for t in answers if t["is_demo"]]
    main_indices = [t["trial_index"] for t in answers if not t["is_demo"]]
    first_main = min(main_indices) if main_indices else 0
    per_session = dict(
        participant_id=session["participant_id"], task_id=session["task_id"],
        task_number=int(TASK_ID.fullmatch(session["task_id"])[1]),
        response_index=session["session_id"],  # two sessions of one task are two responses
        session_id=session["session_id"], study_id=session.get("study_id"),
        id_source=session.get("id_source"), completed=session["completed"],
        source="simulated" if session["simulated"] else "human",
        # the IMI checks' inputs, from what the page recorded
        instruction_time_s=sum(t.get("rt") or 0 for t in trials
                               if t.get("phase") == INSTRUCTION_PHASE) / 1000.0,
        demo_attempts=max((t.get("demo_attempt") or 1 for t in demo), default=0),
    )
    rows = []
    for trial in answers:
        row = {key: trial.get(key) for key in _ANSWER_COLUMNS}
        row["corrected_trial_index"] = None if trial["is_demo"] else \
            trial["trial_index"] - first_main
        rows.append({**row, **per_session})
    return rows


def sessions_table(files: dict[str, bytes], where, study: dict | None = None
                   ) -> tuple[pd.DataFrame, list[LeftOut]]:
    """The raw trial table (one row per answer) of session files {name: contents}, and the files
    left out because they are not sessions of STUDY (`not_of_study`). Without a study nothing is
    left out, but sessions of several studies are refused: which one counts is not known."""
    rows, kinds, left_out, studies = [], set(), [], set()
    for name, data in sorted(files.items()):
        try:
            session = json.loads(data)
        except (UnicodeDecodeError, ValueError) as err:
            raise InputError(f"{name}: not JSON ({err})") from err
        problems = session_problems(session)
        if problems:
            raise InputError(f"{name}: not a session of a study page: {'; '.join(problems[:3])}")
        foreign = not_of_study(session, study) if study is not None else []
        if foreign:
            left_out.append(LeftOut(name, foreign, sum(
                t.get("trial_type") == TRIAL_TYPE and not (t["is_demo"] or t["catch_trial"])
                for t in session["trials"])))
            continue
        rows += _session_rows(session)
        kinds.add(session["simulated"])
        studies.add(str(session.get("study_id")))
    if not rows and left_out:
        named = "; ".join(f"{o.file}: {o.problems[0]}" for o in left_out[:3])
        raise InputError(f"{where}: none of its {len(left_out)} session files is a session of "
                         f"study {study['study_id']} ({named}); are these the answers to this "
                         "study (--images)?")
    if not rows:
        raise InputError(f"{where}: no session files (*.json) found")
    if len(studies) > 1:
        raise InputError(f"{where}: holds sessions of {len(studies)} studies "
                         f"({', '.join(sorted(studies))}); give their study folder (`prepare "
                         "--images STUDY`), and only that study's sessions are kept")
    if len(kinds) > 1:
        raise InputError(f"{where}: holds both simulated and real sessions; keep them in "
                         "separate folders so that simulated answers are never taken for people's")
    return pd.DataFrame(rows), left_out
