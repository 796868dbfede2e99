"""What a new user meets in the first hour (issue 31): the short `train --help`, a study too
small to evaluate, the messages of `score`, `evaluate` and `study build`, the report's verdict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from interpscore.cli import main


def test_train_help_is_short_fast_and_names_the_options_a_user_changes(capsys):
    # Lightning's parser is not built (it takes seconds and prints hundreds of lines)
    code = ("import sys; from interpscore.cli import main; main(['train', '--help']); "
            "assert 'lightning' not in sys.modules, 'lightning was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) < 80
    for flag in ("--config", "--run_name", "--evaluate", "--model.init_from", "--data.data_dir",
                 "--model.head", "--help-all"):
        assert flag in done.stdout, flag
    for config in ("default", "quick", "debug"):
        assert any(line.split()[:1] == [config] for line in lines), config
    assert "(default: pooled_lowrank)" in " ".join(done.stdout.split())  # default.yaml's head


def test_every_option_of_the_short_help_is_one_of_the_full_list(capsys):
    assert main(["train", "--help"]) == 0
    short = capsys.readouterr().out
    flags = {w for w in short.split() if w.startswith("--") and "." in w or w in (
        "--run_name", "--evaluate", "--checkpoints_root")}
    assert main(["train", "--help-all"]) == 0
    full = capsys.readouterr().out
    assert len(full.splitlines()) > 200
    for flag in flags:
        if flag.rstrip(",;.)") in ("--trainer.X", "--model.X", "--data.X"):
            continue
        assert flag in full, flag


# --- 1. the loop on a small study -----------------------------------------------------------

LOOSE = ["--min-catch-accuracy", "0", "--min-instruction-time", "0", "--min-presses-per-row",
         "0", "--min-total-time", "0", "--max-demo-attempts", "100",
         "--keep-multi-participation"]


@pytest.fixture(scope="module")
def lite0_store(tmp_path_factory):
    from study_helpers import make_store

    units = [f"toy/layer{i % 3}/{i}" for i in range(24)]
    return make_store(tmp_path_factory.mktemp("store24") / "stimuli", units=units, batches=1)


@pytest.mark.parametrize("n, expected", [
    # prepare keeps round(0.15 n) test units of one model: 6 -> 1, 16 -> 2, 17 -> 3
    (6, "a study of 6 units leaves 1 test unit, too few to evaluate (correlations need 3)"),
    (50, "-n 50: there are only 24 candidate units"),
    (20, None)])
def test_study_build_says_when_a_study_is_too_small(lite0_store, tmp_path, capsys, n, expected):
    args = ["study", "build", "--stimuli", str(lite0_store), "--select", "random", "-n", str(n),
            "--out", str(tmp_path / "study"), "--demo-trials", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    if expected is None:
        assert "warning" not in err
    else:
        assert f"warning: {expected}" in err
    if n == 6:
        assert "-n 17 or more leaves 3 test units" in err


@pytest.fixture(scope="module")
def six_units(debug_run, tmp_path_factory):
    """A dataset of 6 units of one model from the debug release's answers, prepared as a
    study's would be: its split leaves 1 test unit."""
    import pandas as pd

    base, *_ = debug_run
    (release,) = (base / "data").glob("simulated-*/release")
    table = pd.read_csv(release / "audiences" / "default" / "responses_main.csv")
    main_rows = ~table["model"].isin(["catch", "demo"])
    lite0 = main_rows & (table["model"] == "efficientnet_lite0")
    keep_units = table[lite0].groupby(["layer", "channel"]).size().index[:6]
    keep = ~main_rows | lite0 & table.set_index(["layer", "channel"]).index.isin(keep_units)
    folder = tmp_path_factory.mktemp("six")
    table[keep].to_csv(folder / "responses_main.csv", index=False)
    return folder, release / "images"


