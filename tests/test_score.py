import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from interpscore.cli import main
from interpscore.errors import InputError
from interpscore.data.layouts import ImageIndex, resolve_trial
from interpscore.data.responses import _structure_trials
from interpscore.metric.scorer import load

from conftest import ROOT
SMALL = dict(images="default", pool_size=300, image_size=64, n_refs=4, n_batches=3,
             progress=False)


@pytest.fixture(scope="module")
def scorer(debug_run):
    base, run, _, _ = debug_run
    return load(run / "best.ckpt", cache_dir=base / "cache")


def test_scores_one_row_per_unit_in_range_and_deterministic(scorer):
    first = scorer.score_units("test_resnet@random", units=5, seed=3, **SMALL)
    again = scorer.score_units("test_resnet@random", units=5, seed=3, **SMALL)
    assert len(first) == 5 and first[["layer", "channel"]].drop_duplicates().shape[0] == 5
    ok = first[first["status"] == "ok"]
    assert len(ok) >= 3
    assert ok["score"].between(0, 1).all() and (ok["score_low"] <= ok["score"]).all()
    assert (ok["score"] <= ok["score_high"]).all() and (ok["n_tasks"] == 3).all()
    assert ok["layer_depth"].between(0, 1).all() and ok["act_sparsity"].between(0, 1).all()
    pd.testing.assert_frame_equal(first, again)


def test_units_scored_together_or_alone_get_the_same_scores(scorer):
    together = scorer.score_units("test_resnet@random", units=["layer1.0.conv1:3", "layer2.0.conv2:5",
                                                              "layer1.0:0"], **SMALL)
    alone = scorer.score_units("test_resnet@random", units=["layer2.0.conv2:5"], **SMALL)
    assert together.iloc[1]["score"] == pytest.approx(alone.iloc[0]["score"], abs=1e-6)


