"""The IMI exclusion criteria, applied per participant response (one participant doing one task).

Defaults are the paper's: catch trials >= 80 % correct; total time 135-2500 s; instructions
>= 15 s; at least 5 presses in each button row; at most 3 attempts at the practice block;
multi-participation workers dropped; demo and catch trials never count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from ..options import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, PROBABILITY, option
from ..protocol import IMI


@dataclass
class ExclusionCriteria:
    """The paper's criteria; each is an option of `interpscore prepare` (see `options`)."""

    min_catch_accuracy: float = option(
        0.8, "exclude responses below this catch-trial accuracy", PROBABILITY)
    min_total_time_s: float = option(
        135.0, "exclude responses faster than this (seconds)", NON_NEGATIVE,
        flag="--min-total-time")
    max_total_time_s: float = option(
        2500.0, "exclude responses slower than this (seconds)", NON_NEGATIVE,
        flag="--max-total-time")
    min_instruction_time_s: float = option(
        15.0, "exclude responses that read the instructions for less (seconds)", NON_NEGATIVE,
        flag="--min-instruction-time")
    min_presses_per_row: int = option(
        5, "exclude responses with fewer presses in a button row", NON_NEGATIVE_INT)
    max_demo_attempts: int = option(
        IMI.max_demo_attempts, "exclude responses that needed more practice attempts", POSITIVE_INT)
    drop_multi_participation: bool = option(
        True, "keep workers who took part more than once (the paper drops them)",
        flag="--keep-multi-participation", negate=True)
    # Use a `passed_checks` column when the table has one (the authors' own verdict).
    use_table_checks: bool = option(
        True, "ignore the table's passed_checks and compute the checks",
        flag="--recompute-checks", negate=True)

    def __post_init__(self):
        if self.min_total_time_s > self.max_total_time_s:
            raise InputError(f"--min-total-time {self.min_total_time_s:g}: above --max-total-time "
                             f"{self.max_total_time_s:g}; no response could pass")


@dataclass
class ExclusionReport:
    """How many responses and main trials each criterion removed."""

    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    criteria: dict = field(default_factory=dict)

    def add(self, criterion: str, responses: int | str, trials: int) -> None:
        self.rows.append(dict(criterion=criterion, responses=responses, main_trials=trials))

    def table(self) -> str:
        lines = ["| criterion | responses | main trials |", "|---|---:|---:|"]
        lines += [f"| {r['criterion']} | {r['responses']} | {r['main_trials']} |"
                  for r in self.rows]
        return "\n".join(lines + [f"\n{n}" for n in self.notes])


def response_keys(table: pd.DataFrame) -> list[str]:
    keys = ["task_id", "participant_id"]
    return keys + ["response_index"] if "response_index" in table else keys


def is_main_trial(table: pd.DataFrame) -> pd.Series:
    return ~table["is_demo"] & ~table["catch_trial"]


def compute_checks(table: pd.DataFrame, criteria: ExclusionCriteria) -> tuple[pd.DataFrame, list]:
    """Per response, True (passed) / False (failed) / NaN (inputs missing) for each check."""
    keys = response_keys(table)
    groups = table.groupby(keys, sort=False)
    checks = pd.DataFrame(index=groups.size().index)
    skipped = []

    catch = table[table["catch_trial"] & ~table["is_demo"]]
    checks["catch_trials"] = (catch.groupby(keys)["correct"].mean()
                              >= criteria.min_catch_accuracy).reindex(checks.index)

    if "time_elapsed" in table:
        total_s = groups["time_elapsed"].max() / 1000.0
        checks["total_time"] = total_s.between(criteria.min_total_time_s,
                                               criteria.max_total_time_s)
    else:
        skipped.append("total_time (no 'time_elapsed' column)")

    if "instruction_time_s" in table:
        instruction_s = groups["instruction_time_s"].first()
    elif {"time_elapsed", "rt", "trial_index"} <= set(table.columns):
        # The time before the first recorded trial started is the time spent on instructions.
        first = table.sort_values("trial_index").groupby(keys, sort=False).first()
        instruction_s = (first["time_elapsed"] - first["rt"].fillna(0)) / 1000.0
    else:
        instruction_s = None
        skipped.append("instruction_time (needs 'time_elapsed', 'rt', 'trial_index')")
    if instruction_s is not None:
        checks["instruction_time"] = instruction_s >= criteria.min_instruction_time_s

    if "button_pressed" in table:
        answered = table[~table["is_demo"]]
        button = pd.to_numeric(answered["button_pressed"], errors="coerce")
        row = button // IMI.confidence_levels  # 0 the upper row, 1 the lower (Protocol.row)
        upper = (row == 0).groupby([answered[k] for k in keys]).sum()
        lower = (row == 1).groupby([answered[k] for k in keys]).sum()
        checks["row_variability"] = (np.minimum(upper, lower)
                                     >= criteria.min_presses_per_row).reindex(checks.index)
    else:
        skipped.append("row_variability (no 'button_pressed' column)")

    if "demo_attempts" in table:
        checks["demo_attempts"] = groups["demo_attempts"].max() <= criteria.max_demo_attempts
    elif "max_query" in table:
        demo = table[table["is_demo"]]
        per_response = demo.groupby(keys)["max_query"]
        attempts = np.ceil(per_response.size() / per_response.nunique())
        checks["demo_attempts"] = (attempts <= criteria.max_demo_attempts).reindex(checks.index)
    else:
        skipped.append("demo_attempts (needs 'demo_attempts' or demo rows with 'max_query')")
    return checks, skipped