def test_a_small_update_trains_says_why_it_is_not_evaluated_and_failures_leave_no_checkpoint(
        debug_run, six_units, tmp_path, capsys, monkeypatch):
    import interpscore.train.cli as train_cli

    base, run, _, args = debug_run
    folder, images = six_units
    prepared = tmp_path / "prepared"
    assert main(["prepare", "--responses", str(folder / "responses_main.csv"), "--images",
                 str(images), "--out", str(prepared), *LOOSE]) == 0
    assert "warning: " in capsys.readouterr().out  # 6 units: 1 test unit
    root = tmp_path / "ckpt"
    update = [*args[:-1], str(root), "--data.data_dir", str(prepared), "--model.init_from",
              str(run / "best.ckpt"), "--run_name", "updated"]
    assert main(["train", *update]) == 0
    captured = capsys.readouterr()
    assert "warning: --data.data_dir" in captured.err  # before the training
    (best,) = root.glob("updated-*/best.ckpt")
    out = captured.out
    assert f"checkpoint: {best}" in out
    assert f"from {run / 'best.ckpt'}: " in out and ("held at it" in out or "moved" in out)
    assert "not evaluated: " in out and "leaves 1 test unit" in out
    # evaluate on it says what is wrong with the data, not with the checkpoint
    assert main(["evaluate", "--checkpoint", str(best), "--data", str(prepared), "--out",
                 str(tmp_path / "report")]) == 2
    assert "'test' split holds 1 unit condition(s), too few" in capsys.readouterr().err
    # --evaluate false prints the path too
    assert main(["train", *update, "--evaluate", "false"]) == 0
    assert "checkpoint: " in capsys.readouterr().out
    before = sorted(root.glob("updated-*/best.ckpt"))
    assert len(before) == 2

    def fail(*_args):
        raise RuntimeError("failed late")

    monkeypatch.setattr(train_cli, "_finish", fail)
    with pytest.raises(RuntimeError):
        main(["train", *update])
    assert sorted(root.glob("updated-*/best.ckpt")) == before  # no checkpoint of the failed run
    assert not list(root.glob(".*"))
    (failed,) = (root / "failed").iterdir()
    assert failed.name.startswith("updated-") and not list(failed.rglob("*.ckpt"))
    assert "the run failed: its logs are in" in capsys.readouterr().err


# --- 5. small screens -------------------------------------------------------------------------

def _trial_with_feedback(page, url):
    """Consent, instructions, one practice answer; returns where the upper query was before
    the answer, to compare with where it is after."""
    from interpscore.study.build import INSTRUCTION_PAGES

    page.goto(url + "?PROLIFIC_PID=small&task=1")
    page.get_by_role("button", name="I agree").click()
    for _ in INSTRUCTION_PAGES:
        page.click("#jspsych-instructions-next")
    before = page.locator("#imi-query-upper").bounding_box()
    page.click('[data-button="2"]')
    page.locator("#imi-continue").wait_for()
    return before


def test_the_trial_fits_a_phone_and_a_short_screen(browser_page, tmp_path):
    from study_helpers import UNITS, make_store

    from interpscore.study import StudyServer, build_study

    study = build_study(make_store(tmp_path / "store"), tmp_path / "study", units=UNITS[:3],
                        demo_trials=2, enable_buttons_after_ms=0)
    server = StudyServer(study, tmp_path / "results", port=0).start()
    page, errors = browser_page
    try:
        for width, height in ((390, 844), (1024, 600), (1280, 800)):
            page.set_viewport_size({"width": width, "height": height})
            before = _trial_with_feedback(page, server.url)
            # nothing scrolls sideways
            assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth"), width
            box = page.locator(".imi-trial").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, box)
            # the feedback's space was kept: the trial did not move when it appeared
            after = page.locator("#imi-query-upper").bounding_box()
            assert abs(after["y"] - before["y"]) < 1, (width, before, after)
            if width >= 1024:  # Continue is in view without scrolling
                box = page.locator("#imi-continue").bounding_box()
                assert 0 <= box["y"] and box["y"] + box["height"] <= height, (width, box)
            if width == 390:  # the thumbnails are not shrunk to a stamp
                assert page.locator(".imi-reference").first.bounding_box()["width"] >= 50
    finally:
        server.stop()
    assert errors == []


# --- 3. messages ------------------------------------------------------------------------------

