"""What a new user meets in the first hour (issue 31): the short `train --help`, a study too
small to evaluate, the messages of `score`, `evaluate` and `study build`, the report's verdict."""

from __future__ import annotations

import subprocess
import sys

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
