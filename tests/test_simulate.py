import json

import datasets
import pandas as pd
import pytest
from scipy.stats import spearmanr

from interpscore.cli import main
from interpscore.data.dataset import prepare
from interpscore.simulate.experiment import SimulationConfig, simulate
from interpscore.simulate.observers import calibrate_sigma, p_correct

TINY = dict(models=["efficientnet_lite0", "test_resnet@random"], units_per_model=10,
            hard={"efficientnet_lite0": ["hard85"]}, pool_size=300, image_size=64, n_batches=3,
            responses_per_unit=30, careless_fraction=0.3)


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "release"
    simulate(out, SimulationConfig(**TINY), progress=False)
    return out


def test_release_has_the_real_formats(tiny_release):
    table = pd.read_csv(tiny_release / "responses_main.csv")
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
    truth = pd.read_csv(tiny_release / "unit_truth.csv")
    assert truth["true_accuracy"].between(0.3, 1.0).all()
    assert "source: simulated" in (tiny_release / "README.md").read_text()
    batch = tiny_release / "images" / main.iloc[0]["query_path"].split("/images/")[1]
    assert sorted(p.name for p in batch.iterdir())[-1] == "min_9.png"


def test_round_trip_through_prepare(tiny_release, tmp_path):
    result = prepare(tiny_release / "responses_main.csv", tmp_path / "ds",
                     images=tiny_release / "images")
    assert result.source == "simulated"
    units = datasets.load_from_disk(str(tmp_path / "ds"))["units"].to_pandas()
    assert set(units["difficulty"]) == {"easy", "hard85"}
    assert units["true_accuracy"].notna().all() and units["layer_depth"].between(0, 1).all()
    assert units["act_sparsity"].between(0, 1).all() and (units["act_spatial_contrast"] >= 0).all()
    assert 20 <= units["n_trials"].median() <= 30
    assert spearmanr(units["his"], units["true_accuracy"])[0] > 0.5
    assert "source: simulated" in (tmp_path / "ds" / "README.md").read_text()
    # careless participants are caught: the systematic kinds always, random ones nearly always
    table = pd.read_csv(tiny_release / "responses_main.csv")
    kinds = table.groupby("participant_id")["simulated_participant"].first()
    valid = set(result.trials["participant_id"])
    for kind in ("too_fast", "one_row", "no_instructions"):
        assert not set(kinds[kinds == kind].index) & valid, kind
    random = set(kinds[kinds == "random"].index)
    assert len(random & valid) <= 0.25 * len(random)
    assert len(set(kinds[kinds == "attentive"].index) & valid) >= 0.8 * (kinds == "attentive").sum()


def test_same_seed_same_bytes(tiny_release, tmp_path):
    again = simulate(tmp_path / "again", SimulationConfig(**TINY), progress=False)
    for name in ("responses_main.csv", "unit_truth.csv"):
        assert (again / name).read_bytes() == (tiny_release / name).read_bytes()
    other = simulate(tmp_path / "other", SimulationConfig(**{**TINY, "seed": 1}), progress=False)
    assert (other / "responses_main.csv").read_bytes() != (tiny_release / "responses_main.csv").read_bytes()


def test_noise_calibration_hits_the_target():
    import numpy as np

    evidence = np.random.default_rng(0).normal(1.0, 1.0, 500)
    sigma = calibrate_sigma(evidence, 0.83)
    assert p_correct(evidence, sigma).mean() == pytest.approx(0.83, abs=1e-3)


def test_cli_simulate_refuses_to_overwrite(tiny_release, capsys):
    assert main(["simulate", "--out", str(tiny_release)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert json.loads((tiny_release / "simulation.json").read_text())["units_per_model"] == 10