def test_evaluate_mis_says_what_to_pass(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", "mis", "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "pass --data DIR" in err and "MIS is fitted on a dataset" in err


# --- 4. the report's verdict ------------------------------------------------------------------

@pytest.mark.parametrize("ci, word", [((-0.004, 0.03), "ties"), ((0.01, 0.05), "leads"),
                                      ((-0.05, -0.01), "trails")])
def test_every_summary_opens_with_a_verdict(ci, word):
    from interpscore.evaluation.report import verdict

    trained = {"within_minus_mis": 0.016, "within_minus_mis_ci": list(ci)}
    headline = {"benchmark": {"headline": {"predictors": {"trained": trained}}}}
    assert verdict(headline).startswith(
        f"verdict: trained {word} MIS within groups on held-out observers and pictures: +0.016 "
        f"[{ci[0]:+.2f}, {ci[1]:+.2f}]")
    assert "on the test units" in verdict({"grouped": {"predictors": {"trained": trained}}})


def test_the_summary_and_report_of_a_run_open_with_the_verdict(debug_run, tmp_path):
    from interpscore.evaluation.harness import format_summary
    from interpscore.evaluation.report import markdown

    _, _, metrics, _ = debug_run
    assert format_summary(metrics).startswith("verdict: trained ")
    text = markdown(metrics, [])
    assert text.splitlines()[2].startswith("verdict: trained ")
    assert not [line for line in text.splitlines() if line.startswith("#") and "`" in line]
    assert "Terms: within-group = " in text


# --- 5. the names, weights and pools a user gives ----------------------------------------------

def test_an_unknown_model_name_suggests_the_name_meant(tmp_path, capsys):
    from interpscore.stimuli.user_input import likely_meant

    # the old suggestion: the first names, alphabetically, that contain `resnet`
    names = ["cspresnet50", "ecaresnet26t", "resnet10t", "resnet18", "resnet50", "seresnet18"]
    assert likely_meant("resnet81", names)[0] == "resnet18"
    assert likely_meant("resnt18", names)[0] == "resnet18"  # a typo in the stem
    args = ["score", "--checkpoint", "mis", "--model", "resnet81@random", "--out",
            str(tmp_path / "scores")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown model; did you mean resnet18@random" in err and "cspresnet" not in err


def test_a_folder_of_non_images_is_said_to_hold_no_images(tmp_path, capsys):
    folder = tmp_path / "not_images"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.png").write_text("not a picture")
    args = ["score", "--checkpoint", "mis", "--model", "test_resnet@random", "--units", "2",
            "--images", str(folder), "--out", str(tmp_path / "scores")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--images {folder}: holds no images" in err and ".jpg" in err
    assert "too small" not in err and not (tmp_path / "scores").exists()


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """The hub out of reach as on a machine without network: every request goes to a closed
    local port (nothing leaves the machine), and an empty hub cache of the test's own."""
    from huggingface_hub import constants

    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return constants


@pytest.mark.parametrize("offline", [True, False])
def test_pretrained_weights_out_of_reach_fail_fast_and_say_why(no_network, monkeypatch,
                                                               offline):
    import time

    from interpscore.errors import InputError
    from interpscore.stimuli.user_input import load_model

    monkeypatch.setattr(no_network, "HF_HUB_OFFLINE", offline)
    if not offline:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        load_model("resnet18")
    assert time.perf_counter() - start < 20  # the hub's retries took ~55 s
    message = str(err.value)
    assert "not in the local cache" in message and "resnet18@random" in message
    if offline:
        assert "HF_HUB_OFFLINE is set" in message
    else:
        assert "cannot be reached" in message and "HF_HUB_OFFLINE" not in message


def test_cached_pretrained_weights_load_without_the_hub(no_network, monkeypatch):
    """The cache is tried first, offline: what is cached loads (a guard of that path; the hub's
    own fallback loaded it too)."""
    import timm
    import torch
    from safetensors.torch import save_file

    from interpscore.stimuli.user_input import load_model

    monkeypatch.setattr(no_network, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = Path(no_network.HF_HUB_CACHE) / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.manual_seed(1)
    cached = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in cached.items()},
              repo / "snapshots" / ("0" * 40) / "model.safetensors")
    loaded = load_model("resnet18")
    assert torch.equal(loaded.module.conv1.weight.cpu(), cached["conv1.weight"])


# --- 6. the training log, the summary, the evaluate table, -n --------------------------------

# Lines a newcomer met in the log of `python train.py --config quick` (Lightning 2.6, wandb 0.31,
# torchmetrics 1.9), as they were printed: each read as if the run had gone wrong.
NOISE = [
    "`configure_optimizers` returned `None`, this fit will run with no optimizer",
    "Experiment logs directory /w/checkpoints/.quick-20261206-045746/ exists and is not empty. "
    "Previous log files in this directory will be deleted when the new ones are saved!",
    "Checkpoint directory /w/checkpoints/.quick-20261206-045746 exists and is not empty.",
    "Metric `SpearmanCorrcoef` will save all targets and predictions in the buffer. For large "
    "datasets, this may lead to large memory footprint.",
    "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
    "treespec.is_leaf()` instead.",
]


def test_the_training_log_leaves_out_what_reads_as_a_failure(tmp_path):
    import re

    from lightning.pytorch.loggers import WandbLogger

    from interpscore.train.cli import QUIET_WARNINGS, _no_anonymous_setting

    def quiet(text):  # as `warnings.filterwarnings(message=...)` matches
        return any(re.compile(m, re.I).match(text) for m in QUIET_WARNINGS)

    assert all(quiet(line) for line in NOISE)
    assert not quiet("The dataloader does not have many workers")  # others still show

    class Trainer:  # wandb 0.31 warns that Lightning's anonymous=None has no effect
        loggers = [WandbLogger(save_dir=str(tmp_path), offline=True)]

    _no_anonymous_setting(Trainer)
    assert "anonymous" not in Trainer.loggers[0]._wandb_init


def test_the_summary_counts_conditions_and_units_in_one_line(debug_run):
    from interpscore.evaluation.harness import format_summary

    _, _, metrics, _ = debug_run
    (line,) = [x for x in format_summary(metrics).splitlines() if "in-distribution" in x]
    assert line.startswith(f"in-distribution test: {metrics['n_units']} unit x difficulty "
                           f"conditions of {metrics['grouped']['n_units']} units (")


def test_the_evaluate_table_aligns_long_names_and_shows_undefined_as_a_dash():
    from interpscore.evaluation.report import predictor_table

    def row(spearman, ci=(0.1, 0.6)):
        return {"spearman": spearman, "spearman_ci": list(ci), "within_group_spearman": 0.0,
                "mae": 0.109, "fraction_of_ceiling": spearman / 0.75}

    nan = float("nan")
    table = predictor_table({"trained": row(0.481), "constant": row(nan, (nan, nan)),
                             "act_spatial_contrast": row(0.025, (-0.33, 0.377))}).splitlines()
    header, trained, constant, long_name, note = table
    assert [len(line) for line in (header, trained, constant, long_name)] == [len(header)] * 4
    assert trained.endswith("0.481   [0.100, 0.600]   0.000   0.109       0.64")
    assert long_name.startswith("act_spatial_contrast     0.025  [-0.330, 0.377]")
    assert "nan" not in constant and constant.split()[1:3] == ["-", "-"]
    assert note.startswith("'-' = undefined: constant predicts one value for every unit")


def test_n_without_select_is_refused_before_a_study_is_built(lite0_store, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "build", "--stimuli", str(lite0_store), "-n", "50", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: -n 50: picks units only with --select" in err and not out.exists()


def test_unreadable_images_are_one_line_in_every_command(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(pool / f"{i}.png")
    for i in range(6):
        (pool / f"corrupt{i}.png").write_bytes(b"\x89PNG cut short")
    args = ["stimuli", "--model", "test_resnet@random", "--units", "2", "--n-refs", "2",
            "--n-batches", "2", "--images", str(pool), "--out", str(tmp_path / "store")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "unreadable" in line] == [
        f"skipped 6 unreadable image(s) of the pool, e.g. {pool / 'corrupt0.png'}: not a "
        f"readable image (cannot identify image file '{pool / 'corrupt0.png'}')"]
