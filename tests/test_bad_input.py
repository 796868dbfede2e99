"""Every command on bad input, one table: exit 2, `error: <file or option>: <problem>` on stderr
without a traceback, checked before any work, and the output folder absent afterwards (or, where
it held a user's file before, untouched). Further down: the cases that are not one line of argv
(Ctrl-C, --debug, help texts, real-data tolerance, train.py against `interpscore train`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from imi_table import build_table
from interpscore.cli import build_parser, main
from interpscore.errors import InputError

HOST = "https://example.org/static/experiments"
SMALL_SCORE = ["--image-size", "64", "--n-refs", "4", "--n-batches", "3", "--pool-size", "300"]


@dataclass
class Case:
    id: str
    argv: list[str]  # placeholders: {tmp} {out} {ckpt} {cache} {csv} {fixtures} {board} {debug}
    names: str  # the option or file the message must name (placeholders allowed)
    out_before: bool = False  # OUT holds a user's file before: it must be untouched
    setup: callable = None  # (tmp) -> None, writes what the case needs
    also: list[str] = field(default_factory=list)  # more text the message must hold


_MAIN = build_table()[["is_demo", "catch_trial"]].astype(str).eq("False").all(axis=1)
_FIRST_MAIN = int(_MAIN.idxmax())  # the first main trial's row (the analysis reads its images)


def _table(tmp, mutate):
    mutate(build_table()).to_csv(tmp / "bad.csv", index=False)


def _file(name, text="x"):
    return lambda tmp: (tmp / name).write_text(text)


def _store(tmp):
    from study_helpers import make_store

    make_store(tmp / "store")


def _nan_matrix(tmp):
    """A folder of 3 photos and a matrix over them with a NaN."""
    from PIL import Image

    (tmp / "photos").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp / "photos" / f"{i}.png")
    np.save(tmp / "nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 3.0]], np.float32))


def _folder(name):
    return lambda tmp: (tmp / name).mkdir()


def _state_dict(name, arch="test_resnet"):
    """A saved state dict of a timm architecture (untrained)."""
    def write(tmp):
        import timm
        import torch

        torch.save(timm.create_model(arch, pretrained=False).state_dict(), tmp / name)
    return write


def _tensor(name, shape):
    def write(tmp):
        import torch

        torch.save(torch.ones(shape), tmp / name)
    return write


PREPARE = ["prepare", "--responses", "{csv}", "--out", "{out}"]
SIMULATE = ["simulate", "--out", "{out}"]
EVALUATE = ["evaluate", "--checkpoint", "{ckpt}", "--cache-dir", "{cache}", "--out", "{out}"]
SCORE = ["score", "--checkpoint", "{ckpt}", "--model", "test_resnet@random", "--cache-dir",
         "{cache}", "--out", "{out}"]
STIMULI = ["stimuli", "--model", "test_resnet@random", "--out", "{out}"]
EXPORT = ["export-experiment", "--out", "{out}"]
ZOO = ["zoo", "--checkpoint", "mis", "--models", "test_resnet@random", "--cache-dir", "{cache}",
       "--out", "{out}"]
TRACK = ["track", "--model", "test_resnet", "{tmp}/ckpt.pt", "--cache-dir", "{cache}",
         "--out", "{out}"]
VISUALIZE = ["visualize", "--model", "test_resnet@random", "--out", "{out}"]
BUILD = ["study", "build", "--stimuli", "{tmp}/store", "--out", "{out}"]
SERVE = ["study", "serve", "{tmp}/nostudy", "--results", "{tmp}/answers"]
BOARD = ["leaderboard"]
TRAIN = ["train", "{debug}"]

CASES = [
    # prepare
    Case("prepare-missing-responses", ["prepare", "--responses", "{tmp}/nope.csv", "--out", "{out}"],
         "--responses {tmp}/nope.csv"),
    Case("prepare-val-fraction-2", PREPARE + ["--val-fraction", "2"], "--val-fraction"),
    Case("prepare-negative-seed", PREPARE + ["--seed", "-1"], "--seed"),
    Case("prepare-negative-test-fraction", PREPARE + ["--test-fraction", "-0.1"], "--test-fraction"),
    Case("prepare-fractions-sum-to-one", PREPARE + ["--val-fraction", "0.6", "--test-fraction", "0.5"],
         "--val-fraction 0.6 + --test-fraction 0.5", also=["training"]),
    Case("prepare-fraction-not-a-number", PREPARE + ["--val-fraction", "half"], "--val-fraction"),
    Case("prepare-catch-accuracy-above-1", PREPARE + ["--min-catch-accuracy", "1.5"],
         "--min-catch-accuracy"),
    Case("prepare-min-time-above-max", PREPARE + ["--min-total-time", "3000"], "--min-total-time"),
    Case("prepare-missing-images-root", PREPARE + ["--images", "{tmp}/no_images"], "--images"),
    Case("prepare-out-holds-a-users-file", PREPARE, "--out {out}", out_before=True,
         also=["--overwrite"]),
    Case("prepare-out-is-a-file", ["prepare", "--responses", "{csv}", "--out", "{tmp}/afile"],
         "--out {tmp}/afile", setup=_file("afile")),
    Case("prepare-out-below-a-file", ["prepare", "--responses", "{csv}", "--out", "{tmp}/afile/ds"],
         "--out {tmp}/afile/ds", setup=_file("afile")),
    Case("prepare-out-not-writable", ["prepare", "--responses", "{csv}", "--out", "/proc/interpscore-ds"],
         "--out /proc/interpscore-ds", also=["not writable"]),
    Case("prepare-missing-column", ["prepare", "--responses", "{tmp}/bad.csv", "--out", "{out}"],
         "{tmp}/bad.csv", setup=lambda t: _table(t, lambda x: x.drop(columns=["correct"])),
         also=["correct"]),
    Case("prepare-unreadable-correct", ["prepare", "--responses", "{tmp}/bad.csv", "--out", "{out}"],
         "{tmp}/bad.csv", also=["'correct'", "line "],
         setup=lambda t: _table(t, lambda x: x.assign(correct=x["correct"].where(
             x["is_demo"] == True, "maybe")))),  # noqa: E712 (a column of bools)
    Case("prepare-unreadable-reference-list", ["prepare", "--responses", "{tmp}/bad.csv", "--out",
                                               "{out}"], "{tmp}/bad.csv",
         also=["'max_references'", f"line {_FIRST_MAIN + 2}"],
         setup=lambda t: _table(t, lambda x: x.assign(max_references=x["max_references"].where(
             x.index != _FIRST_MAIN, "['a.png', 'b.png'")))),
    Case("prepare-time-not-a-number", ["prepare", "--responses", "{tmp}/bad.csv", "--out", "{out}"],
         "{tmp}/bad.csv", also=["'time_elapsed'", "line 4"],
         setup=lambda t: _table(t, lambda x: x.assign(time_elapsed=x["time_elapsed"].astype(object)
                                                      .where(x.index != 2, "ten")))),
    Case("prepare-channel-not-a-number", ["prepare", "--responses", "{tmp}/bad.csv", "--out",
                                          "{out}"], "{tmp}/bad.csv",
         also=["'channel'", f"line {_FIRST_MAIN + 2}: 'x'"],
         setup=lambda t: _table(t, lambda x: x.assign(channel=x["channel"].astype(object).where(
             x.index != _FIRST_MAIN, "x")))),
    Case("prepare-empty-table", ["prepare", "--responses", "{tmp}/bad.csv", "--out", "{out}"],
         "{tmp}/bad.csv", setup=lambda t: _table(t, lambda x: x.iloc[0:0])),
    Case("prepare-truncated-zip", ["prepare", "--responses", "{tmp}/h.zip", "--out", "{out}"],
         "{tmp}/h.zip", setup=_file("h.zip", "PK\x03\x04 truncated")),
    Case("prepare-missing-references", ["prepare", "--responses", "{tmp}/refs.csv", "--images",
                                        "{tmp}/tree", "--out", "{out}"],
         "--images {tmp}/tree", setup=lambda t: _seven_of_nine_references(t),
         also=["{tmp}/tree/.../", "max_3.png", "--allow-missing"]),
    # simulate
    Case("simulate-zero-units", SIMULATE + ["--units-per-model", "0"], "--units-per-model"),
    Case("simulate-negative-pool", SIMULATE + ["--pool-size", "-5"], "--pool-size"),
    Case("simulate-unknown-model", SIMULATE + ["--models", "no_such_net_xyz"],
         "--models no_such_net_xyz"),
    Case("simulate-out-holds-a-users-file", SIMULATE, "--out {out}", out_before=True),
    # evaluate
    Case("evaluate-missing-checkpoint", ["evaluate", "--checkpoint", "{tmp}/none.ckpt", "--out",
                                         "{out}"], "--checkpoint {tmp}/none.ckpt"),
    Case("evaluate-not-a-checkpoint", ["evaluate", "--checkpoint", "{tmp}/x.ckpt", "--out", "{out}"],
         "--checkpoint {tmp}/x.ckpt", setup=_file("x.ckpt", "not a checkpoint")),
    Case("evaluate-unknown-split", EVALUATE + ["--split", "train2"], "--split"),
    Case("evaluate-unknown-folds", EVALUATE + ["--folds", "k5"], "--folds"),
    Case("evaluate-zero-boot", EVALUATE + ["--n-boot", "0"], "--n-boot"),
    Case("evaluate-missing-data", EVALUATE + ["--data", "{tmp}/nodata"], "{tmp}/nodata"),
    Case("evaluate-out-holds-a-users-file", EVALUATE, "--out {out}", out_before=True),
    Case("evaluate-missing-images-dir", EVALUATE + ["--images-dir", "{tmp}/noimages"],
         "--images-dir {tmp}/noimages"),
    Case("evaluate-out-is-a-file", EVALUATE[:-1] + ["{tmp}/afile"], "--out {tmp}/afile",
         setup=_file("afile")),
    # score
    Case("score-units-0", SCORE + ["--units", "0"], "--units 0"),
    Case("score-units-negative", SCORE + ["--units", "-3"], "--units -3"),
    Case("score-units-word", SCORE + ["--units", "abc"], "--units abc"),
    Case("score-unit-channel-not-a-number", SCORE + ["--units", "layer1.0.conv1:x"],
         "--units layer1.0.conv1:x"),
    Case("score-unknown-difficulty", SCORE + ["--difficulty", "nope"], "--difficulty"),
    Case("score-zero-refs", SCORE + ["--n-refs", "0"], "--n-refs"),
    Case("score-ten-refs", SCORE + ["--n-refs", "10"], "--n-refs 10"),
    Case("score-negative-batches", SCORE + ["--n-batches", "-1"], "--n-batches"),
    Case("score-zero-image-size", SCORE + ["--image-size", "0"], "--image-size"),
    Case("score-pool-too-small", SCORE + ["--pool-size", "10", "--image-size", "64"],
         "--pool-size", also=["--n-refs 9", "--n-batches 20"]),
    Case("score-folder-too-small", SCORE + ["--images", "{fixtures}", "--image-size", "64"],
         "--images", also=["--n-refs 9", "--n-batches 20"]),
    Case("score-missing-images", SCORE + ["--images", "{tmp}/no_pool"], "{tmp}/no_pool"),
    Case("score-unknown-model", ["score", "--checkpoint", "{ckpt}", "--model", "no_such_net_xyz",
                                 "--out", "{out}"], "--model no_such_net_xyz"),
    Case("score-unknown-layer", SCORE + SMALL_SCORE + ["--layers", "nope"], "--layers nope"),
    Case("score-shard-rank-too-high", SCORE + ["--shard", "3/2"], "--shard 3/2"),
    Case("score-shard-garbled", SCORE + ["--shard", "x"], "--shard x"),
    Case("score-missing-checkpoint", ["score", "--checkpoint", "{tmp}/none.ckpt", "--model",
                                      "test_resnet@random", "--out", "{out}"], "--checkpoint"),
    Case("score-out-holds-a-users-file", SCORE + SMALL_SCORE, "--out {out}", out_before=True),
    Case("score-features-missing-file", SCORE + ["--features", "{tmp}/none.npy", "--layers",
                                                 "layer1.0"], "--features {tmp}/none.npy"),
    Case("score-features-without-a-layer", SCORE + ["--features", "{tmp}/dirs.npy"], "--features",
         setup=lambda tmp: np.save(tmp / "dirs.npy", np.ones((8, 2), np.float32))),
    Case("score-activations-not-a-matrix", SCORE + SMALL_SCORE + ["--activations",
                                                                  "{tmp}/acts.npy"],
         "--activations {tmp}/acts.npy",
         setup=lambda tmp: np.save(tmp / "acts.npy", np.ones(5, np.float32))),
    # sae fit
    Case("sae-fit-top-k-above-latents", ["sae", "fit", "--model", "test_resnet@random", "--layer",
                                         "layer1.0", "--latents", "4", "--top-k", "8", "--out",
                                         "{out}"], "--top-k 8"),
    Case("sae-fit-unknown-layer", ["sae", "fit", "--model", "test_resnet@random", "--layer", "nope",
                                   "--latents", "4", "--top-k", "2", "--out", "{out}"],
         "--layer nope"),
    Case("sae-fit-out-is-a-users-file", ["sae", "fit", "--model", "test_resnet@random", "--layer",
                                         "layer1.0", "--latents", "4", "--top-k", "2", "--out",
                                         "{out}"], "--out {out}", out_before=True),
    # stimuli and export-experiment
    Case("stimuli-unknown-difficulty", STIMULI + ["--difficulties", "easy,nope"],
         "--difficulties nope"),
    Case("stimuli-negative-seed", STIMULI + ["--seed", "-1"], "--seed"),
    Case("stimuli-units-0", STIMULI + ["--units", "0"], "--units 0"),
    Case("stimuli-out-holds-a-users-file", STIMULI, "--out {out}", out_before=True),
    Case("export-missing-store", EXPORT + ["--stimuli", "{tmp}/nostore"], "--stimuli {tmp}/nostore"),
    Case("export-missing-scores", EXPORT + ["--stimuli", "{fixtures}", "--scores", "{tmp}/s.parquet",
                                            "--select", "uncertain"], "--scores {tmp}/s.parquet"),
    Case("export-zero-n", EXPORT + ["--stimuli", "{fixtures}", "-n", "0"], "-n"),
    Case("export-out-holds-a-users-file", EXPORT + ["--stimuli", "{fixtures}"], "--out {out}",
         out_before=True),
    Case("score-unknown-explanation", SCORE + ["--explanations", "natural,dreams"],
         "--explanations natural,dreams"),
    # visualize
    Case("visualize-zero-steps", VISUALIZE + ["--steps", "0"], "--steps"),
    Case("visualize-negative-min-steps", VISUALIZE + ["--min-steps", "-1"], "--min-steps"),
    Case("visualize-one-image", VISUALIZE + ["--n-images", "1"], "--n-images 1"),
    Case("visualize-bad-alphas", VISUALIZE + ["--alphas", "0.5,x"], "--alphas"),
    Case("visualize-unknown-device", VISUALIZE + ["--device", "tpu"], "--device tpu"),
    Case("visualize-units-word", VISUALIZE + ["--units", "abc"], "--units abc"),
    Case("visualize-unknown-model", ["visualize", "--model", "no_such_net_xyz", "--out", "{out}"],
         "--model no_such_net_xyz"),
    # zoo
    Case("zoo-missing-checkpoint", ["zoo", "--checkpoint", "{tmp}/none.ckpt", "--models",
                                    "test_resnet@random", "--out", "{out}"], "--checkpoint"),
    Case("zoo-unknown-model", ZOO[:4] + ["no_such_net_xyz"] + ZOO[5:], "no_such_net_xyz"),
    Case("zoo-missing-models-file", ZOO[:4] + ["{tmp}/models.txt"] + ZOO[5:], "{tmp}/models.txt"),
    Case("zoo-units-word", ZOO + ["--units", "many"], "--units many"),
    Case("zoo-zero-pool-shards", ZOO + ["--pool-shards", "0"], "--pool-shards"),
    Case("zoo-shard-garbled", ZOO + ["--shard", "2/2"], "--shard 2/2"),
    Case("zoo-unknown-difficulty", ZOO + ["--difficulty", "hard50"], "--difficulty"),
    Case("zoo-out-holds-a-users-file", ZOO, "--out {out}", out_before=True),
    # track
    Case("track-missing-checkpoint", TRACK, "{tmp}/ckpt.pt", also=["no such checkpoint"]),
    Case("track-other-architecture", TRACK[:3] + ["{tmp}/ckpt.pt", "{tmp}/other.pt"] + TRACK[4:],
         "{tmp}/other.pt: not a checkpoint of this architecture",
         setup=lambda tmp: (_state_dict("ckpt.pt")(tmp), _state_dict("other.pt", "test_vit")(tmp))),
    Case("track-not-a-checkpoint", TRACK, "{tmp}/ckpt.pt: not a readable checkpoint",
         setup=_file("ckpt.pt")),
    Case("track-unknown-layer", TRACK + ["--layers", "layer9"], "--layers layer9",
         setup=_state_dict("ckpt.pt")),
    Case("track-units-word", TRACK + ["--units", "abc"], "--units abc",
         setup=_state_dict("ckpt.pt")),
    Case("track-unknown-metric", TRACK + ["--metric", "{tmp}/none.ckpt"], "metric {tmp}/none.ckpt",
         setup=_state_dict("ckpt.pt")),
    Case("track-out-holds-a-users-file", TRACK, "--out {out}", out_before=True,
         setup=_state_dict("ckpt.pt")),
    Case("track-missing-features", TRACK + ["--features", "{tmp}/dirs.pt", "--layers", "layer2"],
         "--features {tmp}/dirs.pt", also=["no such file"], setup=_state_dict("ckpt.pt")),
    Case("track-features-of-another-width", TRACK + ["--features", "{tmp}/dirs.pt", "--layers",
                                                     "layer2"],
         "--features {tmp}/dirs.pt: reads 5 channels, but layer layer2",
         setup=lambda tmp: (_state_dict("ckpt.pt")(tmp), _tensor("dirs.pt", (5, 3))(tmp))),
    Case("track-features-without-a-layer", TRACK + ["--features", "{tmp}/dirs.pt"], "--features",
         also=["needs its layer"],
         setup=lambda tmp: (_state_dict("ckpt.pt")(tmp), _tensor("dirs.pt", (48, 3))(tmp))),
    Case("track-zero-batch-size", TRACK + ["--batch-size", "0"], "--batch-size",
         setup=_state_dict("ckpt.pt")),
    # study
    Case("study-build-missing-store", ["study", "build", "--stimuli", "{tmp}/nostore", "--out",
                                       "{out}"], "--stimuli {tmp}/nostore"),
    Case("study-build-unknown-rule", BUILD + ["--select", "best"], "--select", setup=_store),
    Case("study-build-spread-without-scores", BUILD + ["--select", "spread"], "--select spread",
         also=["--scores"], setup=_store),
    Case("study-build-zero-trials", BUILD + ["--trials-per-task", "0"], "--trials-per-task",
         setup=_store),
    Case("study-build-bad-local-save", BUILD + ["--local-save", "sometimes"], "--local-save",
         setup=_store),
    Case("study-build-nowhere-to-send", BUILD + ["--post-url", ""], "--post-url", setup=_store),
    Case("study-build-completion-not-a-url", BUILD + ["--completion-url", "done"],
         "--completion-url done", setup=_store),
    Case("study-build-unknown-unit", BUILD + ["--units", "a/b/1"], "--units", setup=_store),
    Case("study-build-out-holds-a-users-file", BUILD, "--out {out}", out_before=True,
         setup=_store),
    Case("study-build-activations-with-nan", ["study", "build", "--activations", "{tmp}/nan.npy",
                                              "--images", "{tmp}/photos", "--out", "{out}"],
         "--activations {tmp}/nan.npy", also=["NaN"], setup=_nan_matrix),
    Case("study-serve-missing-study", SERVE, "{tmp}/nostudy"),
    Case("study-serve-bad-port", ["study", "serve", "{tmp}", "--results", "{tmp}/a", "--port",
                                  "-1"], "--port"),
    # leaderboard
    Case("board-validate-missing-root", BOARD + ["validate", "--root", "{tmp}/noboard"], "--root"),
    Case("board-validate-empty-root", BOARD + ["validate", "--root", "{tmp}/emptyboard"], "--root",
         setup=_folder("emptyboard")),
    Case("board-validate-missing-file", BOARD + ["validate", "--root", "{board}", "{tmp}/e.yaml"],
         "{tmp}/e.yaml"),
    Case("board-submit-missing-meta", BOARD + ["submit", "--root", "{board}", "--meta",
                                               "{tmp}/m.yaml", "--baseline", "constant"], "--meta"),
    Case("board-submit-neither", BOARD + ["submit", "--root", "{board}", "--meta", "{tmp}/m.yaml"],
         "--checkpoint", setup=_file("m.yaml", "id: x\n")),
    Case("board-submit-unknown-baseline", BOARD + ["submit", "--root", "{board}", "--meta",
                                                   "{tmp}/m.yaml", "--baseline", "oracle"],
         "--baseline"),
    Case("board-fix-unknown-track", BOARD + ["fix-track", "--root", "{board}", "--track", "nope",
                                             "--data", "{tmp}"], "--track nope"),
    Case("board-score-zero-boot", BOARD + ["score", "--root", "{board}", "--n-boot", "0"],
         "--n-boot"),
    Case("board-submit-missing-checkpoint", BOARD + ["submit", "--root", "{board}", "--meta",
                                                     "{tmp}/m.yaml", "--checkpoint",
                                                     "{tmp}/none.ckpt"], "--checkpoint",
         setup=_file("m.yaml", "id: x\n")),
    Case("board-submit-existing-entry", BOARD + ["submit", "--root", "{board}", "--meta",
                                                 "{tmp}/m.yaml", "--baseline", "constant"],
         "--meta {tmp}/m.yaml", also=["'constant' already exists", "--overwrite"],
         setup=_file("m.yaml", "id: constant\n")),
    Case("board-render-missing-root", BOARD + ["render", "--root", "{tmp}/noboard"], "--root"),
    # download-imi and layers
    Case("download-unknown-file", ["download-imi", "--out", "{out}", "--files", "nope.zip"],
         "--files nope.zip"),
    Case("download-out-is-a-file", ["download-imi", "--out", "{tmp}/afile"], "--out {tmp}/afile",
         setup=_file("afile")),
    Case("layers-unknown-model", ["layers", "no_such_net_xyz"], "no_such_net_xyz"),
    Case("unknown-command", ["frobnicate"], "frobnicate"),
    # train (LightningCLI) through `interpscore train`; train.py is the same door (see below)
    Case("train-negative-lr", TRAIN + ["--model.lr", "-1"], "--model.lr"),
    Case("train-zero-batch", TRAIN + ["--data.batch_size", "0"], "--data.batch_size"),
    Case("train-missing-data-dir", TRAIN + ["--data.data_dir", "{tmp}/nodata"], "--data.data_dir"),
    Case("train-unknown-head", TRAIN + ["--model.head", "nope"], "--model.head"),
    Case("train-epochs-not-a-number", TRAIN + ["--trainer.max_epochs", "abc"], "--trainer.max_epochs"),
    Case("train-unknown-config", ["train", "--config", "nope"], "--config nope"),
    Case("train-unknown-option", TRAIN + ["--model.nope", "1"], "--model.nope"),
    Case("train-evaluate-not-a-bool", TRAIN + ["--evaluate", "maybe"],
         "--evaluate maybe: give true or false"),
    Case("train-value-missing", TRAIN + ["--data.data_root"], "--data.data_root: a value is missing"),
    Case("train-dropout-1", TRAIN + ["--model.dropout", "1"], "--model.dropout"),
    Case("train-negative-shrink", TRAIN + ["--model.shrink", "-0.5"], "--model.shrink"),
    Case("train-missing-init-from", TRAIN + ["--model.init_from", "{tmp}/none.ckpt"],
         "--model.init_from {tmp}/none.ckpt"),
    Case("train-init-from-another-head", TRAIN + ["--model.init_from", "{ckpt}", "--model.head",
                                                  "attention"], "--model.init_from {ckpt}",
         also=["--model.head"]),
    Case("train-zero-train-units", TRAIN + ["--data.train_units", "0"], "--data.train_units"),
]


def _seven_of_nine_references(tmp: Path) -> None:
    """A trial table whose rows list 9 references per side; the trial of unit layer1.0.conv1
    has lost 2 of its max references, the others' trial (a copy) is whole."""
    from conftest import FIXTURES

    shutil.copytree(FIXTURES, tmp / "tree")
    trials = tmp / "tree" / "screenshots_9_references" / "task_1" / "trials"
    shutil.copytree(trials / "trial_1", trials / "trial_2")
    (trials / "trial_1" / "references" / "max_3.png").unlink()
    (trials / "trial_1" / "references" / "max_5.png").unlink()
    table = build_table()
    broken = table["layer"] == "layer1.0.conv1"
    table = pd.concat([_urls_into(table[broken], "trial_1"), _urls_into(table[~broken], "trial_2")])
    table.sort_index().to_csv(tmp / "refs.csv", index=False)