def multi_participation_workers(table: pd.DataFrame) -> set:
    """Workers flagged by the table, or (where it has no flag) seen in more than one response:
    another task, or the same task again (a study page reloaded starts a new session)."""
    if "multi_participation" in table:
        return set(table.loc[table["multi_participation"], "participant_id"])
    responses = table.drop_duplicates(response_keys(table)).groupby("participant_id").size()
    return set(responses[responses > 1].index)


def apply_exclusions(table: pd.DataFrame, criteria: ExclusionCriteria | None = None
                     ) -> tuple[pd.DataFrame, ExclusionReport]:
    """Return the valid main trials and a report of what each criterion removed."""
    criteria = criteria or ExclusionCriteria()
    report = ExclusionReport(criteria=asdict(criteria))
    keys = response_keys(table)
    main = is_main_trial(table)
    trial_counts = table[main].groupby(keys).size()
    n_responses = table.groupby(keys).ngroups
    report.add("all responses / main trials", n_responses, int(main.sum()))
    report.add("demo trials (never count)", "-", int(table["is_demo"].sum()))
    report.add("catch trials (never count)", "-",
               int((table["catch_trial"] & ~table["is_demo"]).sum()))

    if criteria.use_table_checks and "passed_checks" in table:
        passed = table.groupby(keys)["passed_checks"].all()
        report.notes.append("Used the table's own `passed_checks` column for the response checks.")
        for column in sorted(c for c in table.columns if c.endswith("_result")):
            failed = ~table.groupby(keys)[column].first().astype(bool)
            report.add(f"{column[:-len('_result')]} (table)", int(failed.sum()),
                       int(trial_counts.reindex(failed[failed].index).fillna(0).sum()))
        failed = ~passed
        report.add("failed passed_checks", int(failed.sum()),
                   int(trial_counts.reindex(failed[failed].index).fillna(0).sum()))
    else:
        checks, skipped = compute_checks(table, criteria)
        report.notes.append("Computed the response checks from the raw trial columns.")
        if skipped:
            report.notes.append("Not computed (inputs missing): " + "; ".join(skipped) + ".")
        for column in checks.columns:
            failed = checks[column] == False  # noqa: E712 (NaN = not computable = not failed)
            report.add(column, int(failed.sum()),
                       int(trial_counts.reindex(failed[failed].index).fillna(0).sum()))
        passed = ~(checks == False).any(axis=1)  # noqa: E712
        failed = ~passed
        report.add("failed any check", int(failed.sum()),
                   int(trial_counts.reindex(failed[failed].index).fillna(0).sum()))

    response_index = pd.MultiIndex.from_frame(table[keys]) if len(keys) > 1 else table[keys[0]]
    keep = main & passed.reindex(response_index).fillna(False).to_numpy()

    if criteria.drop_multi_participation:
        workers = multi_participation_workers(table)
        multi = table["participant_id"].isin(workers)
        report.add("multi-participation workers", len(workers), int((keep & multi).sum()))
        keep &= ~multi
    valid = table[keep].copy()
    report.add("valid", valid.groupby(keys).ngroups, len(valid))
    return valid, report
