import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from interpscore.cli import main
from interpscore.errors import InputError
from interpscore.leaderboard import entries as board
from interpscore.leaderboard.render import render
from interpscore.leaderboard.scoring import score_entries
from interpscore.resources import package_file

CONFIGS = package_file("configs")
BOARD = ROOT / "leaderboard"  # the project's own leaderboard
HELD = "heldout-pool-spectral-nearest"  # the debug config's held-out family, on pool B
META = dict(method="test method", authors=["A. Tester"], link=None, code=None,
            training_data={"dataset": "debug", "split": "train"},
            flags={"extra_human_data": False, "uses_test_labels": False})


@pytest.fixture(scope="module")
def tiny_board(debug_run, tmp_path_factory):
    """A leaderboard over the debug dataset: the trained checkpoint, MIS and a constant."""
    from interpscore.data.dataset import load_prepared
    from interpscore.simulate.release import simulated_dataset_dir

    base, run, _, _ = debug_run
    simulation = yaml.safe_load((CONFIGS / "debug.yaml").read_text())["data"]["simulation"]
    root = tmp_path_factory.mktemp("board")
    (root / "submissions").mkdir()
    (root / "tracks").mkdir()
    units = load_prepared(simulated_dataset_dir(simulation, base / "data"))["units"].to_pandas()
    units[units["split"] == "test"][board.KEYS].to_csv(root / "tracks" / "debug-v1.csv", index=False)
    held = load_prepared(simulated_dataset_dir(simulation, base / "data", HELD))["units"].to_pandas()
    held[board.KEYS].to_csv(root / "tracks" / "debug-v2.csv", index=False)
    (root / "tracks.yaml").write_text(yaml.safe_dump({"tracks": {
        "debug-v1": {"title": "Debug", "description": "tiny", "dataset": "simulated",
                     "simulation": simulation, "units": "tracks/debug-v1.csv"},
        "debug-v2": {"title": "Debug held out", "description": "held-out observers and pool",
                     "dataset": "simulated", "simulation": simulation, "audiences": [HELD],
                     "fit_audience": "default", "measure": "within",
                     "units": "tracks/debug-v2.csv"},
        "imi-v1": {"title": "IMI", "description": "human", "dataset": "imi",
                   "units": "tracks/imi-v1.csv"}}}))
    common = ["--root", str(root), "--data-root", str(base / "data")]
    for name, source in (("trained", ["--checkpoint", str(run / "best.ckpt")]),
                         ("mis", ["--baseline", "mis"]), ("constant", ["--baseline", "constant"])):
        meta = root / f"{name}.meta.yaml"
        # the constant reads no embeddings: an entry may say so (backbone: none)
        extra = {} if name == "trained" else {
            "backbone": "none" if name == "constant" else "efficientnet_lite0", "trainable_parameters": 1}
        meta.write_text(yaml.safe_dump({"id": name, **META, **extra}))
        assert main(["leaderboard", "submit", "--meta", str(meta), *source, *common,
                     "--cache-dir", str(base / "cache")]) == 0
    assert main(["leaderboard", "score", "--n-boot", "200", *common]) == 0
    assert main(["leaderboard", "render", "--root", str(root)]) == 0
    return root, base, run


def test_committed_entries_validate_and_the_page_is_fresh(tmp_path):
    problems = board.validate_all(root=BOARD)
    assert not problems, problems.items
    assert len(list((BOARD / "submissions").glob("*.yaml"))) >= 4
    render(BOARD, tmp_path)
    for name in ("README.md", "index.html"):
        assert (tmp_path / name).read_text() == (BOARD / name).read_text(), (
            f"leaderboard/{name} is stale: run `interpscore leaderboard render`")


def _debug_units(base, audience=None) -> pd.DataFrame:
    from interpscore.data.dataset import load_prepared
    from interpscore.simulate.release import simulated_dataset_dir

    simulation = yaml.safe_load((CONFIGS / "debug.yaml").read_text())["data"]["simulation"]
    dataset = simulated_dataset_dir(simulation, base / "data", *([audience] if audience else []))
    return load_prepared(dataset)["units"].to_pandas()


def _submitted(root, entry, track, units):
    predicted = pd.read_csv(root / "submissions" / f"{entry}.{track}.csv", dtype={"unit_id": str})
    merged = units.merge(predicted, on=board.KEYS, validate="1:1")
    assert len(merged) == len(units)
    return merged["predicted"].to_numpy(float), merged["his"].to_numpy(float), merged