def _urls_into(table: pd.DataFrame, trial: str) -> pd.DataFrame:
    base = f"{HOST}/screenshots_9_references/task_1/trials/{trial}"
    table = table.copy()
    table["max_query"], table["min_query"] = f"{base}/queries/max.png", f"{base}/queries/min.png"
    table["max_references"] = str([f"{base}/references/max_{i}.png" for i in range(9)])
    table["min_references"] = str([f"{base}/references/min_{i}.png" for i in range(1, 10)])
    return table


@pytest.fixture(scope="module")
def places(debug_run, tmp_path_factory):
    base, run, _, debug_args = debug_run
    board = tmp_path_factory.mktemp("board") / "leaderboard"
    shutil.copytree(ROOT / "leaderboard", board)
    return dict(ckpt=str(run / "best.ckpt"), cache=str(base / "cache"), board=str(board),
                fixtures=str(ROOT / "tests" / "fixtures" / "imi_task_tree"), debug=debug_args)


def _fill(items, values):
    out = []
    for item in items:
        if item == "{debug}":
            out += values["debug"]
        else:
            out.append(item.format(**values))
    return out


def _listing(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, places, tmp_path, capsys):
    out = tmp_path / "out"
    values = dict(places, tmp=str(tmp_path), out=str(out), csv=str(tmp_path / "responses.csv"))
    build_table().to_csv(tmp_path / "responses.csv", index=False)
    if case.setup:
        case.setup(tmp_path)
    if case.out_before:
        out.mkdir()
        (out / "notes.txt").write_text("a user's notes")
    before = {p.name for p in tmp_path.iterdir()}
    code = main(_fill(case.argv, values))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: " in err and "Traceback" not in err, err
    error = err[err.index("error: "):]  # after any progress lines
    for text in [case.names, *case.also]:
        assert text.format(**values) in error, err
    if case.out_before:
        assert _listing(out) == {"notes.txt": b"a user's notes"}
    else:
        assert not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == before  # nothing new beside, no temporaries


