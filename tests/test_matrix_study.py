"""`study build --activations MATRIX --images DIR`: a study of a precomputed matrix's units is
the study of the store that `score --activations --save-stimuli` writes for it (the same units,
exemplars and tasks), and a bad matrix is refused before any work. Small: 40 generated PNGs,
5 units, 2 references x 2 batches at 32 px."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from interpscore.cli import main

SMALL = ["--image-size", "32", "--n-refs", "2", "--n-batches", "2"]
STUDY = ["--demo-trials", "2", "--trials-per-task", "6", "--catch-per-task", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """40 PNGs of their own colour, and a matrix over them: 4 random units and a constant one."""
    root = tmp_path_factory.mktemp("matrix")
    rng = np.random.default_rng(0)
    names = [f"img_{i:02d}.png" for i in range(40)]
    (root / "photos").mkdir()
    for name in names:
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        Image.new("RGB", (24, 24), colour).save(root / "photos" / name)
    values = rng.normal(size=(40, 5)).astype(np.float32)
    values[:, 4] = 1.0
    table = pd.DataFrame(values, columns=[f"blk:{j}" for j in range(5)])
    table.insert(0, "image", names[::-1])  # rows in another order than the folder's
    table.to_parquet(root / "acts.parquet")
    return root


def _colour(path):
    return Image.open(path).convert("RGB").getpixel((0, 0))


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_matrix_study_is_the_study_of_its_scored_store(photos, tmp_path, capsys):
    matrix = ["--activations", str(photos / "acts.parquet"), "--images", str(photos / "photos")]
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["score", "--checkpoint", "mis", *matrix, "--model", "mynet", *SMALL, *cache,
                 "--save-stimuli", "--out", str(tmp_path / "scores")]) == 0
    assert main(["study", "build", "--stimuli", str(tmp_path / "scores" / "stimuli"), *STUDY,
                 "--out", str(tmp_path / "from_store")]) == 0
    capsys.readouterr()
    assert main(["study", "build", *matrix, "--model", "mynet", *SMALL, *cache, *STUDY,
                 "--out", str(tmp_path / "from_matrix")]) == 0
    out = capsys.readouterr().out
    assert "1 unit(s) of the matrix left out: constant over the pool" in out
    store, built = _files(tmp_path / "from_store"), _files(tmp_path / "from_matrix")
    assert built == store  # study.json (units, tasks, study id) and every image, byte for byte
    study = json.loads(built["study.json"])
    sha = pd.read_parquet(tmp_path / "scores" / "scores.parquet")["readout_sha256"].iloc[0]
    assert study["units"] == [f"mynet/blk+activations-{sha[:8]}/{j}" for j in range(4)]
    # each unit's most extreme references are the matrix's extreme rows (found here by hand;
    # every photo is one colour, so a reference is known by its colour)
    acts = pd.read_parquet(photos / "acts.parquet").set_index("image")
    for j in range(4):
        for side, extreme in (("max", acts[f"blk:{j}"].idxmax()),
                              ("min", acts[f"blk:{j}"].idxmin())):
            firsts = {_colour(tmp_path / "from_matrix" / name) for name in built
                      if f"/channel_{j}/" in name and name.endswith(f"/{side}_0.png")}
            assert len(firsts) == 2 and _colour(photos / "photos" / extreme) in firsts
    # nothing is left beside the study
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "from_matrix", "from_store",
                                                          "scores"]


@pytest.mark.parametrize("case", ["rows", "nan", "image"])
def test_b_a_bad_matrix_is_refused_before_any_work(photos, tmp_path, capsys, case):
    table = pd.read_parquet(photos / "acts.parquet")
    if case == "rows":
        bad, expected = tmp_path / "short.npy", "39 rows, but the pool (--images) holds 40"
        np.save(bad, table.iloc[:39, 1:].to_numpy())
    elif case == "nan":
        bad, expected = tmp_path / "nan.parquet", "NaN"
        table.iloc[3, 2] = np.nan
        table.to_parquet(bad)
    else:
        bad, expected = tmp_path / "gone.parquet", "not in the pool (--images), e.g. 'gone.png'"
        table.loc[5, "image"] = "gone.png"
        table.to_parquet(bad)
    before = sorted(tmp_path.iterdir())
    code = main(["study", "build", "--activations", str(bad), "--images",
                 str(photos / "photos"), *SMALL, *STUDY, "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "study")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith(f"error: --activations {bad}:") and expected in err
    assert sorted(tmp_path.iterdir()) == before  # nothing written: no study, no store beside it


def test_c_the_store_and_the_matrix_options_go_apart(photos, tmp_path, capsys):
    code = main(["study", "build", "--stimuli", str(tmp_path), "--n-refs", "2",
                 "--out", str(tmp_path / "study")])
    assert code == 2 and capsys.readouterr().err.strip().endswith(
        "error: --n-refs: only with --activations (a stimulus store's exemplars are made "
        "already)")
    code = main(["study", "build", "--activations", str(photos / "acts.parquet"), "--stimuli",
                 str(tmp_path), "--out", str(tmp_path / "study")])
    assert code == 2 and "error: --stimuli: give either --stimuli or --activations" in \
        capsys.readouterr().err
    assert main(["study", "build", "--out", str(tmp_path / "study")]) == 2
    assert "error: --stimuli: required" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


def test_a_unit_too_sparse_for_its_max_side_is_left_out_saying_why(photos, tmp_path, capsys):
    """A ReLU-like unit active on 4 of 40 images cannot fill a max side of 2 x 2 references and
    2 queries: two of those would be arbitrary inactive images. It is not scored, and says so;
    a unit active on 10 images is scored from those 10 only."""
    names = sorted(p.name for p in (photos / "photos").iterdir())
    rng = np.random.default_rng(1)
    values = np.zeros((40, 2), np.float32)
    values[:4, 0] = rng.uniform(1, 2, 4)
    values[:10, 1] = rng.uniform(1, 2, 10)
    table = pd.DataFrame(values, columns=["relu:0", "relu:1"]).assign(image=names)
    table.to_parquet(tmp_path / "sparse.parquet")
    assert main(["score", "--checkpoint", "mis", "--activations", str(tmp_path / "sparse.parquet"),
                 "--images", str(photos / "photos"), "--model", "mynet", *SMALL,
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "scores")]) == 0
    scores = pd.read_parquet(tmp_path / "scores" / "scores.parquet").set_index("channel")
    assert scores.loc[0, "status"].startswith(
        "too sparse: 2 of its 6 max-side images do not activate it (active on 4 of 40 pool images)")
    assert np.isnan(scores.loc[0, "score"]) and scores.loc[1, "status"] == "ok"
    shown = [n for batch in json.loads(scores.loc[1, "exemplars_max"]) for n in batch]
    shown += [a for a, _ in json.loads(scores.loc[1, "queries"])]
    assert len(shown) == 6 and set(shown) <= set(names[:10])
    capsys.readouterr()
    assert main(["study", "build", "--activations", str(tmp_path / "sparse.parquet"), "--images",
                 str(photos / "photos"), "--model", "mynet", *SMALL, *STUDY, "--cache-dir",
                 str(tmp_path / "cache"), "--out", str(tmp_path / "study")]) == 0
    out = capsys.readouterr().out
    assert "1 unit(s) of the matrix left out: too sparse (e.g. 0: 2 of its 6" in out
    (unit,) = json.loads((tmp_path / "study" / "study.json").read_text())["units"]
    assert unit.startswith("mynet/relu") and unit.endswith("/1")  # the active-enough unit only
