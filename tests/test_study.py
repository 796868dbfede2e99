"""The browser study: building it (bad input is refused first), the page in Debian's chromium with
a scripted participant and with jsPsych's simulation, and the sessions read back by `prepare`."""

import json
import re
import socket
import time
from pathlib import Path

import pytest
from study_helpers import QUICK, UNITS, answer_trial, fake_session, fnv1a, make_store

from interpscore.data.dataset import prepare
from interpscore.data.exclusion import ExclusionCriteria, compute_checks
from interpscore.data.layouts import ImageIndex, resolve_trial
from interpscore.data.responses import read_responses
from interpscore.errors import InputError
from interpscore.stimuli.export import export_experiment
from interpscore.study import StudyServer, build_study
from interpscore.study.build import INSTRUCTION_PAGES

STUDIED = UNITS[:3]  # UNITS[3] is left to the practice block
SMALL = dict(units=STUDIED, trials_per_task=4, catch_per_task=1, demo_trials=2,
             enable_buttons_after_ms=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "stimuli")


def _study(out: Path) -> dict:
    return json.loads((out / "study.json").read_text())


def test_a_study_folder_holds_everything_it_shows(store, tmp_path):
    out = build_study(store, tmp_path / "study", **SMALL)
    study = _study(out)
    # 3 units x 2 batches = 6 main trials, at most 4 a task: 2 tasks of 3, each with 1 catch trial
    assert [len(t["trials"]) for t in study["tasks"]] == [4, 4]
    main = [t for task in study["tasks"] for t in task["trials"] if not t["catch_trial"]]
    assert sorted((f"{t['model']}/{t['layer']}/{t['channel']}", t["batch"]) for t in main) == \
        sorted((u, b) for u in STUDIED for b in range(2))
    for task in study["tasks"]:
        catch = [t for t in task["trials"] if t["catch_trial"]]
        assert len(catch) == 1 and catch[0]["mode"] == "catch_trial"
        units_of_task = {t["query_path"] for t in task["trials"] if not t["catch_trial"]}
        assert catch[0]["query_path"] in units_of_task  # it shows one of its task's units
    for trial in main + [t for task in study["tasks"] for t in task["trials"]] + study["demo"]:
        folder = f"images/{trial['query_path']}/"
        queries_shown = trial["catch_trial"] or trial["mode"] == "demo"
        for side in ("min", "max"):
            refs = trial[f"{side}_references"]
            assert sorted(refs) == [f"{folder}{side}_{i}.png" for i in range(9)]
            assert refs[0] == f"{folder}{side}_0.png"  # the most extreme reference first, as IMI
            assert trial[f"{side}_query"] == f"{folder}{side}_{0 if queries_shown else 9}.png"
    # the practice block is on the unit outside the study
    assert {(t["layer"], t["channel"]) for t in study["demo"]} == {("block.2", 7)}
    # every image is there, byte for byte the store's file
    shown = {p for t in main + study["demo"] for p in
             [t["min_query"], t["max_query"], *t["min_references"], *t["max_references"]]}
    for path in shown:
        assert (out / path).read_bytes() == (store / path.removeprefix("images/")).read_bytes()
    # the page loads nothing from elsewhere: every script and style is a file of the folder
    html = (out / "index.html").read_text()
    local = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"vendor/jspsych.min.js", "plugin-imi-2afc.js", "experiment.js"} <= set(local)
    for ref in local:
        assert ref == "data:," or (out / ref).is_file(), ref
    assert (out / "vendor" / "LICENSE").read_text().startswith("The MIT License")
    # the same request builds the same study; another seed another one
    again = build_study(store, tmp_path / "again", **SMALL)
    assert (again / "study.json").read_text() == (out / "study.json").read_text()
    other = build_study(store, tmp_path / "other", seed=1, **SMALL)
    assert _study(other)["study_id"] != study["study_id"]


def test_the_trials_resolve_against_the_study_and_the_store(store, tmp_path):
    out = build_study(store, tmp_path / "study", **SMALL)
    trial = next(t for t in _study(out)["tasks"][0]["trials"] if not t["catch_trial"])
    for root, prefix in ((out, "images/"), (store, "")):
        found = resolve_trial(ImageIndex(root), {**trial, "model_label": trial["model"]})
        assert found.query_max == prefix + trial["max_query"].removeprefix("images/")
        assert found.refs_min == [prefix + p.removeprefix("images/")
                                  for p in trial["min_references"]]