def _commands(parser, prefix="") -> set[str]:
    """Every runnable command of the parser, nested ones as `group action`."""
    import argparse

    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                inner = _commands(sub, f"{prefix}{name} ")
                found |= inner or {f"{prefix}{name}"}
    return found


def test_the_suite_tries_every_command():
    """A command added to the CLI without a bad-input case here fails this test."""
    tried = {" ".join(c.argv[:2]) if c.argv[0] in ("leaderboard", "study", "sae") else c.argv[0]
             for c in CASES}
    missing = _commands(build_parser()) - tried
    assert not missing, f"no bad-input case for {sorted(missing)}"


@pytest.mark.slow
def test_train_py_and_interpscore_train_say_the_same(places, tmp_path):
    """The README's main command is the same door as `interpscore train` (one subprocess each)."""
    args = places["debug"] + ["--model.lr", "-1"]
    done = [subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, timeout=300)
            for cmd in ([sys.executable, "train.py"], [sys.executable, "-m", "interpscore.cli", "train"])]
    assert [d.returncode for d in done] == [2, 2]
    last = [d.stderr.strip().splitlines()[-1] for d in done]
    assert last[0] == last[1] and last[0].startswith("error: --model.lr -1")
    assert all("Traceback" not in d.stderr and "Tip" not in d.stdout + d.stderr for d in done)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(InputError, match="--responses"):
        main(["--debug", "prepare", "--responses", str(tmp_path / "no.csv"), "--out",
              str(tmp_path / "ds")])


