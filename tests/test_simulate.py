import json

import numpy as np

import datasets
import pandas as pd
import pytest
from scipy.stats import spearmanr

from interpscore.cli import main
from interpscore.data.dataset import prepare
from interpscore.simulate.config import SimulationConfig, audiences
from interpscore.simulate.release import simulate
from interpscore.simulate.observers import (RULES, calibrate_sigma, evidence,
                                            p_correct, set_similarity)

TINY = dict(models=["efficientnet_lite0", "test_resnet@random"], units_per_model=10,
            hard={"efficientnet_lite0": ["hard85"]}, pool_size=300, heldout_pool_size=300,
            image_size=64, n_batches=3, responses_per_unit=30, careless_fraction=0.3,
            training_families=["lowlevel-mean", "texture-prototype"],
            heldout_families=["spectral-nearest"])
DEFAULT = "audiences/default"


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "release"
    simulate(out, SimulationConfig(**TINY), progress=False)
    return out


def test_release_has_the_real_formats(tiny_release):
    table = pd.read_csv(tiny_release / DEFAULT / "responses_main.csv")
    for column in ("participant_id", "task_id", "trial_index", "is_demo", "catch_trial", "rt",
                   "time_elapsed", "button_pressed", "confidence", "choice", "correct",
                   "switched_queries", "max_query", "min_query", "max_references",
                   "min_references", "model", "layer", "channel", "mode", "batch"):
        assert column in table, column
    assert "passed_checks" not in table  # left for the parser to compute
    assert table["is_demo"].any() and table["catch_trial"].any()
    assert set(table["source"]) == {"simulated"}
    assert {"efficientnet_lite0", "efficientnet_lite0_hard85", "test_resnet-random"} <= set(table["model"])
    main = table[~table["is_demo"] & ~table["catch_trial"]]
    assert (main["correct"] == (main["choice"] == "b")).all()
    truth = pd.read_csv(tiny_release / DEFAULT / "unit_truth.csv")
    assert truth["true_accuracy"].between(0.3, 1.0).all()
    assert "source: simulated" in (tiny_release / "README.md").read_text()
    # the family behind every answer, only training families in the default audience
    assert set(main["observer_family"]) <= {"lowlevel-mean", "texture-prototype", "careless"}
    assert {"lowlevel-mean", "texture-prototype"} <= set(main["observer_family"])
    batch = tiny_release / "images" / main.iloc[0]["query_path"].split("/images/")[1]
    assert sorted(p.name for p in batch.iterdir())[-1] == "min_9.png"


def test_every_audience_and_the_held_out_pool(tiny_release):
    names = set(audiences(SimulationConfig(**TINY)))
    assert names == {"default", "family-lowlevel-mean", "family-texture-prototype",
                     "family-spectral-nearest", "heldout-pool-default",
                     "heldout-pool-spectral-nearest"}
    assert {p.name for p in (tiny_release / "audiences").iterdir()} == names
    held = pd.read_csv(tiny_release / "audiences/heldout-pool-spectral-nearest/responses_main.csv")
    held = held[~held["is_demo"] & ~held["catch_trial"]]
    assert set(held["observer_family"]) <= {"spectral-nearest", "careless"}
    splits = pd.read_csv(tiny_release / DEFAULT / "unit_splits.csv").set_index("unit_id")["split"]
    held_units = set(held["model"].str.replace("_hard85", "") + "/" + held["layer"] + "/"
                     + held["channel"].astype(str))
    assert held_units and all(splits[u] == "test" for u in held_units)  # test units only
    # pool B shares no image with pool A (no source photo either: see the pool test)
    def digests(folder):
        import hashlib
        return {hashlib.md5(p.read_bytes()).hexdigest() for p in (tiny_release / folder / "_pool").glob("*.png")}
    assert not digests("images") & digests("images_heldout_pool")
    calibration = pd.read_csv(tiny_release / "calibration.csv").set_index("audience")
    # every family is calibrated to the target on the trained network (Lite0 here)
    for family in ("lowlevel-mean", "texture-prototype", "spectral-nearest"):
        assert calibration.loc[f"family-{family}", "easy efficientnet_lite0"] == pytest.approx(0.83, abs=0.02)


def test_round_trip_through_prepare(tiny_release, tmp_path):
    result = prepare(tiny_release / DEFAULT / "responses_main.csv", tmp_path / "ds",
                     images=tiny_release / "images")
    assert result.source == "simulated"
    units = datasets.load_from_disk(str(tmp_path / "ds"))["units"].to_pandas()
    assert set(units["difficulty"]) == {"easy", "hard85"}
    assert units["true_accuracy"].notna().all() and units["layer_depth"].between(0, 1).all()
    assert units["act_sparsity"].between(0, 1).all() and (units["act_spatial_contrast"] >= 0).all()
    # 30 responses, 30 % careless participants excluded: about 21 valid
    assert 17 <= units["n_trials"].median() <= 25
    assert spearmanr(units["his"], units["true_accuracy"])[0] > 0.5
    assert "source: simulated" in (tmp_path / "ds" / "README.md").read_text()
    # careless participants are caught: the systematic kinds always, random ones nearly always
    table = pd.read_csv(tiny_release / DEFAULT / "responses_main.csv")
    kinds = table.groupby("participant_id")["simulated_participant"].first()
    valid = set(result.trials["participant_id"])
    for kind in ("too_fast", "one_row", "no_instructions"):
        assert not set(kinds[kinds == kind].index) & valid, kind
    random = set(kinds[kinds == "random"].index)
    assert len(random & valid) <= 0.25 * len(random)
    assert len(set(kinds[kinds == "attentive"].index) & valid) >= 0.8 * (kinds == "attentive").sum()