def test_the_exported_experiment_shows_the_same_plan(store, tmp_path):
    """`export-experiment` (IMI's per-task folders) and the study share one plan."""
    exp = export_experiment(store, tmp_path / "exp", units=STUDIED, trials_per_task=4,
                            catch_per_task=1)
    study = _study(build_study(store, tmp_path / "study", **SMALL))
    structure = json.loads((exp / "structure.json").read_text())["tasks"]
    assert len(structure) == len(study["tasks"])
    for k, (exported, shown) in enumerate(zip(structure, study["tasks"]), start=1):
        assert [e["mode"] for e in exported["trials"]] == [t["mode"] for t in shown["trials"]]
        for j, (entry, trial) in enumerate(zip(exported["trials"], shown["trials"]), start=1):
            if trial["mode"] == "natural":
                assert entry["queries"] == trial["query_path"]
            folder = exp / f"task_{k}" / "trials" / f"trial_{j}" / "queries"
            for side in ("min", "max"):
                assert (folder / f"{side}.png").read_bytes() == \
                    (tmp_path / "study" / trial[f"{side}_query"]).read_bytes()


def _broken_store(tmp_path):
    broken = make_store(tmp_path / "broken", units=["toy/l/0"], batches=1)
    (broken / "toy/l/channel_0/natural_images/batch_0/min_9.png").unlink()
    return broken