@pytest.mark.slow
def test_sharded_pass_over_two_processes_and_resume(scorer, debug_run, tmp_path):
    base, run, _, _ = debug_run
    args = [sys.executable, "-m", "interpscore.cli", "score", "--checkpoint", str(run / "best.ckpt"),
            "--model", "test_resnet@random", "--units", "4", "--pool-size", "300",
            "--image-size", "64", "--n-refs", "4", "--n-batches", "3",
            "--cache-dir", str(base / "cache"), "--out", str(tmp_path / "sharded")]
    ranks = [subprocess.Popen(args + ["--shard", f"{r}/2"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    for process in ranks:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-2000:]
    shards = sorted((tmp_path / "sharded" / "shards").glob("*.pt"))
    assert [p.name for p in shards] == ["activations-0-of-2.pt", "activations-1-of-2.pt"]
    shards[1].unlink()  # an interrupted run: rank 1 never finished
    kept = shards[0].stat().st_mtime_ns
    assert main(args[3:]) == 0  # the merge computes only the missing shard
    assert shards[0].stat().st_mtime_ns == kept and shards[1].exists()
    merged = pd.read_parquet(tmp_path / "sharded" / "scores.parquet")
    single = scorer.score_units("test_resnet@random", units=4, **SMALL)
    # top/bottom ranks are exact under sharding, so easy-query scores match a single pass
    np.testing.assert_allclose(merged["score"], single["score"], atol=1e-6)
    assert (tmp_path / "sharded" / "summary_by_layer.csv").is_file()


def test_scoring_path_does_not_import_lightning(debug_run):
    base, run, _, _ = debug_run
    code = ("import sys, interpscore; s = interpscore.load(sys.argv[1], cache_dir=sys.argv[2]); "
            "s.score_units('test_resnet@random', units=2, pool_size=300, image_size=64, n_refs=4, "
            "n_batches=3, progress=False); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')"
            " or m.startswith('interpscore.train')]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code, str(run / "best.ckpt"), str(base / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


class _HandEmbeddings:
    """Stands in for the backbone's embedding cache: the images' embeddings, written by hand."""

    def __init__(self, rows):
        self.rows = np.asarray(rows, dtype=np.float32)
        self.backbone = SimpleNamespace(stage_dims=(self.rows.shape[1],))

    def embed_images(self, images, progress=True):
        assert len(images) == len(self.rows)
        return self.rows

    embed_files = embed_images


def test_score_a_unit_from_exemplars_you_already_have_is_mis_by_hand():
    """`score_exemplars` with the MIS head on embeddings written by hand: per task
    delta = [s(q+,E+) - s(q+,E-)] - [s(q-,E+) - s(q-,E-)], s the mean cosine similarity of the
    query to the set's members, P = sigmoid(alpha delta); the unit's score is the mean P."""
    from interpscore.metric.checkpoint import LoadedMetric
    from interpscore.metric.heads import MISHead
    from interpscore.metric.scorer import Scorer

    e0, e1, e2 = np.eye(3)
    d = 2 ** -0.5
    rows = [  # per task: q+, q-, E+ (2 images), E- (2 images), in the order they are passed
        e0, 3 * e1, e0, d * (e0 + e2), e1, e2,  # the 3 of 3 e1: cosines ignore the length
        e2, e0, e2, e1, e0, e1]
    # task 1: s(q+,E+) = (1 + 1/sqrt2)/2, s(q+,E-) = 0, s(q-,E+) = 0, s(q-,E-) = (1 + 0)/2
    # task 2: s(q+,E+) = (1 + 0)/2, s(q+,E-) = 0, s(q-,E+) = 0, s(q-,E-) = (1 + 0)/2
    deltas = [(1 + d) / 2 - 0 - (0 - 0.5), 0.5 - 0 - (0 - 0.5)]
    alpha = 2.0
    p = [1 / (1 + math.exp(-alpha * delta)) for delta in deltas]  # 0.9375..., 0.8808...
    scorer = Scorer(LoadedMetric(MISHead(3, alpha=alpha).eval(), {"head": "mis"}, {},
                                 Path("mis"), {}))
    scorer._cache = _HandEmbeddings(rows)
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    result = scorer.score_exemplars([(image, image)] * 2, [[image] * 2] * 2, [[image] * 2] * 2)
    assert result["n_tasks"] == 2
    assert result["score"] == pytest.approx((p[0] + p[1]) / 2, abs=1e-6)
    assert p[1] - 1e-6 <= result["score_low"] <= result["score"] <= result["score_high"] <= p[0] + 1e-6
    # one task alone: its own P, an interval of one value
    scorer._cache = _HandEmbeddings(rows[:6])
    alone = scorer.score_exemplars([("max.png", "min.png")], [["a.png", "b.png"]], [["c.png", "d.png"]])
    assert alone["score"] == pytest.approx(p[0], abs=1e-6) and alone["n_tasks"] == 1
    assert alone["score_low"] == pytest.approx(p[0], abs=1e-6) == alone["score_high"]


def test_export_experiment_is_readable_by_the_prepare_resolver(scorer, tmp_path, capsys):
    out = tmp_path / "scored"
    scorer.score_units("test_resnet@random", units=4, out=out, save_stimuli=True, **SMALL)
    exp = tmp_path / "experiment"
    assert main(["export-experiment", "--stimuli", str(out / "stimuli"), "--out", str(exp),
                 "--scores", str(out / "scores.parquet"), "--select", "uncertain", "-n", "2"]) == 0
    structure = _structure_trials((exp / "structure.json").read_bytes(), exp / "structure.json")
    modes = [t["mode"] for trials in structure.values() for t in trials]
    assert modes.count("natural") == 2 * 3 and "catch_trial" in modes
    index = ImageIndex(exp)
    for k, trials in structure.items():
        for j, _ in enumerate(trials, start=1):
            row = dict(max_query=f"https://host/exp/task_{k}/trials/trial_{j}/queries/max.png",
                       min_query=f"https://host/exp/task_{k}/trials/trial_{j}/queries/min.png",
                       max_references=[], min_references=[], model="m", layer="l", channel=0,
                       mode="natural")
            found = resolve_trial(index, row)
            assert found is not None and len(found.refs_max) == 4


def test_bad_scoring_inputs(scorer, tmp_path, imi_fixtures, capsys):
    with pytest.raises(InputError,
                       match="--layers nope: unknown layer.*layers of interest: .*layer1.0.conv1"):
        scorer.score_units("test_resnet@random", layers=["nope"], **SMALL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        scorer.score_units("test_resnet@random", **{**SMALL, "images": tmp_path / "empty"})
    pool = tmp_path / "pool"
    shutil.copytree(imi_fixtures, pool)
    (pool / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="broken.png"):
        frame = scorer.score_units("test_resnet@random", units=2, out=tmp_path / "o",
                                   **{**SMALL, "images": pool})
    assert len(frame.attrs["skipped_images"]) == 1 and len(frame) == 2
    (tmp_path / "not.ckpt").write_bytes(b"nope")
    assert main(["score", "--checkpoint", str(tmp_path / "not.ckpt"), "--model", "test_resnet@random",
                 "--out", str(tmp_path / "x")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_synthetic_explanations_score_the_same_queries_against_visualisations(scorer):
    """`--explanations natural,synthetic`: a row per unit and explanation; the natural rows are
    the natural-only scores, the synthetic ones score the same queries against the unit's
    feature visualisations, with IMI's check of them."""
    units = ["layer1.0.conv1:3", "layer2.0.conv2:5"]
    natural = scorer.score_units("test_resnet@random", units=units, **SMALL)
    both = scorer.score_units("test_resnet@random", units=units, explanations="natural,synthetic",
                              **SMALL)
    assert sorted(both["explanation"]) == ["natural", "natural", "synthetic", "synthetic"]
    kept = both[both["explanation"] == "natural"].drop(columns="explanation").dropna(axis=1, how="all")
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), natural.drop(
        columns="explanation").dropna(axis=1, how="all").reset_index(drop=True))
    synthetic = both[both["explanation"] == "synthetic"].set_index(["layer", "channel"])
    assert synthetic["score"].between(0, 1).all() and (synthetic["n_tasks"] == 3).all()
    assert synthetic["max_beats_natural"].notna().all()
    assert not np.allclose(synthetic["score"].to_numpy(),
                           natural.set_index(["layer", "channel"]).loc[synthetic.index, "score"])
