import json
import pickle
import sys
import types
import zipfile
from collections import namedtuple

import datasets
import pandas as pd
import pytest

from imi_table import GOOD_CORRECT, N_GOOD, UNITS, build_table, expected_his
from interpscore.cli import main
from interpscore.data.dataset import SplitOptions, prepare
from interpscore.errors import InputError
from interpscore.data.responses import read_responses


@pytest.fixture
def table_csv(tmp_path):
    path = tmp_path / "responses_main.csv"
    build_table().to_csv(path, index=False)
    return path


def _his(units):
    return {(m + ("" if d == "easy" else f"_{d}"), l, c): h for m, l, c, d, h in
            units[["model", "layer", "channel", "difficulty", "his"]].itertuples(index=False)}


def test_prepare_csv_scores_units_and_excludes_careless(table_csv, tmp_path):
    result = prepare(table_csv, tmp_path / "ds")
    assert _his(result.units) == pytest.approx(expected_his())
    rows = {r["criterion"]: r for r in result.report.rows}
    for criterion in ("catch_trials", "instruction_time", "row_variability", "demo_attempts"):
        assert rows[criterion]["responses"] == 1, criterion
    assert rows["total_time"]["responses"] == 2  # one too fast, one too slow
    assert rows["multi-participation workers"]["responses"] == 1
    assert rows["valid"]["main_trials"] == N_GOOD * len(UNITS)
    assert set(result.trials["participant_id"]) == {f"good{p}" for p in range(N_GOOD)}

    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    units = loaded["units"].to_pandas()
    trials = loaded["trials"].to_pandas()
    assert len(trials) == N_GOOD * len(UNITS)
    assert trials["channel"].dtype.kind == "i" and trials["correct"].dtype == bool
    assert set(units["difficulty"]) == {"easy", "hard95"}
    assert set(units["model"]) == {"resnet50", "googlenet"}  # the suffix became a difficulty
    hard = units[units["difficulty"] == "hard95"].iloc[0]
    assert hard["n_trials"] == N_GOOD and hard["n_correct"] == GOOD_CORRECT[2]
    assert (units["his_ci_low"] <= units["his"]).all() and (units["his"] <= units["his_ci_high"]).all()
    # the easy and hard rows of one unit always share a split
    assert units.groupby("unit_id")["split"].nunique().max() == 1
    assert set(units["fold"]) == {0, 1}
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "source: human" in card and "catch_trials" in card


def test_layer_depth_from_architecture(table_csv, tmp_path):
    units = prepare(table_csv, tmp_path / "ds").units.set_index(["model", "layer", "difficulty"])
    early = units.loc[("resnet50", "layer1.0.conv1", "easy"), "layer_depth"]
    late = units.loc[("resnet50", "layer3.2.conv2", "easy"), "layer_depth"]
    assert 0 < early < late < 1


def test_splits_are_seeded_and_disjoint(tmp_path):
    rows = []
    table = build_table()
    main = table[(table["is_demo"] == "False") & (table["catch_trial"] == "False")]
    for k in range(40):  # many units so that every split gets some
        rows.append(main.assign(channel=str(100 + k)))
    big = pd.concat([table] + rows)
    path = tmp_path / "r.csv"
    big.to_csv(path, index=False)
    a = prepare(path, tmp_path / "a", splits=SplitOptions(seed=1)).units
    b = prepare(path, tmp_path / "b", splits=SplitOptions(seed=1)).units
    c = prepare(path, tmp_path / "c", splits=SplitOptions(seed=2)).units
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()
    per_unit = a.groupby("unit_id")["split"].agg(["nunique", "first"])
    assert per_unit["nunique"].max() == 1
    assert set(per_unit["first"]) == {"train", "val", "test"}


def test_table_passed_checks_are_used(tmp_path):
    table = build_table()
    table["passed_checks"] = table["participant_id"].str.startswith("good").map(
        {True: "1", False: "0"})
    table.loc[table["participant_id"] == "good0", "passed_checks"] = "0"
    path = tmp_path / "r.csv"
    table.to_csv(path, index=False)
    result = prepare(path, tmp_path / "ds")
    assert "good0" not in set(result.trials["participant_id"])
    assert any("passed_checks" in note for note in result.report.notes)


def test_prepare_reads_zip(table_csv, tmp_path):
    archive = tmp_path / "human_responses.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(table_csv, "human_responses/responses_main.csv")
    assert _his(prepare(archive, tmp_path / "ds").units) == pytest.approx(expected_his())