def test_ctrl_c_during_score_leaves_no_partial_output(places, tmp_path, monkeypatch, capsys):
    import interpscore.stimuli.activations as activations

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(activations, "collect_rankings", interrupted)
    out = tmp_path / "out"
    argv = _fill(SCORE + SMALL_SCORE + ["--units", "2"], dict(places, out=str(out)))
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_every_option_has_help_that_shows_its_default_once():
    """Every option has help; its default is shown once, where it has one (not for a switch,
    a required option or a None default), and choices are listed."""
    import argparse

    def parsers(parser, name="interpscore"):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    if sub != "train":  # LightningCLI writes its own help
                        yield from parsers(child, f"{name} {sub}")

    missing = []
    for name, parser in parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        assert "(default: None)" not in text and "(default: any) (default" not in text, name
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            if not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}")
            elif action.choices:
                assert "{" + ",".join(action.choices) + "}" in text, (name, action.dest)
            help_text = parser._get_formatter()._get_help_string(action)
            assert help_text.count("(default:") <= 1, (name, action.dest, help_text)
            if action.required and action.option_strings:
                assert "(default:" not in help_text and help_text.endswith("(required)"), (
                    name, action.dest, help_text)
            elif (action.default not in (None, argparse.SUPPRESS) and action.nargs != 0
                    and isinstance(action.default, (int, float, str))):
                assert f"(default: {action.default})" in help_text, (name, action.dest)
    assert missing == []