def test_made_entries_validate_and_scores_are_the_statistics_of_their_predictions(tiny_board):
    """The numbers the leaderboard writes are scipy's and numpy's for the submitted predictions
    against the track's measured HIS; on simulated data the ceiling is the recorded true
    accuracy's Spearman with the measured HIS; and the trained entry's Spearman is the one
    training recorded for its checkpoint on the same test units."""
    from scipy.stats import pearsonr, spearmanr

    root, base, run = tiny_board
    assert not board.validate_all(root=root)
    units = _debug_units(base)
    test = units[units["split"] == "test"]
    ceiling = spearmanr(test["true_accuracy"], test["his"])[0]
    for entry in ("trained", "mis", "constant"):
        result = json.loads((root / "results" / f"{entry}.json").read_text())["debug-v1"]
        predicted, measured, _ = _submitted(root, entry, "debug-v1", test)
        assert result["n_units"] == len(test) > 3
        assert result["mae"] == pytest.approx(np.abs(predicted - measured).mean(), abs=1e-9)
        assert result["ceiling"] == pytest.approx(ceiling, abs=1e-9)
        if entry == "constant":  # a constant ranks nothing: no Spearman (null in the JSON)
            assert np.ptp(predicted) == 0 and result["spearman"] is None
            continue
        expected = spearmanr(predicted, measured)[0]
        assert result["spearman"] == pytest.approx(expected, abs=1e-9)
        assert result["pearson"] == pytest.approx(pearsonr(predicted, measured)[0], abs=1e-6)
        assert result["fraction_of_ceiling"] == pytest.approx(expected / ceiling, abs=1e-9)
    trained = json.loads((root / "results" / "trained.json").read_text())
    recorded = json.loads((run / "metrics.json").read_text())["predictors"]["trained"]
    assert trained["debug-v1"]["spearman"] == pytest.approx(recorded["spearman"], abs=1e-9)
    assert trained.get("imi-v1") is None  # no prediction for a track whose data is not at hand


def test_an_entry_cannot_predict_units_its_checkpoint_saw(tiny_board):
    from interpscore.data.dataset import load_prepared
    from interpscore.evaluation.harness import predict_units
    from interpscore.metric.checkpoint import load_checkpoint
    from interpscore.simulate.release import simulated_dataset_dir

    _, base, run = tiny_board
    simulation = yaml.safe_load((CONFIGS / "debug.yaml").read_text())["data"]["simulation"]
    dataset = simulated_dataset_dir(simulation, base / "data")
    units = load_prepared(dataset)["units"].to_pandas()
    seen = load_checkpoint(run / "best.ckpt").seen_units
    assert seen == set(units.loc[units["split"] != "test", "unit_id"])  # train and val
    for split in ("train", "val"):
        with pytest.raises(InputError, match="trained or selected on"):
            predict_units(dataset, units[units["split"] == split][board.KEYS],
                          checkpoint=run / "best.ckpt", cache_dir=base / "cache")


def _within_group_spearman(merged: pd.DataFrame) -> float:
    """The mean over model x difficulty x mode groups of scipy's Spearman inside each, by the
    evaluation's rule: groups of fewer than 3 units or with constant measured HIS are left
    out, a prediction constant inside a group scores 0 there."""
    from scipy.stats import spearmanr

    values = []
    for _, group in merged.groupby(["model", "difficulty", "mode"]):
        if len(group) >= 3 and group["his"].nunique() > 1:
            values.append(0.0 if group["predicted"].nunique() == 1
                          else spearmanr(group["predicted"], group["his"])[0])
    assert values
    return float(np.mean(values))


def test_a_held_out_track_ranks_by_within_group_spearman(tiny_board):
    """Entries predict units they were never fitted on (other observers, other images), and
    the track's number is the within-group Spearman on that dataset."""
    root, base, _ = tiny_board
    units = _debug_units(base, HELD)
    for entry in ("trained", "mis"):
        result = json.loads((root / "results" / f"{entry}.json").read_text())["debug-v2"]
        _, _, merged = _submitted(root, entry, "debug-v2", units)
        assert result["n_units"] == len(units)
        assert result["measure"] == "within-group Spearman"
        assert result["spearman"] == pytest.approx(_within_group_spearman(merged), abs=1e-9)
    assert "within-group Spearman [95% CI]" in (root / "README.md").read_text()


def _entry(root, name, meta_changes=None, rows=None):
    """A copy of the trained entry with broken parts."""
    meta = yaml.safe_load((root / "submissions" / "trained.yaml").read_text())
    meta.update(id=name, predictions={"debug-v1": f"{name}.debug-v1.csv"})
    meta.update(meta_changes or {})
    table = pd.read_csv(root / "submissions" / "trained.debug-v1.csv", dtype=str)
    table = rows(table) if rows else table
    table.to_csv(root / "submissions" / f"{name}.debug-v1.csv", index=False)
    path = root / "submissions" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(meta, sort_keys=False))
    return path