@pytest.mark.parametrize("change, message", [
    (dict(stimuli="{tmp}/nostore"), "--stimuli .*nostore: no stimulus store"),
    (dict(units=["toy/layer9/0"]), "--units: .*toy/layer9/0.* not in the stimulus store"),
    (dict(units=None, select="uncertain"), "--select uncertain needs --scores"),
    (dict(scores="{tmp}/none.parquet", select="uncertain"), "--scores .*none.parquet: no such"),
    (dict(out_holds_a_file=True), "--out .*already holds files; pass --overwrite"),
    (dict(trials_per_task=0), "--trials-per-task 0: must be at least 1"),
    (dict(demo_trials=9), "--demo-trials 9: the stimulus store has only 8 batches"),
    (dict(max_demo_attempts=0), "--max-demo-attempts 0"),
    (dict(local_save="sometimes"), "--local-save sometimes: unknown"),
    (dict(post_url=None), "--post-url: none given"),
    (dict(completion_url="ftp://x"), "--completion-url ftp://x: must start with https://"),
    (dict(stimuli="{broken}", units=None, demo_trials=0), "--stimuli: .*batch_0 is incomplete"),
])
def test_bad_input_is_refused_before_anything_is_written(store, tmp_path, change, message):
    out = tmp_path / "study"
    if change.pop("out_holds_a_file", False):
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    args = {**SMALL, "stimuli": store, **change}
    for key in ("stimuli", "scores"):
        if isinstance(args.get(key), str):
            args[key] = args[key].format(tmp=tmp_path, broken=_broken_store(tmp_path)
                                         if "{broken}" in args[key] else "")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError, match=message):
        build_study(out=out, **args)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no study, no temporary folder
    if out.exists():
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_session_files_are_read_and_bad_ones_named(store, tmp_path):
    out = build_study(store, tmp_path / "study", **SMALL)
    study = _study(out)
    results = tmp_path / "results"
    results.mkdir()
    session = fake_session(study, task=2, participant="p7")
    (results / "p7_task_2_x.json").write_text(json.dumps(session))
    (results / ".p7_task_2_y.json.123.tmp").write_text("{half a sess")  # a killed writer's
    table = read_responses(results)
    shown = [t for t in session["trials"] if t["trial_type"] == "imi-2afc"]
    assert table["max_query"].tolist() == [t["max_query"] for t in shown]
    assert table["choice"].tolist() == [t["choice"] for t in shown]
    assert table["correct"].tolist() == [t["correct"] for t in shown]
    assert set(table["task_id"]) == {"task_2"} and set(table["participant_id"]) == {"p7"}
    assert table["instruction_time_s"].tolist() == [20.0] * len(shown)
    assert table["demo_attempts"].tolist() == [0] * len(shown)
    assert set(table["source"]) == {"human"}
    assert len(prepare(results, tmp_path / "prep", images=out, criteria=QUICK).trials) == 3
    # a second session of the same participant and task (a reloaded page) flags the participant
    (results / "p7_task_2_z.json").write_text(json.dumps({**session, "session_id": "cd" * 16}))
    with pytest.raises(InputError, match=r"(?s)no valid main trials.*multi-participation "
                                         r"workers \| 1 \| 6 \|"):
        prepare(results, tmp_path / "prep2", images=out, criteria=QUICK)
    (results / "p7_task_2_z.json").unlink()
    # a file that is not a session, and a mix of simulated and real sessions, are named
    (results / "notes.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="notes.json: not a session of a study page: format"):
        read_responses(results)
    (results / "notes.json").write_text(json.dumps(
        fake_session(study, participant="bot", session_id="ef" * 16, simulated=True)))
    with pytest.raises(InputError, match="both simulated and real sessions"):
        read_responses(results)


def test_prepare_leaves_out_sessions_of_another_study_and_says_which(store, tmp_path):
    out = build_study(store, tmp_path / "study", **SMALL)
    other = _study(build_study(store, tmp_path / "other", seed=1, **SMALL))
    study = _study(out)
    results = tmp_path / "results"
    results.mkdir()
    own = fake_session(study, task=2, participant="p7")
    (results / "own.json").write_text(json.dumps(own))
    foreign = {  # file: what the report must say about it
        "other_study.json": (fake_session(other, participant="o1"), "study_id: "),
        "no_such_task.json": ({**fake_session(study, participant="o2"), "task_id": "task_9"},
                              "task_id: task_9 is not a task of this study"),
        "task_2_as_task_1.json": ({**fake_session(study, task=2, participant="o3"),
                                   "task_id": "task_1"}, "is not trial 1 of task_1"),
    }
    for name, (session, _) in foreign.items():
        (results / name).write_text(json.dumps(session))
    prepared = prepare(results, tmp_path / "prep", images=out, criteria=QUICK)
    # 4 trials a task, one of them a catch trial: 3 main trials in each left-out session
    assert prepared.report.rows[0] == {"criterion": "sessions not of this study (left out)",
                                       "responses": 3, "main_trials": 9}
    assert prepared.report.rows[1]["responses"] == 1  # all responses: p7's only
    assert set(prepared.trials["participant_id"]) == {"p7"} and len(prepared.trials) == 3
    note = next(n for n in prepared.report.notes if n.startswith("Left out 3 session file(s)"))
    assert study["study_id"] in note
    for name, (_, why) in foreign.items():
        assert f"{results / name}: " in note and why in note.split(f"{results / name}: ")[1]
    assert "own.json" not in note
    assert "sessions not of this study (left out) | 3 | 9" in \
        (tmp_path / "prep" / "README.md").read_text()
    # without the study, no session counts: which ones are its own is not known
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "own.json").write_text(json.dumps(own))
    for images, where in ((None, "--images (none)"), (store, f"--images {store}")):
        with pytest.raises(InputError, match=re.escape(where) + ": .*holds sessions of a browser "
                                             "study.*give its folder"):
            prepare(alone, tmp_path / "prep2", images=images, criteria=QUICK)
    assert not (tmp_path / "prep2").exists()
    # nor are sessions of two studies read as one
    for read in (read_responses, lambda r: prepare(r, tmp_path / "prep2", criteria=QUICK)):
        with pytest.raises(InputError, match="holds sessions of 2 studies .*--images STUDY"):
            read(results)
    # a folder with none of the study's sessions is refused, naming why
    (results / "own.json").unlink()
    with pytest.raises(InputError, match="none of its 3 session files is a session of study "
                                         f"{study['study_id']}"):
        prepare(results, tmp_path / "prep3", images=out, criteria=QUICK)


# --- the page in a real browser ------------------------------------------------------------------