def _raw_form(folder, shape="namedtuple"):
    """result_task_*.pkl pickled with a class of a module that is then uninstalled."""
    module = types.ModuleType("tools.mturk.mturk")
    rtr = namedtuple("RepeatedTaskResult", ["task_id", "raw_responses", "responses",
                                            "approved_responses", "rejected_responses"])
    rtr.__module__ = "tools.mturk.mturk"
    module.RepeatedTaskResult = rtr
    sys.modules["tools"], sys.modules["tools.mturk"] = types.ModuleType("tools"), types.ModuleType("tools.mturk")
    sys.modules["tools.mturk.mturk"] = module
    table = build_table()
    structure = {"tasks": []}
    try:
        for task_id, task in table.groupby("task_id", sort=False):
            number = int(task_id.split("-")[-1])
            trials = []
            responses = []
            for worker, rows in task.groupby("participant_id", sort=False):
                main_data = []
                for row in rows.to_dict("records"):
                    is_demo = row["is_demo"] == "True"
                    main_data.append(dict(
                        rt=row["rt"], time_elapsed=row["time_elapsed"], trial_index=row["trial_index"],
                        button_pressed=row["button_pressed"], confidence=row["confidence"],
                        choice=row["choice"], correct=row["correct"] == "True", is_demo=is_demo,
                        catch_trial=row["catch_trial"] == "True", max_query=row["max_query"]))
                    if not is_demo and len(trials) < len(rows) - 2 * 1:
                        if row["mode"] == "catch_trial":
                            trials.append({"queries": "catch/layer_x/channel_1/q", "mode": "catch_trial"})
                        else:
                            trials.append({"queries": f"store/{row['model']}/{row['layer']}/channel_{row['channel']}/natural_images/batch_{row['batch']}",
                                           "mode": row["mode"]})
                responses.append(dict(worker_id=worker, main_data=main_data, raw_data=[],
                                      check_results=None, passed_checks=None))
            structure["tasks"].append({"index": number, "trials": trials})
            result = rtr(task_id, responses, [], [], [])
            obj = [result] if number % 2 else result  # both shapes of the authors' files
            (folder / f"result_task_{number}.pkl").write_bytes(pickle.dumps(obj))
    finally:
        for name in ("tools.mturk.mturk", "tools.mturk", "tools"):
            sys.modules.pop(name)
    (folder / "structure.json").write_text(json.dumps(structure))


def test_raw_pickle_form_without_authors_code(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _raw_form(raw)
    assert "tools.mturk.mturk" not in sys.modules
    table = read_responses(raw)
    assert {"model", "layer", "channel", "batch", "query_path"} <= set(table.columns)
    result = prepare(raw, tmp_path / "ds")
    assert _his(result.units) == pytest.approx(expected_his())


def test_pickle_of_unknown_shape(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "result_task_1.pkl").write_bytes(pickle.dumps({"something": 1}))
    (raw / "structure.json").write_text(json.dumps({"tasks": [{"index": 1, "trials": []}]}))
    with pytest.raises(InputError, match=r"result_task_1\.pkl: pickle of unknown shape"):
        read_responses(raw)


@pytest.mark.parametrize("mutate,message", [
    (lambda t: t.drop(columns=["correct", "layer"]), "missing required column.*layer, correct"),
    (lambda t: t.iloc[0:0], "empty"),
    (lambda t: t.assign(correct="maybe"), "non-boolean"),
])
def test_bad_tables(tmp_path, mutate, message):
    path = tmp_path / "r.csv"
    mutate(build_table()).to_csv(path, index=False)
    with pytest.raises(InputError, match=message) as err:
        prepare(path, tmp_path / "ds")
    assert str(path) in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_unreadable_zip_and_cli_exit_code(tmp_path, capsys):
    bad = tmp_path / "human_responses.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["prepare", "--responses", str(bad), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "zip" in err
    assert not (tmp_path / "ds").exists()


def test_existing_output_is_kept(table_csv, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already holds files"):
        prepare(table_csv, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    prepare(table_csv, out, overwrite=True)  # replaces only what prepare writes
    assert (out / "keep.txt").read_text() == "mine" and (out / "README.md").exists()
    (out / "README.md").write_text("stale")
    prepare(table_csv, out, overwrite=True)
    assert (out / "README.md").read_text() != "stale" and (out / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