# --- real data: only what the analysis uses is checked ------------------------------------------

def test_empty_columns_the_analysis_does_not_use_are_accepted(tmp_path):
    """Demo and catch rows with an empty `switched_queries`, and a practice row whose `correct`
    is unreadable, block nothing; an unknown extra column is kept out of the way."""
    from interpscore.data.dataset import prepare

    table = build_table()
    side = table["is_demo"].astype(str).eq("True") | table["catch_trial"].astype(str).eq("True")
    table["switched_queries"] = table["switched_queries"].astype(object).where(~side, None)
    table.loc[table["is_demo"].astype(str).eq("True"), "correct"] = "n/a"
    table["annotator_note"] = "anything"
    table.to_csv(tmp_path / "r.csv", index=False)
    reference = tmp_path / "ref.csv"
    build_table().to_csv(reference, index=False)
    got = prepare(tmp_path / "r.csv", tmp_path / "ds").units
    expected = prepare(reference, tmp_path / "ds_ref").units
    pd.testing.assert_series_equal(got["his"], expected["his"])


def test_a_trial_missing_two_of_its_nine_references_is_dropped_only_when_allowed(tmp_path):
    from interpscore.data.dataset import prepare

    _seven_of_nine_references(tmp_path)
    result = prepare(tmp_path / "refs.csv", tmp_path / "ds", images=tmp_path / "tree",
                     allow_missing=True)
    assert "layer1.0.conv1" not in set(result.trials["layer"])
    assert set(result.trials["layer"]) == {"layer3.2.conv2", "inception4a"}
    assert all(len(refs) == 9 for refs in result.trials["refs_max"])


def test_help_loads_no_network_stack():
    """`--help` of every command group answers without importing torch or Lightning (seconds)."""
    code = ("import sys; from interpscore.cli import main\n"
            "for argv in (['--help'], ['score', '--help'], ['visualize', '--help'],\n"
            "             ['study', 'build', '--help'], ['simulate', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print('LOADED', sorted({'torch', 'lightning', 'timm'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "LOADED []" in done.stdout, done.stdout[-500:] + done.stderr[-2000:]