@pytest.fixture
def served(store, tmp_path):
    """A built study and its server (any free port): (study folder, study.json, server, results)."""
    def serve(**options):
        out = build_study(store, tmp_path / "study", **{**SMALL, **options})
        server = StudyServer(out, tmp_path / "results", port=0).start()
        started.append(server)
        return out, _study(out), server, tmp_path / "results"
    started = []
    yield serve
    for server in started:
        server.stop()


def test_a_scripted_participant_is_read_back_exactly(served, browser_page, tmp_path):
    out, study, server, results = served()
    page, errors = browser_page
    page.goto(server.url + "?PROLIFIC_PID=scripted01&task=2")
    page.get_by_role("button", name="I agree").wait_for()
    time.sleep(0.4)  # reading the consent page
    page.get_by_role("button", name="I agree").click()
    for _ in INSTRUCTION_PAGES:
        page.click("#jspsych-instructions-next")
    # practice: one wrong answer, so the block is repeated; then both right
    demo = study["demo"]
    practice = [answer_trial(page, demo, "practice 1 of 2", False, 1),
                answer_trial(page, demo, "practice 2 of 2", True, 2)]
    page.get_by_role("button", name="Repeat the practice").click()
    practice += [answer_trial(page, demo, "practice 1 of 2", True, 3),
                 answer_trial(page, demo, "practice 2 of 2", True, 3)]
    page.get_by_role("button", name="Start").click()
    task = study["tasks"][1]["trials"]
    plan = [(True, 3), (False, 2), (True, 1), (False, 3)]
    given = []
    for i, (correct, confidence) in enumerate(plan, start=1):
        shown = task[i - 1]
        correct = correct or shown["catch_trial"]  # catch trials are answered right
        given.append({**answer_trial(page, task, f"{i} of 4", correct, confidence),
                      "correct": correct, "confidence": confidence})
    page.wait_for_selector('body[data-study-state="sent"]')
    assert errors == []

    (saved,) = results.iterdir()
    session = json.loads(saved.read_text())
    assert re.fullmatch(r"scripted01_task_2_[0-9a-f]{32}\.json", saved.name)
    assert (session["participant_id"], session["id_source"], session["task_id"],
            session["simulated"], session["completed"]) == \
        ("scripted01", "PROLIFIC_PID", "task_2", False, True)
    table = read_responses(results)
    demo_rows = table[table["is_demo"]]
    assert demo_rows["demo_attempt"].tolist() == [1, 1, 2, 2]
    assert demo_rows["correct"].tolist() == [False, True, True, True]
    assert demo_rows["button_pressed"].tolist() == [p["button"] for p in practice]
    assert set(table["demo_attempts"]) == {2}
    assert table["instruction_time_s"].iloc[0] >= 0.4
    main = table[~table["is_demo"]]
    assert main["max_query"].tolist() == [g["trial"]["max_query"] for g in given]  # in order
    assert main["catch_trial"].tolist() == [g["trial"]["catch_trial"] for g in given]
    for column, key in (("choice", "choice"), ("correct", "correct"),
                        ("confidence", "confidence"), ("button_pressed", "button")):
        assert main[column].tolist() == [g[key] for g in given], column
    assert main["time_elapsed"].is_monotonic_increasing
    checks, _ = compute_checks(table, QUICK)
    assert checks.loc[:, ["instruction_time", "demo_attempts", "catch_trials"]].all(axis=None)

    prepared = prepare(results, tmp_path / "prep", images=out, criteria=QUICK)
    valid = [g for g in given if not g["trial"]["catch_trial"]]
    trials = prepared.trials.set_index("max_query").loc[[g["trial"]["max_query"] for g in valid]]
    assert trials["correct"].tolist() == [g["correct"] for g in valid]
    assert trials["confidence"].tolist() == [g["confidence"] for g in valid]
    assert trials["unit_id"].tolist() == [f"{g['trial']['model']}/{g['trial']['layer']}/"
                                          f"{g['trial']['channel']}" for g in valid]
    assert trials["batch"].tolist() == [g["trial"]["batch"] for g in valid]
    assert trials["query_max"].tolist() == [g["trial"]["max_query"] for g in valid]  # resolved
    assert prepared.source == "human"