@pytest.mark.slow
def test_same_seed_same_bytes(tiny_release, tmp_path):
    again = simulate(tmp_path / "again", SimulationConfig(**TINY), progress=False)
    for name in ("default/responses_main.csv", "default/unit_truth.csv",
                 "heldout-pool-spectral-nearest/responses_main.csv"):
        assert (again / "audiences" / name).read_bytes() == (tiny_release / "audiences" / name).read_bytes()
    other = simulate(tmp_path / "other", SimulationConfig(**{**TINY, "seed": 1}), progress=False)
    assert ((other / DEFAULT / "responses_main.csv").read_bytes()
            != (tiny_release / DEFAULT / "responses_main.csv").read_bytes())


def test_noise_calibration_hits_the_target():
    import numpy as np

    evidence = np.random.default_rng(0).normal(1.0, 1.0, 500)
    sigma = calibrate_sigma(evidence, 0.83)
    assert p_correct(evidence, sigma).mean() == pytest.approx(0.83, abs=1e-3)


def test_cli_simulate_refuses_to_overwrite(tiny_release, capsys):
    assert main(["simulate", "--out", str(tiny_release)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert json.loads((tiny_release / "simulation.json").read_text())["units_per_model"] == 10


def test_decision_rules_on_a_hand_made_case():
    """One query, references at distances 1, 2 and 6 on a line: each rule's similarity."""
    q = np.zeros((1, 1))
    refs = np.array([[[1.0], [2.0], [6.0]]])
    expected = {"mean": -3.0, "nearest": -1.0, "prototype": -3.0, "topk": -3.0}
    for rule, value in expected.items():
        assert set_similarity(rule, q, refs)[0] == pytest.approx(value)
    assert set_similarity("single_cue", q, refs, cue=0)[0] == pytest.approx(-3.0)
    # take the best: cue 0 separates the reference sets (cue 1 does not, and is noisy), so
    # a take-the-best participant compares the queries on cue 0 alone
    features = np.array([[0.0, 0.0], [0.0, 9.0], [0.1, -9.0], [3.0, 9.0], [3.1, -9.0]])
    args = (np.array([0]), np.array([3]), np.array([[1, 2]]), np.array([[3, 4]]))
    assert evidence("single_cue", features, *args)[0] == pytest.approx(5.9)
    swapped = features[:, ::-1].copy()  # the same world with the cues renamed
    assert evidence("single_cue", swapped, *args)[0] == pytest.approx(5.9)
    gcm = set_similarity("gcm", q, refs)[0]  # soft maximum: between nearest and mean
    assert -3.0 < gcm < -1.0


def test_rules_disagree_where_they_should():
    """A max set with one exemplar right at the query but the rest far away: the nearest-
    exemplar rule favours it, the mean rule does not."""
    features = np.array([[0.0], [0.0], [5.0], [5.0], [1.0], [1.0], [1.0], [3.0]])
    # query+ = 0, query- = 3; max refs: 1 (=0.0), 2, 3 (=5.0); min refs: 4, 5, 6 (=1.0)
    args = (np.array([0]), np.array([7]), np.array([[1, 2, 3]]), np.array([[4, 5, 6]]))
    assert evidence("nearest", features, *args)[0] > 0 > evidence("mean", features, *args)[0]


def test_held_out_families_see_or_decide_otherwise_than_every_training_family():
    """What the benchmark's held-out families are for: none repeats a training family's
    (features, rule), and they bring a feature space and rules that training never shows."""
    from interpscore.simulate.families import HELDOUT_FAMILIES, TRAINING_FAMILIES

    trained = {(f.features, f.rule) for f in TRAINING_FAMILIES}
    assert not {(f.features, f.rule) for f in HELDOUT_FAMILIES} & trained
    seen = {space for f in TRAINING_FAMILIES for space in f.features}
    assert {space for f in HELDOUT_FAMILIES for space in f.features} - seen
    assert {f.rule for f in HELDOUT_FAMILIES} - {f.rule for f in TRAINING_FAMILIES}


def test_every_rule_decides_and_no_two_alike():
    """Each rule gives finite evidence on random tasks, and each ranks the tasks its own way."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 5))
    tasks = (rng.integers(0, 60, 200), rng.integers(0, 60, 200), rng.integers(0, 60, (200, 9)),
             rng.integers(0, 60, (200, 9)))
    by_rule = {rule: evidence(rule, features, *tasks) for rule in RULES}
    assert all(np.isfinite(e).all() for e in by_rule.values())
    for a in RULES:
        for b in RULES:
            if a < b:
                assert spearmanr(by_rule[a], by_rule[b])[0] < 0.995, (a, b)


def test_a_fresh_tiny_release_is_byte_for_byte_the_recorded_one(tiny_release):
    """The release repeats on every machine (its kernels are pinned: simulate.pinned); a stage
    whose hash moves is named, so a change is seen the day it happens."""
    from record_hashes import RECORDED

    built = json.loads((tiny_release / "simulation.json").read_text())
    recorded = json.loads(RECORDED.read_text())
    assert built["simulator"] == recorded["simulator"], (
        "the simulator's code changed since the hashes were recorded: if its data is meant to "
        "change, run python tests/record_hashes.py")
    moved = [stage for stage, value in recorded["hashes"].items()
             if built["hashes"].get(stage) != value]
    assert not moved, f"stages whose bytes moved: {moved} (libraries then: {recorded['libraries']})"


SYNTHETIC = dict(TINY, models=["efficientnet_lite0"], hard={}, units_per_model=8,
                 synthetic={"efficientnet_lite0": 3},
                 visualization=dict(steps=6, min_steps=6, stop_window=4, units_per_batch=3))


@pytest.mark.slow
def test_a_synthetic_condition_shows_visualisations_with_natural_queries(tmp_path):
    """`synthetic` units of the release get an `optimized` condition: their references are
    feature visualisations written in IMI's store layout, their queries the natural easy ones,
    answered by the same families; prepare reads both modes."""
    release = simulate(tmp_path / "release", SimulationConfig(**SYNTHETIC), progress=False)
    table = pd.read_csv(release / DEFAULT / "responses_main.csv")
    main = table[~table["is_demo"] & ~table["catch_trial"]]
    optimized, natural = main[main["mode"] == "optimized"], main[main["mode"] == "natural"]
    assert optimized[["layer", "channel"]].drop_duplicates().shape[0] == 3
    refs = optimized["max_references"].map(json.loads)
    assert refs.map(lambda r: all("/optimized_images/max_" in p for p in r) and len(r) == 9).all()
    # the same unit's queries in both modes: natural images of the pool
    unit = optimized.iloc[0]
    same = natural[(natural["layer"] == unit["layer"]) & (natural["channel"] == unit["channel"])]
    assert set(optimized.loc[optimized["layer"] == unit["layer"], "max_query"]) <= set(same["max_query"])
    for path in refs.iloc[0]:
        assert (release / "images" / path.split("/images/")[1]).is_file()
    calibration = pd.read_csv(release / "calibration.csv").set_index("audience")
    assert "synthetic efficientnet_lite0" in calibration.columns
    units = prepare(release / DEFAULT / "responses_main.csv", tmp_path / "ds",
                    images=release / "images").units
    assert set(units["mode"]) == {"natural", "optimized"}
    assert (units.groupby("mode")["unit_id"].nunique()["optimized"]) == 3


def test_the_simulator_and_the_study_page_read_the_buttons_alike(tiny_release, browser_page,
                                                                 tmp_path):
    """The buttons the simulator pressed, pushed through the study's plugin in Chromium, read
    back as the confidence and choice the simulator wrote."""
    import shutil

    from interpscore.protocol import IMI
    from interpscore.resources import package_file

    table = pd.read_csv(tiny_release / DEFAULT / "responses_main.csv")
    written = table[["button_pressed", "switched_queries", "confidence", "choice"]]
    written = written.drop_duplicates().sort_values(["button_pressed", "switched_queries"])
    assert len(written) == 12  # each of 6 buttons with and without switched queries, one reading
    assets = package_file("study", "assets")
    shutil.copytree(assets / "vendor", tmp_path / "vendor")
    shutil.copyfile(assets / "plugin-imi-2afc.js", tmp_path / "plugin-imi-2afc.js")
    (tmp_path / "page.html").write_text(
        '<!doctype html><script src="vendor/jspsych.min.js"></script>'
        '<script src="plugin-imi-2afc.js"></script><div id="study"></div>')
    page, errors = browser_page
    page.goto((tmp_path / "page.html").as_uri())
    pushed = [{"button_pressed": int(b), "switched_queries": bool(s)}
              for b, s in zip(written["button_pressed"], written["switched_queries"])]
    read = page.evaluate("""async ([pushed, buttons]) => {
        const jsPsych = initJsPsych({display_element: "study"});
        const trials = pushed.map((data) => ({
          type: jsPsychImi2afc, min_query: "min.png", max_query: "max.png",
          min_references: ["a.png"], max_references: ["b.png"], buttons: buttons,
          feedback: false, simulation_options: {data: data}}));
        await jsPsych.simulate(trials, "data-only");
        return jsPsych.data.get().values().map((t) => [t.confidence, t.choice]);
    }""", [pushed, IMI.to_json()["buttons"]])
    assert not errors
    assert read == [[int(c), ch] for c, ch in zip(written["confidence"], written["choice"])]