@pytest.mark.parametrize("changes,rows,message", [
    ({"trainable_parameters": "12"}, None, r"trainable_parameters: '12' is not of type 'integer'"),
    ({"method": None}, None, r"method: None is not of type 'string'"),
    ({"id": "someone-else"}, None, r"id 'someone-else' must equal the file name"),
    ({"flags": {"extra_human_data": "no", "uses_test_labels": False}}, None, r"flags/extra_human_data"),
    ({"predictions": {"nope-v1": "x.csv"}}, None, r"unknown track 'nope-v1'"),
    (None, lambda t: t.assign(predicted=t["predicted"].where(t.index != 1, "1.5")), r":3: predicted 1.5 is outside \[0, 1\]"),
    (None, lambda t: t.assign(predicted=t["predicted"].where(t.index != 0, "high")), r":2: predicted 'high' is not a number"),
    (None, lambda t: pd.concat([t, t.iloc[[0]]]), r"duplicate unit"),
    (None, lambda t: t.iloc[1:], r"1 test unit\(s\) missing"),
    (None, lambda t: pd.concat([t, t.iloc[[0]].assign(unit_id="x/y/1")]), r"unit x/y/1/.* is not a test unit"),
    (None, lambda t: t.rename(columns={"predicted": "score"}), r":1: columns must be"),
])
def test_broken_entries_are_rejected_with_file_and_line(tiny_board, changes, rows, message, capsys):
    root, _, _ = tiny_board
    path = _entry(root, "broken", changes, rows)
    try:
        assert main(["leaderboard", "validate", str(path), "--root", str(root)]) == 1
        out = capsys.readouterr().out
        assert "broken." in out
        import re

        assert re.search(message, out), out
    finally:
        for p in root.glob("submissions/broken*"):
            p.unlink()


def test_every_problem_is_reported_at_once(tiny_board):
    root, _, _ = tiny_board
    path = _entry(root, "many", {"trainable_parameters": -1, "authors": []},
                  lambda t: t.assign(predicted=t["predicted"].where(t.index != 0, "-0.5")))
    try:
        items = board.validate_entry(path, root).items
        assert len(items) == 3
        assert any(f"{path}:" in item and "authors" in item for item in items)
        with pytest.raises(InputError, match="fix these before scoring"):
            score_entries({}, ["many"], root)
    finally:
        for p in root.glob("submissions/many*"):
            p.unlink()


def test_rendering_is_deterministic_and_ranked(tiny_board, tmp_path):
    root, _, _ = tiny_board
    first = (root / "index.html").read_text()
    render(root, tmp_path)
    assert (tmp_path / "index.html").read_text() == first
    section = (root / "README.md").read_text().split("(`debug-v1`)")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    ranked = [line.split("`")[1] for line in rows]
    scores = {e: json.loads((root / "results" / f"{e}.json").read_text())["debug-v1"]["spearman"]
              for e in ranked}
    assert ranked[-1] == "constant" and scores["constant"] is None  # undefined Spearman last
    defined = [scores[e] for e in ranked if scores[e] is not None]
    assert defined == sorted(defined, reverse=True)


def test_page_in_a_real_browser(tiny_board, browser_page):
    root, _, _ = tiny_board
    page, errors = browser_page
    page.goto((root / "index.html").as_uri())
    rows = page.locator("section#track-debug-v1 table.ranking tbody tr")
    assert page.locator("section#track-debug-v2 th[data-key=spearman]").inner_text() == \
        "within-group Spearman"
    assert rows.count() == 3
    first_ids = [rows.nth(i).get_attribute("data-id") for i in range(3)]
    page.locator("section#track-debug-v1 th[data-key=mae]").click()
    mae_order = [rows.nth(i).get_attribute("data-id") for i in range(3)]
    page.locator("section#track-debug-v1 th[data-key=mae]").click()
    assert [rows.nth(i).get_attribute("data-id") for i in range(3)] == mae_order[::-1]
    maes = {e: json.loads((root / "results" / f"{e}.json").read_text())["debug-v1"]["mae"]
            for e in first_ids}
    assert mae_order == sorted(maes, key=maes.get)
    assert page.locator("section#track-debug-v1 svg.scatter circle").count() > 0
    assert page.locator("section#track-debug-v1 line.ceiling").count() == 1
    assert "Not yet scored" in page.locator("section#track-imi-v1").inner_text()
    assert errors == []


def test_fixing_a_tracks_units_from_a_prepared_dataset(tiny_board, tmp_path, capsys):
    from interpscore.simulate.release import simulated_dataset_dir

    root, base, _ = tiny_board
    simulation = yaml.safe_load((CONFIGS / "debug.yaml").read_text())["data"]["simulation"]
    dataset = simulated_dataset_dir(simulation, base / "data")
    args = ["leaderboard", "fix-track", "--root", str(root), "--track", "imi-v1",
            "--imi-data", str(dataset)]
    assert main(args) == 0
    fixed = pd.read_csv(root / "tracks" / "imi-v1.csv")
    expected = pd.read_csv(root / "tracks" / "debug-v1.csv")
    assert sorted(map(tuple, fixed.to_numpy())) == sorted(map(tuple, expected.to_numpy()))
    assert main(args) == 2  # a fixed list is never silently replaced
    assert "already fixed" in capsys.readouterr().err
    (root / "tracks" / "imi-v1.csv").unlink()