def test_declining_and_failing_the_practice(served, browser_page):
    out, study, server, results = served(max_demo_attempts=1)
    page, errors = browser_page
    page.goto(server.url + "?workerId=W1")
    page.get_by_role("button", name="I do not agree").click()
    page.wait_for_selector('body[data-study-state="declined"]')
    assert not results.exists() or list(results.iterdir()) == []  # no consent, no data
    page.goto(server.url + "?workerId=W2&task=1")
    page.get_by_role("button", name="I agree").click()
    for _ in INSTRUCTION_PAGES:
        page.click("#jspsych-instructions-next")
    answer_trial(page, study["demo"], "practice 1 of 2", False, 2)
    answer_trial(page, study["demo"], "practice 2 of 2", True, 2)
    page.wait_for_selector('body[data-study-state="sent"]')  # no second attempt, no main trials
    assert "the study ends here" in page.inner_text("#study-end")
    table = read_responses(results)
    assert table["is_demo"].all() and len(table) == 2 and set(table["completed"]) == {False}
    with pytest.raises(InputError, match="no valid main trials"):
        prepare(results, out.parent / "prep", images=out, criteria=QUICK)
    page.goto(server.url + "?task=7")
    page.wait_for_selector('body[data-study-state="failed"]')
    assert "has tasks 1 to 2" in page.inner_text("#study")
    assert errors == []


def test_simulated_participants_fill_the_tasks_and_are_prepared(served, browser_page, tmp_path):
    out, study, server, results = served(trials_per_task=3)
    page, errors = browser_page
    ids = [f"sim{i:02d}" for i in range(12)]
    start = time.perf_counter()
    for pid in ids:
        page.goto(server.url + f"?simulate=data-only&sim_p_correct=0.75&PROLIFIC_PID={pid}")
        page.wait_for_selector('body[data-study-state="sent"]')
    seconds = time.perf_counter() - start
    assert errors == [] and seconds < 30
    sessions = [json.loads(p.read_text()) for p in results.iterdir()]
    assert sorted(s["participant_id"] for s in sessions) == ids
    # the same id always gets the same task: the page's hash of it
    assert {s["participant_id"]: s["task_id"] for s in sessions} == \
        {pid: f"task_{fnv1a(pid) % 2 + 1}" for pid in ids}
    assert all(s["simulated"] for s in sessions)
    table = read_responses(results)
    assert table.loc[table["catch_trial"] | table["is_demo"], "correct"].all()  # shown queries
    prepared = prepare(results, tmp_path / "prep", images=out,
                       criteria=ExclusionCriteria(min_total_time_s=0, min_instruction_time_s=0,
                                                  min_presses_per_row=0))
    assert prepared.source == "simulated"
    assert "Simulated IMI (not human data)" in (tmp_path / "prep" / "README.md").read_text()
    # each unit has one answer per batch from every session of the task that shows it
    expected = {}
    for s in sessions:
        task = study["tasks"][int(s["task_id"].split("_")[1]) - 1]
        for t in task["trials"]:
            if not t["catch_trial"]:
                unit = f"{t['model']}/{t['layer']}/{t['channel']}"
                expected[unit] = expected.get(unit, 0) + 1
    assert prepared.units.set_index("unit_id")["n_trials"].to_dict() == expected


def test_a_failed_upload_is_saved_in_the_browser(served, browser_page, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on: the study's server is down
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    out, study, server, results = served(post_url=f"http://127.0.0.1:{closed}/results")
    page, errors = browser_page
    with page.expect_download(timeout=20000) as download:
        page.goto(server.url + "?simulate=data-only&PROLIFIC_PID=offline1")
    page.wait_for_selector('body[data-study-state="saved"]')
    saved = tmp_path / "downloads"
    saved.mkdir()
    download.value.save_as(saved / download.value.suggested_filename)
    assert re.fullmatch(r"offline1_task_\d_[0-9a-f]{32}\.json", download.value.suggested_filename)
    assert not results.exists() or list(results.iterdir()) == []
    assert download.value.suggested_filename in page.inner_text("#study-end")
    table = read_responses(saved)
    assert set(table["participant_id"]) == {"offline1"} and (~table["is_demo"]).sum() == 4
    assert [e for e in errors if "ERR_CONNECTION_REFUSED" not in e] == []
